"""Retry: the arithmetic, validation, and retries in a run (timings in virtual time)."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import anyio
import attrs
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, GraphError, Retry, StepStatus


def raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


# -- the policy object ------------------------------------------------------------------


def test_defaults() -> None:
    r = Retry()
    assert (r.max_attempts, r.wait, r.backoff, r.max_wait, r.jitter, r.retry_on) == (
        1,
        0.0,
        2.0,
        60.0,
        0.0,
        Exception,
    )


def test_is_frozen_and_comparable() -> None:
    r = Retry(max_attempts=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.max_attempts = 4  # type: ignore[misc]
    assert r == Retry(max_attempts=3)
    assert hash(r) == hash(Retry(max_attempts=3))


def test_delay_is_exponential_and_capped() -> None:
    r = Retry(max_attempts=10, wait=0.5, backoff=2.0, max_wait=3.0)
    assert [r.delay(k, jitter_draw=0.0) for k in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_delay_adds_the_jitter_draw_after_the_cap() -> None:
    r = Retry(max_attempts=10, wait=1.0, backoff=3.0, max_wait=5.0, jitter=0.5)
    assert r.delay(1, jitter_draw=0.5) == 1.25
    assert r.delay(3, jitter_draw=0.5) == 5.25  # min(5, 9) + 0.25


def test_backoff_one_keeps_the_wait_constant() -> None:
    r = Retry(max_attempts=5, wait=2.0, backoff=1.0)
    assert [r.delay(k, jitter_draw=0.0) for k in range(1, 5)] == [2.0, 2.0, 2.0, 2.0]


def test_delay_for_is_reproducible_and_within_bounds() -> None:
    r = Retry(max_attempts=10, wait=1.0, backoff=2.0, max_wait=60.0, jitter=0.5)
    seen = set()
    for seed in range(20):
        for step in ("a", "b"):
            for item in (None, 0, 1):
                for attempt in (1, 2, 3):
                    d = r.delay_for(attempt, seed=seed, step=step, item=item)
                    assert d == r.delay_for(attempt, seed=seed, step=step, item=item)
                    base = 2.0 ** (attempt - 1)
                    assert base <= d < base + 0.5
                    seen.add(d - base)
    assert len(seen) > 300  # draws differ across seed, step, item and attempt


def test_delay_for_without_jitter_is_the_plain_delay() -> None:
    r = Retry(max_attempts=3, wait=0.25)
    assert r.delay_for(2, seed=1, step="s", item=None) == 0.5


def test_should_retry() -> None:
    r = Retry(max_attempts=3, retry_on=(ConnectionError, TimeoutError))
    assert r.should_retry(ConnectionError(), 1)
    assert r.should_retry(TimeoutError(), 2)
    assert not r.should_retry(ConnectionError(), 3)
    assert not r.should_retry(ValueError(), 1)
    assert not Retry().should_retry(ValueError(), 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "Retry(max_attempts=0) must be at least 1 (1 means a single attempt, no retry)"),
        ({"max_attempts": -1}, "Retry(max_attempts=-1) must be at least 1 (1 means a single attempt, no retry)"),
        ({"wait": -1}, "Retry(wait=...) must be a finite number >= 0 (got -1)"),
        ({"max_wait": -2}, "Retry(max_wait=...) must be a finite number >= 0 (got -2)"),
        ({"jitter": math.nan}, "Retry(jitter=...) must be a finite number >= 0 (got nan)"),
        ({"wait": math.inf}, "Retry(wait=...) must be a finite number >= 0 (got inf)"),
        ({"backoff": 0.5}, "Retry(backoff=0.5) must be >= 1 (1 keeps the wait constant)"),
    ],
)
def test_bad_numbers_are_graph_errors(kwargs: dict[str, Any], message: str) -> None:
    with raises(GraphError, message):
        Retry(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 1.5}, "Retry(max_attempts=...) must be an int (got 1.5 that is a float)"),
        ({"max_attempts": True}, "Retry(max_attempts=...) must be an int (got True that is a bool)"),
        ({"wait": "1"}, "Retry(wait=...) must be a number (got '1' that is a str)"),
        (
            {"retry_on": int},
            "Retry(retry_on=...) takes an Exception subclass or a tuple of them (got <class 'int'>); "
            "for example retry_on=(TimeoutError, ConnectionError)",
        ),
        (
            {"retry_on": (ValueError, KeyboardInterrupt)},
            "Retry(retry_on=...) takes an Exception subclass or a tuple of them (got "
            "(<class 'ValueError'>, <class 'KeyboardInterrupt'>)); "
            "for example retry_on=(TimeoutError, ConnectionError)",
        ),
    ],
)
def test_bad_types_are_type_errors(kwargs: dict[str, Any], message: str) -> None:
    with raises(TypeError, message):
        Retry(**kwargs)


# -- retries in a run -----------------------------------------------------------------------


def _flaky_flow(fail_times: int, retry: Retry, error: type[Exception] = ConnectionError) -> tuple[Flow, list[float]]:
    starts: list[float] = []
    flow = Flow("f")

    @flow.step(retry=retry)
    async def flaky() -> str:
        starts.append(trio.current_time())
        assert trioflow.current_step().attempt == len(starts)
        await trio.lowlevel.checkpoint()
        if len(starts) <= fail_times:
            raise error(f"attempt {len(starts)}")
        return "ok"

    return flow, starts


@pytest.mark.trio
async def test_attempts_and_backoff_timings_are_exact(autojump_clock: trio.testing.MockClock) -> None:
    flow, starts = _flaky_flow(4, Retry(max_attempts=6, wait=0.5, backoff=2.0, max_wait=3.0))
    events: list[Any] = []
    result = await flow.run(on_event=events.append)
    assert result["flaky"] == "ok"
    assert starts == [0.0, 0.5, 1.5, 3.5, 6.5]  # waits 0.5, 1, 2, 3 (capped)
    step = result.steps["flaky"]
    assert step.attempts == 5
    assert (step.started_at, step.finished_at, step.duration) == (0.0, 6.5, 6.5)
    retrying = [ev for ev in events if isinstance(ev, trioflow.StepRetrying)]
    assert [(ev.attempt, ev.time, ev.wait) for ev in retrying] == [
        (1, 0.0, 0.5),
        (2, 0.5, 1.0),
        (3, 1.5, 2.0),
        (4, 3.5, 3.0),
    ]
    assert [str(ev.error) for ev in retrying] == ["attempt 1", "attempt 2", "attempt 3", "attempt 4"]
    started = [ev for ev in events if isinstance(ev, trioflow.StepStarted)]
    assert [(ev.attempt, ev.time) for ev in started] == list(enumerate(starts, 1))


@pytest.mark.trio
async def test_exhausted_attempts_fail_with_the_last_error(autojump_clock: trio.testing.MockClock) -> None:
    flow, starts = _flaky_flow(100, Retry(max_attempts=3, wait=1.0, backoff=1.0))
    events: list[Any] = []
    with pytest.raises(FlowError) as info:
        await flow.run(on_event=events.append)
    assert starts == [0.0, 1.0, 2.0]
    (error,) = info.value.exceptions
    assert str(error) == "attempt 3"
    assert error.__notes__ == ["trioflow: step 'flaky' failed on attempt 3"]
    step = info.value.result.steps["flaky"]
    assert (step.status, step.attempts, step.error) == (StepStatus.FAILED, 3, error)
    failed = [ev for ev in events if isinstance(ev, trioflow.StepFailed)]
    assert failed == [trioflow.StepFailed("flaky", 3, 2.0, error)]


@pytest.mark.trio
async def test_no_retry_by_default(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")
    calls = []

    @flow.step
    async def once() -> None:
        calls.append(1)
        raise ConnectionError

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert calls == [1]
    assert info.value.result.steps["once"].attempts == 1


@pytest.mark.trio
async def test_retry_on_filters(autojump_clock: trio.testing.MockClock) -> None:
    flow, starts = _flaky_flow(5, Retry(max_attempts=5, retry_on=ConnectionError), error=ValueError)
    with pytest.raises(FlowError) as info:
        await flow.run()
    assert len(starts) == 1
    assert info.value.result.steps["flaky"].attempts == 1

    flow, starts = _flaky_flow(1, Retry(max_attempts=5, retry_on=(KeyError, ConnectionError)))
    assert (await flow.run())["flaky"] == "ok"
    assert len(starts) == 2


@pytest.mark.trio
async def test_retry_on_applies_to_each_error_not_the_first(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")
    errors = [ConnectionError("a"), ValueError("b"), ConnectionError("c")]
    calls = []

    @flow.step(retry=Retry(max_attempts=5, retry_on=ConnectionError))
    async def step() -> None:
        calls.append(1)
        raise errors[len(calls) - 1]

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert len(calls) == 2
    assert str(info.value.exceptions[0]) == "b"


@pytest.mark.trio
@pytest.mark.parametrize("seed", [0, 1, 12345])
async def test_jitter_is_reproducible_with_a_seed(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=4, wait=1.0, backoff=2.0, jitter=0.5)
    timelines = []
    waits = []
    for _ in range(2):
        flow, starts = _flaky_flow(3, retry)
        events: list[Any] = []
        t0 = trio.current_time()
        await flow.run(seed=seed, on_event=events.append)
        timelines.append([s - t0 for s in starts])
        waits.append([ev.wait for ev in events if isinstance(ev, trioflow.StepRetrying)])
    assert timelines[0] == pytest.approx(timelines[1], abs=1e-9)
    assert waits[0] == waits[1]
    expected = [retry.delay_for(k, seed=seed, step="flaky", item=None) for k in (1, 2, 3)]
    assert waits[0] == expected
    for k, w in enumerate(waits[0], 1):
        base = 2.0 ** (k - 1)
        assert base <= w < base + 0.5
    gaps = [b - a for a, b in zip(timelines[0], timelines[0][1:], strict=False)]
    assert gaps == pytest.approx(expected, abs=1e-9)


@pytest.mark.trio
async def test_jitter_depends_on_the_seed(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=2, wait=1.0, jitter=1.0)
    waits = set()
    for seed in range(5):
        flow, _ = _flaky_flow(1, retry)
        events: list[Any] = []
        await flow.run(seed=seed, on_event=events.append)
        waits.update(ev.wait for ev in events if isinstance(ev, trioflow.StepRetrying))
    assert len(waits) == 5


@pytest.mark.trio
async def test_cancellation_during_backoff_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    flow, starts = _flaky_flow(100, Retry(max_attempts=10, wait=10.0))
    with trio.move_on_after(5) as scope:
        await flow.run()
    assert scope.cancelled_caught
    assert starts == [0.0]
    assert trio.current_time() == 5


@pytest.mark.trio
async def test_cancellation_during_an_attempt_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    calls = []
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=10))
    async def slow() -> None:
        calls.append(trio.current_time())
        await trio.sleep(100)

    with trio.move_on_after(5) as scope:
        await flow.run()
    assert scope.cancelled_caught
    assert calls == [0.0]


class Stop(BaseException):
    pass


@pytest.mark.trio
async def test_base_exception_is_never_retried() -> None:
    calls = []
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=10))
    async def stop() -> None:
        calls.append(1)
        raise Stop

    caught = []
    try:
        await flow.run()
    except* Stop as group:
        caught.append(group)
    assert len(caught) == 1
    assert calls == [1]


# -- per-step timeout --------------------------------------------------------------------------


@pytest.mark.trio
async def test_timeout_fails_the_step_with_timeout_error(autojump_clock: trio.testing.MockClock) -> None:
    cleanup: list[float] = []
    flow = Flow("f")

    @flow.step(timeout=2)
    async def slow() -> None:
        try:
            await trio.sleep(5)
        finally:
            cleanup.append(trio.current_time())

    with pytest.raises(FlowError) as info:
        await flow.run()
    (error,) = info.value.exceptions
    assert type(error) is TimeoutError
    assert str(error) == "step 'slow' timed out after 2s (attempt 1)"
    assert error.__notes__ == ["trioflow: step 'slow' failed on attempt 1"]
    assert cleanup == [2.0]
    step = info.value.result.steps["slow"]
    assert (step.status, step.attempts, step.finished_at) == (StepStatus.FAILED, 1, 2.0)


@pytest.mark.trio
async def test_timeout_applies_to_each_attempt_and_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    flow = Flow("f")

    @flow.step(timeout=2, retry=Retry(max_attempts=3, wait=1.0, backoff=1.0, retry_on=TimeoutError))
    async def slow() -> str:
        starts.append(trio.current_time())
        await trio.sleep(5 if len(starts) < 3 else 1.5)  # the third attempt fits in its 2 s
        return "done"

    result = await flow.run()
    assert result["slow"] == "done"
    assert starts == [0.0, 3.0, 6.0]
    assert result.steps["slow"].attempts == 3
    assert result.duration == 7.5


@pytest.mark.trio
async def test_timeout_is_not_retried_when_retry_on_does_not_match(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("f")
    calls = []

    @flow.step(timeout=1, retry=Retry(max_attempts=3, retry_on=ConnectionError))
    async def slow() -> None:
        calls.append(1)
        await trio.sleep(5)

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert calls == [1]
    assert type(info.value.exceptions[0]) is TimeoutError
    assert trio.current_time() == 1


@pytest.mark.trio
async def test_timeout_of_a_fast_step_changes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step(timeout=2)
    async def fast() -> int:
        await trio.sleep(1.5)
        return 1

    result = await flow.run()
    assert result["fast"] == 1
    assert result.duration == 1.5


# -- local counters and both backends --------------------------------------------------------


@pytest.mark.trio
async def test_attempt_counter_is_local_to_each_map_item(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[int, int]] = []
    flow = Flow("f")

    @flow.step(map_over="xs", retry=Retry(max_attempts=3, wait=1.0))
    async def work(xs: int) -> int:
        attempt = trioflow.current_step().attempt
        seen.append((xs, attempt))
        if attempt <= xs:
            raise ConnectionError(xs)
        return xs

    result = await flow.run({"xs": [0, 2, 1, 0]})
    assert result["work"] == [0, 2, 1, 0]
    assert result.steps["work"].attempts == 3
    assert sorted(seen) == [(0, 1), (0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]


@pytest.mark.trio
async def test_a_flow_is_retried_independently_in_each_run(autojump_clock: trio.testing.MockClock) -> None:
    calls = {"n": 0}
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=2))
    async def flaky() -> int:
        calls["n"] += 1
        if trioflow.current_step().attempt == 1:
            raise ConnectionError
        return 1

    for _ in range(3):
        assert (await flow.run()).steps["flaky"].attempts == 2
    assert calls["n"] == 6


@pytest.mark.anyio
async def test_retries_on_both_backends(anyio_backend: Any) -> None:
    calls = []
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=4, retry_on=ConnectionError))
    async def flaky() -> str:
        calls.append(trioflow.current_step().attempt)
        await anyio.lowlevel.checkpoint()
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    result = await flow.run()
    assert result["flaky"] == "ok"
    assert calls == [1, 2, 3]
    assert result.steps["flaky"].attempts == 3


def test_backoff_sleep_on_asyncio_is_cancellable() -> None:
    calls = []
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=5, wait=3600.0))
    async def flaky() -> None:
        calls.append(1)
        raise ConnectionError

    async def main() -> bool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(flow.run))
                while not calls:
                    await anyio.lowlevel.checkpoint()
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
        return scope.cancelled_caught

    assert anyio.run(main, backend="asyncio") is True
    assert calls == [1]
