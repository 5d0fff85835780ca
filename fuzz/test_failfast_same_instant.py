"""fail_fast when failures, retries and successes share a virtual instant (issue 9 item 1).

The flows strategy keeps failures apart from every other event on purpose;
this property brings them together: steps (and items of a ``trioflow.map``)
that succeed or fail at the same few instants, some with retry policies whose
waits are zero or land on those instants again. Under every schedule the
run's statuses, attempts and exceptions must be those of the FIFO schedule.

Every attempt lasts a while (no step starts and ends at the instant of a
failure): whether a step that *becomes ready* at the instant the run stops
begins an attempt before the cancellation lands is a race of its own, which
this property leaves out.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

import trioflow
from trioflow.testing import run_deterministic
from trioflow.testing.strategies import schedules

_STEP = st.tuples(
    st.sampled_from(["ok", "fail", "flaky"]),  # flaky: fails its first attempt, then succeeds
    st.sampled_from([1.0, 2.0]),  # duration of each attempt
    st.integers(1, 3),  # max_attempts
    st.sampled_from([0.0, 1.0]),  # retry wait
    st.booleans(),  # an extra checkpoint before it ends (a later batch, same instant)
)


def _flow(spec: list[tuple[str, float, int, float, bool]]) -> trioflow.Flow:
    flow = trioflow.Flow("same_instant")
    for i, (kind, duration, attempts, wait, extra) in enumerate(spec):

        async def step(kind: str = kind, duration: float = duration, extra: bool = extra, i: int = i) -> int:
            await trio.sleep(duration)
            if extra:
                await trio.lowlevel.checkpoint()
            attempt = trioflow.current_step().attempt
            if kind == "fail" or (kind == "flaky" and attempt == 1):
                raise ValueError(f"s{i} attempt {attempt}")
            return i

        step.__name__ = f"s{i}"
        flow.add(step, retry=trioflow.Retry(max_attempts=attempts, wait=wait, backoff=1.0))
    return flow


def _outcome(err: BaseException | None, result: Any) -> tuple[Any, ...]:
    if err is None:
        return ("ok", tuple((n, s.attempts) for n, s in result.steps.items()))
    assert isinstance(err, trioflow.FlowError)
    steps = tuple((n, s.status.value, s.attempts) for n, s in err.result.steps.items())
    return steps, tuple(str(e) for e in err.exceptions)


@given(st.lists(_STEP, min_size=2, max_size=5), schedules())
def test_flow_failfast_outcome_is_the_same_under_every_schedule(
    spec: list[tuple[str, float, int, float, bool]], schedule: list[int]
) -> None:
    flow = _flow(spec)

    async def main() -> tuple[Any, ...]:
        try:
            result = await flow.run()
        except trioflow.FlowError as exc:
            return _outcome(exc, None)
        return _outcome(None, result)

    fifo = run_deterministic(main, schedule=[]).value
    assert run_deterministic(main, schedule=schedule).value == fifo


@given(st.lists(_STEP, min_size=2, max_size=5), st.integers(1, 4), schedules())
def test_map_failfast_outcome_is_the_same_under_every_schedule(
    spec: list[tuple[str, float, int, float, bool]], workers: int, schedule: list[int]
) -> None:
    async def item(i: int) -> int:
        kind, duration, _, _, extra = spec[i]
        await trio.sleep(duration)
        if extra:
            await trio.lowlevel.checkpoint()
        attempt = trioflow.current_step().attempt
        if kind == "fail" or (kind == "flaky" and attempt == 1):
            raise ValueError(f"item {i} attempt {attempt}")
        return i

    max_attempts = max(s[2] for s in spec)
    wait = spec[0][3]

    async def main() -> tuple[Any, ...]:
        try:
            values = await trioflow.map(
                item,
                range(len(spec)),
                max_concurrent=workers,
                retry=trioflow.Retry(max_attempts=max_attempts, wait=wait, backoff=1.0),
            )
        except trioflow.FlowError as exc:
            return _outcome(exc, None)
        return ("ok", tuple(values))

    fifo = run_deterministic(main, schedule=[]).value
    assert run_deterministic(main, schedule=schedule).value == fifo
