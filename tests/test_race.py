"""``trioflow.race``: hedged calls (issue 13 item 5). Exact timings on trio in
virtual time; results and errors on trio and asyncio."""

from __future__ import annotations

import functools
import re
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import FlowError, GraphError, StepStatus


class Log:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, str] = {}

    async def call(self, name: str, seconds: float, fail: bool = False) -> str:
        self.started[name] = anyio.current_time()
        try:
            await anyio.sleep(seconds)
        except BaseException:
            self.ended[name] = "cancelled"
            raise
        if fail:
            self.ended[name] = "failed"
            raise ConnectionError(name)
        self.ended[name] = "ok"
        return name

    def fn(self, name: str, seconds: float, fail: bool = False) -> Any:
        return functools.partial(self.call, name, seconds, fail)


@pytest.mark.trio
async def test_the_first_success_wins_and_the_others_are_cancelled_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    assert await trioflow.race(log.fn("a", 3), log.fn("b", 1), log.fn("c", 2)) == "b"
    assert trio.current_time() == 1.0
    assert log.started == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert log.ended == {"a": "cancelled", "b": "ok", "c": "cancelled"}


@pytest.mark.trio
async def test_a_failure_does_not_win(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    assert await trioflow.race(log.fn("a", 0.5, fail=True), log.fn("b", 2)) == "b"
    assert trio.current_time() == 2.0


@pytest.mark.trio
async def test_stagger_starts_the_next_call_after_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    assert await trioflow.race(log.fn("a", 10), log.fn("b", 10), log.fn("c", 1), stagger=2.0) == "c"
    assert log.started == {"a": 0.0, "b": 2.0, "c": 4.0}
    assert trio.current_time() == 5.0


@pytest.mark.trio
async def test_stagger_starts_the_next_call_at_once_when_the_previous_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    result = await trioflow.race(
        log.fn("a", 0.5, fail=True), log.fn("b", 10), log.fn("c", 0.25, fail=True), log.fn("d", 1),
        stagger=2.0,
    )
    # a fails at 0.5: b starts then; b is slow: c at 2.5; c fails at 2.75: d at once
    assert log.started == {"a": 0.0, "b": 0.5, "c": 2.5, "d": 2.75}
    assert result == "d"
    assert trio.current_time() == 3.75


@pytest.mark.trio
async def test_a_quick_first_call_starts_no_hedge(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    assert await trioflow.race(log.fn("a", 1), log.fn("b", 1), stagger=2.0) == "a"
    assert log.started == {"a": 0.0}


@pytest.mark.trio
async def test_same_instant_successes_are_settled_by_argument_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for _ in range(20):
        log = Log()
        assert await trioflow.race(log.fn("a", 1), log.fn("b", 1), log.fn("c", 1)) == "a"


@pytest.mark.anyio
async def test_all_failing_is_a_flow_error_with_every_failure(anyio_backend: Any) -> None:
    log = Log()
    with pytest.raises(FlowError) as info:
        await trioflow.race(log.fn("a", 0.002, fail=True), log.fn("b", 0.001, fail=True), stagger=0.0)
    error = info.value
    assert str(error) == "trioflow.race: all 2 calls failed (2 sub-exceptions)"
    assert [str(e) for e in error.exceptions] == ["a", "b"]
    assert error.exceptions[0].__notes__ == ["trioflow: race call 0 ('call[0]') failed"]
    steps = error.result.steps
    assert [s.status for s in steps.values()] == [StepStatus.FAILED, StepStatus.FAILED]


@pytest.mark.anyio
async def test_race_on_both_backends(anyio_backend: Any) -> None:
    log = Log()
    assert await trioflow.race(log.fn("a", 0.2), log.fn("b", 0.0)) == "b"
    assert log.ended["a"] == "cancelled"


@pytest.mark.anyio
async def test_outside_cancellation_cancels_every_call(anyio_backend: Any) -> None:
    log = Log()
    with anyio.move_on_after(0.01) as scope:
        await trioflow.race(log.fn("a", 10), log.fn("b", 10))
    assert scope.cancelled_caught
    assert log.ended == {"a": "cancelled", "b": "cancelled"}


@pytest.mark.anyio
async def test_current_step_and_usage(anyio_backend: Any) -> None:
    seen = []

    async def ask() -> str:
        step = trioflow.current_step()
        seen.append((step.name, step.item))
        return "x"

    assert await trioflow.race(ask) == "x"
    assert seen == [("ask", 0)]


@pytest.mark.anyio
async def test_bad_arguments(anyio_backend: Any) -> None:
    async def f() -> None: ...

    with pytest.raises(GraphError, match=re.escape("trioflow.race() needs at least one function to call")):
        await trioflow.race()
    with pytest.raises(GraphError, match=re.escape("trioflow.race(stagger=-1) must be >= 0 seconds, or None")):
        await trioflow.race(f, stagger=-1)
    with pytest.raises(TypeError, match=re.escape("trioflow.race(stagger=...) must be a number of seconds")):
        await trioflow.race(f, stagger="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got a lambda"):
        await trioflow.race(lambda: f())
