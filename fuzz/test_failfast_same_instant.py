"""fail_fast when failures, retries and successes share a virtual instant (issue 9 item 1).

The flows strategy keeps failures apart from every other event on purpose;
these properties bring them together: steps (and items of a ``trioflow.map``)
that succeed or fail at the same few instants, some with retry policies whose
waits are zero or land on those instants again, and (the last property)
steps whose dependencies end at the instant of a failure, so that they become
due just as the run stops, with steps that never await and map steps among
them. Under every schedule the run's statuses, attempts and exceptions must
be those of the FIFO schedule.
"""

from __future__ import annotations

import inspect
from typing import Any

import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

import trioflow
from trioflow.testing import check_deterministic, run_deterministic
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
    # (no extra checkpoint at the instant in a flow: whether fail-fast's cancellation
    # lands before a step gets past it depends on the schedule, under plain trio as
    # under the harness, which explores both; see tests/test_quiescent.py)
    flow = _flow([(kind, duration, attempts, wait, False) for kind, duration, attempts, wait, _ in spec])

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
    # (no extra checkpoint at the instant, as in a flow: whether fail-fast's cancellation
    # lands before an item gets past it depends on the schedule, under plain trio as under
    # the harness, which explores both since the third corpus; tests/test_testing_corpus3.py)
    async def item(i: int) -> int:
        kind, duration, _, _, _ = spec[i]
        await trio.sleep(duration)
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


# -- steps that become due at the instant of a failure -----------------------------------

_NODE = st.tuples(
    # ok: sleeps, then returns; fail: sleeps, then raises; quick: never awaits;
    # map: a map step over its first dependency (a plain quick step without one)
    st.sampled_from(["ok", "fail", "quick", "map"]),
    st.sampled_from([1.0, 1.0, 2.0]),  # how long ok and fail steps (and slow map items) sleep
    st.lists(st.integers(0, 5), max_size=2),  # its dependencies: step j % i, for step i
    st.booleans(),  # ok/fail: an extra checkpoint before it ends; map: its items sleep too
)


def _dependent_flow(spec: list[tuple[str, float, list[int], bool]]) -> trioflow.Flow:
    flow = trioflow.Flow("due_at_the_failure")
    for i, (kind, duration, upstream, extra) in enumerate(spec):
        deps = [f"s{j}" for j in sorted({j % i for j in upstream})] if i else []
        mapped = kind == "map" and bool(deps)

        async def step(
            kind: str = kind, duration: float = duration, extra: bool = extra, i: int = i, **upstream: Any
        ) -> Any:
            if kind == "map" and extra:
                await trio.sleep(duration)
            elif kind in ("ok", "fail"):
                await trio.sleep(duration)
                if extra:
                    await trio.lowlevel.checkpoint()
                if kind == "fail":
                    raise ValueError(f"s{i}")
            return [i, i + 1]  # a list: a map step downstream maps over it

        step.__name__ = step.__qualname__ = f"s{i}"
        step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
        )
        flow.add(step, map_over=deps[0] if mapped else None)
    return flow


@given(st.lists(_NODE, min_size=2, max_size=7), st.sampled_from([None, None, 1, 2, 3]))
def test_flow_failfast_with_steps_due_at_the_failure_passes_check_deterministic(
    spec: list[tuple[str, float, list[int], bool]], max_concurrent: int | None
) -> None:
    # (an extra checkpoint only where it blocks, in map items: see the property above)
    flow = _dependent_flow([(kind, d, up, extra and kind == "map") for kind, d, up, extra in spec])

    async def main() -> tuple[Any, ...]:
        try:
            result = await flow.run(max_concurrent=max_concurrent)
        except trioflow.FlowError as exc:
            items = tuple(
                tuple((item.status.value, item.attempts) for item in s.items) for s in exc.result.steps.values()
            )
            return _outcome(exc, None), items
        return _outcome(None, result), ()

    # a dozen schedules each, from the harness's search strategies (random walk,
    # PCT, bounded): they reach the orders of one instant's events that matter
    check_deterministic(main, runs=12)
