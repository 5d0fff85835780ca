"""``trioflow.current_step()`` and usage accounting."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, Retry, StepContext

OUTSIDE = (
    "trioflow.current_step() was called outside a step; call it from inside a function "
    "that a flow, trioflow.map or trioflow.gather is running"
)


def test_current_step_outside_a_step_raises() -> None:
    with pytest.raises(RuntimeError, match="^" + re.escape(OUTSIDE) + "$"):
        trioflow.current_step()


@pytest.mark.anyio
async def test_current_step_outside_a_step_in_async_code(anyio_backend: Any) -> None:
    with pytest.raises(RuntimeError, match="^" + re.escape(OUTSIDE) + "$"):
        trioflow.current_step()
    flow = Flow("f")

    @flow.step
    async def a() -> str:
        return trioflow.current_step().name

    assert (await flow.run())["a"] == "a"
    with pytest.raises(RuntimeError):  # nothing leaks out of the run
        trioflow.current_step()


@pytest.mark.anyio
async def test_a_run_inside_a_step_gives_the_step_back_its_context(anyio_backend: Any) -> None:
    # the inner run's first worker is the outer step's own task: after the inner
    # steps (run inline, back to back), current_step() is the outer step again
    inner = Flow("inner")

    @inner.step
    async def first() -> str:
        return trioflow.current_step().name

    @inner.step
    async def second(first: str) -> str:
        return first + "," + trioflow.current_step().name

    outer = Flow("outer")

    @outer.step
    async def host() -> tuple[str, str]:
        got = (await inner.run())["second"]
        return got, trioflow.current_step().name

    assert (await outer.run())["host"] == ("first,second", "host")
    with pytest.raises(RuntimeError, match="^" + re.escape(OUTSIDE) + "$"):
        trioflow.current_step()


@pytest.mark.anyio
async def test_a_run_cancelled_mid_step_leaves_no_step_behind(anyio_backend: Any) -> None:
    # the run's own task runs its first step: cancelled there, it must not be
    # left looking like that step to the code that catches the cancellation
    flow = Flow("f")

    @flow.step
    async def slow() -> None:
        await anyio.sleep(10)

    with anyio.move_on_after(0.01) as scope:
        await flow.run()
    assert scope.cancelled_caught
    with pytest.raises(RuntimeError, match="^" + re.escape(OUTSIDE) + "$"):
        trioflow.current_step()

    # and a run inside a step, cancelled there, gives the step back its context
    outer = Flow("outer")

    @outer.step
    async def host() -> str:
        with anyio.move_on_after(0.01):
            await flow.run()
        return trioflow.current_step().name

    assert (await outer.run())["host"] == "host"


@pytest.mark.anyio
async def test_current_step_inside_steps(anyio_backend: Any) -> None:
    seen: list[tuple[str, int, int | None, str | None]] = []
    flow = Flow("f")

    def record() -> StepContext:
        ctx = trioflow.current_step()
        seen.append((ctx.name, ctx.attempt, ctx.item, ctx.run_id))
        return ctx

    @flow.step
    async def plain() -> list[int]:
        assert isinstance(record(), StepContext)
        await anyio.lowlevel.checkpoint()
        record()  # still itself after a checkpoint
        return [10, 20]

    @flow.step(name="renamed", retry=Retry(max_attempts=2))
    async def flaky() -> None:
        if record().attempt == 1:
            raise ConnectionError

    @flow.step(map_over="plain")
    async def mapped(plain: int) -> None:
        await anyio.lowlevel.checkpoint()
        record()

    await flow.run(run_id="run-7")
    assert sorted(seen, key=str) == sorted(
        [
            ("plain", 1, None, "run-7"),
            ("plain", 1, None, "run-7"),
            ("renamed", 1, None, "run-7"),
            ("renamed", 2, None, "run-7"),
            ("mapped", 1, 0, "run-7"),
            ("mapped", 1, 1, "run-7"),
        ],
        key=str,
    )
    seen.clear()
    await flow.run()
    assert {s[3] for s in seen} == {None}


@pytest.mark.anyio
async def test_usage_sums_per_step_and_per_run(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> list[int]:
        step = trioflow.current_step()
        step.add_usage(tokens=10, calls=1)
        await anyio.lowlevel.checkpoint()
        step.add_usage(tokens=5)
        return [1, 2, 3]

    @flow.step(map_over="a")
    async def b(a: int) -> None:
        await anyio.lowlevel.checkpoint()
        trioflow.current_step().add_usage(tokens=a, calls=1)

    @flow.step(retry=Retry(max_attempts=3))
    async def c() -> None:
        step = trioflow.current_step()
        step.add_usage(calls=1, dollars=0.5)
        if step.attempt < 3:
            raise ConnectionError

    @flow.step
    async def d() -> None:
        pass

    result = await flow.run()
    assert dict(result.steps["a"].usage) == {"tokens": 15, "calls": 1}
    assert dict(result.steps["b"].usage) == {"tokens": 6, "calls": 3}
    assert dict(result.steps["c"].usage) == {"calls": 3, "dollars": 1.5}  # every attempt counts
    assert dict(result.steps["d"].usage) == {}
    assert dict(result.usage) == {"tokens": 21, "calls": 7, "dollars": 1.5}


@pytest.mark.trio
async def test_usage_of_a_failed_step_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        trioflow.current_step().add_usage(tokens=3)
        raise ValueError

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert dict(info.value.result.steps["a"].usage) == {"tokens": 3}
    assert dict(info.value.result.usage) == {"tokens": 3}


@pytest.mark.trio
async def test_concurrent_runs_have_separate_usage(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step
    async def a(n: int) -> None:
        for _ in range(n):
            trioflow.current_step().add_usage(calls=1)
            await trio.sleep(1)

    totals: dict[int, float] = {}

    async def one(n: int) -> None:
        totals[n] = (await flow.run({"n": n})).usage["calls"]

    async with trio.open_nursery() as nursery:
        for n in (1, 2, 3):
            nursery.start_soon(one, n)
    assert totals == {1: 1, 2: 2, 3: 3}


@pytest.mark.parametrize(
    ("counts", "exc", "message"),
    [
        ({"tokens": "3"}, TypeError, "add_usage(tokens=...) takes a number (got '3')"),
        ({"tokens": True}, TypeError, "add_usage(tokens=...) takes a number (got True)"),
        ({"tokens": -1}, ValueError, "add_usage(tokens=-1): counts must be finite and >= 0"),
        ({"tokens": float("nan")}, ValueError, "add_usage(tokens=nan): counts must be finite and >= 0"),
    ],
)
def test_add_usage_validation(counts: dict[str, Any], exc: type[Exception], message: str) -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        trioflow.current_step().add_usage(**counts)

    with pytest.raises(FlowError) as info:
        trio.run(flow.run)
    (error,) = info.value.exceptions
    assert type(error) is exc
    assert str(error) == message
