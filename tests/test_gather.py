"""trioflow.gather (issue 3): the planner's call_tools_parallel, on trio and asyncio."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

import trioflow
from trioflow import FlowError, GraphError, StepStatus

pytestmark = pytest.mark.anyio


async def checkpoints(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


async def tool(name: str, ticks: int = 1) -> str:
    await checkpoints(ticks)
    return f"{name} done"


async def test_results_in_argument_order_whatever_the_completion_order() -> None:
    finished: list[str] = []

    async def job(name: str, ticks: int) -> str:
        await checkpoints(ticks)
        finished.append(name)
        return name

    result = await trioflow.gather(
        functools.partial(job, "slow", 5), functools.partial(job, "mid", 3), functools.partial(job, "fast", 1)
    )
    assert result == ["slow", "mid", "fast"]
    assert finished == ["fast", "mid", "slow"]


async def test_no_functions_gives_an_empty_list() -> None:
    assert await trioflow.gather() == []


async def test_all_run_at_once_by_default_and_max_concurrent_limits() -> None:
    in_flight = peak = 0

    async def job() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await checkpoints(3)
        in_flight -= 1

    await trioflow.gather(*[job] * 8)
    assert peak == 8
    peak = 0
    await trioflow.gather(*[job] * 8, max_concurrent=3)
    assert peak == 3


@pytest.mark.trio_only
async def test_concurrent_in_virtual_time() -> None:
    start = trio.current_time()

    async def second() -> None:
        await trio.sleep(1)

    await trioflow.gather(second, second, second)
    assert trio.current_time() - start == 1


async def test_current_step_names_the_function_and_its_argument_index() -> None:
    async def alpha() -> tuple[str, int | None]:
        step = trioflow.current_step()
        return step.name, step.item

    async def beta() -> tuple[str, int | None]:
        step = trioflow.current_step()
        return step.name, step.item

    assert await trioflow.gather(alpha, beta, functools.partial(alpha)) == [
        ("alpha", 0),
        ("beta", 1),
        ("alpha", 2),
    ]


async def test_a_failure_cancels_the_others_and_raises_flow_error() -> None:
    cancelled: list[str] = []

    async def boom() -> None:
        await checkpoints(2)
        raise ValueError("boom")

    async def waits() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("waits")
            raise

    with anyio.fail_after(30), pytest.raises(FlowError) as info:
        await trioflow.gather(functools.partial(tool, "a"), waits, boom, waits)
    err = info.value
    assert cancelled == ["waits", "waits"]
    assert [type(e) for e in err.exceptions] == [ValueError]
    assert err.exceptions[0].__notes__ == [
        "trioflow: gather argument 2 ('boom[2]') of trioflow.gather failed on attempt 1"
    ]
    assert {n: s.status for n, s in err.result.steps.items()} == {
        "tool[0]": StepStatus.SUCCEEDED,
        "waits[1]": StepStatus.CANCELLED,
        "boom[2]": StepStatus.FAILED,
        "waits[3]": StepStatus.CANCELLED,
    }
    assert err.result["tool[0]"] == "a done"
    assert str(err) == "trioflow.gather: 1 item failed: 'boom[2]'; 2 cancelled (1 sub-exception)"


async def test_outside_cancellation_propagates() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await trioflow.gather(functools.partial(tool, "a"))
    assert scope.cancelled_caught


def sync_tool() -> str:
    return "x"


async def test_non_async_arguments_are_type_errors_that_show_the_fix() -> None:
    with pytest.raises(
        TypeError,
        match=r"^trioflow.gather \(argument 1\) expects a callable that returns an awaitable .* "
        r"but sync_tool\(\) returned 'x' that is a str; define the function with 'async def'$",
    ):
        await trioflow.gather(functools.partial(tool, "a"), sync_tool)  # type: ignore[arg-type]
    coro = tool("a")
    with pytest.raises(TypeError, match=r"got a coroutine object"):
        await trioflow.gather(coro)  # type: ignore[arg-type]


async def test_max_concurrent_is_validated() -> None:
    with pytest.raises(GraphError, match=r"trioflow.gather\(max_concurrent=...\) must be at least 1 \(got 0\)"):
        await trioflow.gather(functools.partial(tool, "a"), max_concurrent=0)
    with pytest.raises(TypeError):
        await trioflow.gather(functools.partial(tool, "a"), max_concurrent="2")  # type: ignore[arg-type]


async def test_gather_inside_a_flow_step_sums_usage_into_the_step() -> None:
    flow = trioflow.Flow("tools")

    async def search(query: str) -> str:
        trioflow.current_step().add_usage(http_requests=1)
        await anyio.lowlevel.checkpoint()
        return query

    @flow.step
    async def research(topic: str) -> list[Any]:
        return await trioflow.gather(
            functools.partial(search, topic), functools.partial(search, topic + "!")
        )

    result = await flow.run({"topic": "cats"})
    assert result["research"] == ["cats", "cats!"]
    assert dict(result.steps["research"].usage) == {"http_requests": 2}
