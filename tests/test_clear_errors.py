"""Bad input gets a clear error before any work (issue 9 item 19), and trio-only code under
asyncio says what to use instead (issue 11 item 9)."""

from __future__ import annotations

import re
import threading
from typing import Any

import anyio
import pytest
import trio
from _backends import on_trio

import trioflow
from trioflow import FlowError, GraphError

pytestmark = pytest.mark.anyio


def raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def limited_flow(ran: list[str]) -> trioflow.Flow:
    flow = trioflow.Flow("f")

    @flow.step
    async def first(x: int) -> int:
        ran.append("first")
        return x

    @flow.step(limiter="llm")
    async def second(first: int) -> int:
        ran.append("second")
        return first

    return flow


async def test_issue_9_item_19_input_keys_must_be_strings() -> None:
    ran: list[str] = []
    with raises(
        TypeError,
        "flow.run(inputs=...) keys must be input names (strings), got 1 that is a int; an input "
        "is a step parameter that names no step",
    ):
        await limited_flow(ran).run({1: 2}, limiters={"llm": 1})  # type: ignore[dict-item]
    with raises(TypeError, "flow.run(inputs=...) takes a mapping of input names to values (got [('x', 1)])"):
        await limited_flow(ran).run([("x", 1)], limiters={"llm": 1})  # type: ignore[arg-type]
    assert ran == []


@pytest.mark.parametrize("limiters", [["llm"], "llm", ("llm", 2)])
async def test_issue_9_item_19_limiters_must_be_a_mapping(limiters: Any) -> None:
    ran: list[str] = []
    with raises(
        TypeError,
        "flow.run(limiters=...) takes a mapping of limiter names to sizes or CapacityLimiters, "
        f"for example limiters={{'llm': 2}} (got {limiters!r} that is a {type(limiters).__name__})",
    ):
        await limited_flow(ran).run({"x": 1}, limiters=limiters)
    assert ran == []


async def test_issue_9_item_19_a_limiter_name_no_step_uses_is_a_graph_error() -> None:
    ran: list[str] = []
    flow = limited_flow(ran)
    with raises(
        GraphError,
        "flow.run(limiters=...) has limiter 'lmm', but no step of flow 'f' uses it; did you mean 'llm'?",
    ):
        await flow.run({"x": 1}, limiters={"llm": 1, "lmm": 2})
    with raises(
        GraphError,
        "flow.run(limiters=...) has limiter 'http', but no step of flow 'f' uses it; the steps use 'llm'",
    ):
        await flow.run({"x": 1}, limiters={"llm": 1, "http": 2})
    assert ran == []


async def test_issue_9_item_19_a_limiter_whose_acquire_is_not_async_is_refused() -> None:
    ran: list[str] = []
    semaphore = threading.Semaphore(1)
    with raises(
        TypeError,
        f"flow.run(limiters={{'llm': ...}}) got {semaphore!r} (a Semaphore) whose acquire() is "
        f"not async; a limiter must be awaited without blocking the event loop: use "
        f"anyio.CapacityLimiter (or trio.CapacityLimiter under trio)",
    ):
        await limited_flow(ran).run({"x": 1}, limiters={"llm": semaphore})  # type: ignore[dict-item]
    assert ran == []


async def test_issue_9_item_19_a_capacity_limiter_of_zero_tokens_is_refused() -> None:
    ran: list[str] = []

    class ZeroLimiter:
        total_tokens = 0

        async def acquire(self) -> None:
            await anyio.sleep_forever()

        def release(self) -> None:
            raise AssertionError("never acquired")

    zero: Any = ZeroLimiter()
    with raises(
        GraphError,
        "flow.run(limiter=...) got a limiter with total_tokens=0, so no step could ever run; "
        "give it at least 1 token",
    ):
        await limited_flow(ran).run({"x": 1}, limiters={"llm": 1}, limiter=zero)
    with pytest.raises(GraphError, match=r"limiters=\{'llm': \.\.\.\}\) got a limiter with total_tokens=0"):
        await limited_flow(ran).run({"x": 1}, limiters={"llm": zero})
    # a CapacityLimiter(0), where the installed trio or anyio accepts one
    limiter = trio.CapacityLimiter(1) if on_trio() else anyio.CapacityLimiter(1)
    try:
        limiter.total_tokens = 0
    except ValueError:  # refused by this version already
        pass
    else:
        with pytest.raises(GraphError, match="total_tokens=0"):
            await limited_flow(ran).run({"x": 1}, limiters={"llm": limiter})
    assert ran == []


def test_issue_9_item_19_an_async_generator_function_is_not_a_step() -> None:
    async def items() -> Any:
        yield 1

    with raises(
        TypeError,
        "flow.step expects an async function, but 'items' is an async generator function (it "
        "yields); a step returns one value: collect the items into a list and return it, or make "
        "each item a map item with map_over=",
    ):
        trioflow.Flow("f").add(items)


def test_issue_9_item_19_an_async_callable_class_is_not_a_step() -> None:
    class Summarize:
        async def __call__(self, text: str) -> str:
            return text

    with raises(
        TypeError,
        "flow.step got the class Summarize, whose instances are async callables; pass an "
        "instance: Summarize()",
    ):
        trioflow.Flow("f").add(Summarize)
    flow = trioflow.Flow("f")
    flow.add(Summarize(), name="summarize")
    assert trio.run(flow.run, {"text": "t"})["summarize"] == "t"


def test_issue_9_item_19_retry_on_nothing_is_refused() -> None:
    with raises(
        GraphError,
        "Retry(retry_on=()) retries no exception at all; give the exception types to retry, for "
        "example retry_on=(TimeoutError, ConnectionError), or use max_attempts=1 for no retry",
    ):
        trioflow.Retry(max_attempts=3, retry_on=())


def test_issue_9_item_19_a_plan_description_must_be_a_string() -> None:
    async def tool(description: str) -> str:
        return description

    for bad in (5, ["a"], {"text": "a"}):
        with raises(GraphError, f"plan step 's': description must be a string (got {bad!r})"):
            trioflow.Flow.from_plan(
                {"steps": [{"step_id": "s", "tool": "t", "description": bad}]}, {"t": tool}
            )


# -- issue 11 item 9: trio-only primitives under asyncio ------------------------------


def test_issue_11_item_9_trio_sleep_in_a_step_under_asyncio_says_use_anyio() -> None:
    anyio.run(_trio_sleep_under_asyncio, backend="asyncio")


async def _trio_sleep_under_asyncio() -> None:
    flow = trioflow.Flow("f")

    @flow.step
    async def nap() -> None:
        await trio.sleep(1)

    with pytest.raises(FlowError) as info:
        await flow.run()
    error = info.value.exceptions[0]
    assert str(error) == (
        "step 'nap' called trio.sleep(), which works only under trio, but it runs on asyncio; use "
        "anyio's equivalent (anyio.sleep, anyio.CapacityLimiter, anyio.Event, "
        "anyio.create_task_group, ...), which works on both"
    )
    assert isinstance(error.__cause__, RuntimeError)

    async def item(x: int) -> int:
        limiter = trio.CapacityLimiter(1)
        async with limiter:
            return x

    with pytest.raises(FlowError) as info:
        await trioflow.map(item, [1])
    assert "called trio.CapacityLimiter.__aenter__(), which works only under trio" in str(info.value.exceptions[0])


def test_issue_11_item_9_a_trio_capacity_limiter_under_asyncio_says_use_anyio() -> None:
    anyio.run(_trio_limiter_under_asyncio, backend="asyncio")


async def _trio_limiter_under_asyncio() -> None:
    ran: list[str] = []
    with raises(
        TypeError,
        "flow.run(limiter=...) got a trio.CapacityLimiter, which works only under trio, but this "
        "run is on asyncio; use anyio.CapacityLimiter, which works on both",
    ):
        await limited_flow(ran).run({"x": 1}, limiters={"llm": 1}, limiter=trio.CapacityLimiter(2))
    assert ran == []
