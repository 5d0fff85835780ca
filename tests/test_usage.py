"""Usage accounting through trioflow.current_step() (issue 3), on trio and asyncio."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import trioflow
from trioflow import FlowError, Retry

pytestmark = pytest.mark.anyio


async def test_usage_sums_per_step_and_per_run() -> None:
    flow = trioflow.Flow("usage")

    @flow.step
    async def a() -> int:
        trioflow.current_step().add_usage(tokens=10, calls=1)
        trioflow.current_step().add_usage(tokens=5)
        return 1

    @flow.step
    async def b(a: int) -> int:
        trioflow.current_step().add_usage(tokens=2.5, dollars=0.01)
        return a

    result = await flow.run()
    assert dict(result.steps["a"].usage) == {"tokens": 15, "calls": 1}
    assert dict(result.steps["b"].usage) == {"tokens": 2.5, "dollars": 0.01}
    assert dict(result.usage) == {"tokens": 17.5, "calls": 1, "dollars": 0.01}


async def test_map_step_items_accumulate_safely_under_any_concurrency() -> None:
    flow = trioflow.Flow("items")

    @flow.step(map_over="xs", max_concurrent=7)
    async def call(xs: int) -> int:
        for _ in range(3):
            trioflow.current_step().add_usage(llm_calls=1, tokens=xs)
            await anyio.lowlevel.checkpoint()  # interleave with the other items
        return xs

    for limit in (1, 3, None):
        result = await flow.run({"xs": list(range(100))}, max_concurrent=limit)
        assert dict(result.steps["call"].usage) == {"llm_calls": 300, "tokens": 3 * sum(range(100))}
        assert dict(result.usage) == dict(result.steps["call"].usage)


async def test_failed_attempts_count_too() -> None:
    flow = trioflow.Flow("retry")

    @flow.step(retry=Retry(max_attempts=3))
    async def flaky() -> str:
        step = trioflow.current_step()
        step.add_usage(llm_calls=1)
        if step.attempt < 3:
            raise ConnectionError
        return "ok"

    result = await flow.run()
    assert dict(result.usage) == {"llm_calls": 3}


async def test_usage_of_a_failed_run_is_on_the_partial_result() -> None:
    flow = trioflow.Flow("fails")

    @flow.step
    async def spend() -> None:
        trioflow.current_step().add_usage(tokens=7)
        raise ValueError

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert dict(info.value.result.usage) == {"tokens": 7}


async def test_current_step_fields_inside_a_flow() -> None:
    flow = trioflow.Flow("ctx")
    seen: list[Any] = []

    @flow.step
    async def plain() -> list[int]:
        step = trioflow.current_step()
        seen.append((step.name, step.attempt, step.item, step.run_id))
        return [5, 6]

    @flow.step(map_over="plain")
    async def each(plain: int) -> int:
        step = trioflow.current_step()
        seen.append((step.name, step.attempt, step.item, step.run_id))
        return plain

    await flow.run(run_id="run-42")
    assert sorted(seen, key=str) == sorted(
        [("plain", 1, None, "run-42"), ("each", 1, 0, "run-42"), ("each", 1, 1, "run-42")], key=str
    )


def test_current_step_outside_a_step_is_a_clear_runtime_error() -> None:
    with pytest.raises(RuntimeError) as info:
        trioflow.current_step()
    assert str(info.value) == (
        "trioflow.current_step() was called outside a step; call it from inside a function "
        "that a flow, trioflow.map or trioflow.gather is running"
    )


@pytest.mark.parametrize(
    ("counts", "error"),
    [({"tokens": -1}, ValueError), ({"tokens": math.nan}, ValueError), ({"tokens": "3"}, TypeError),
     ({"tokens": True}, TypeError)],
)
async def test_add_usage_rejects_bad_counts(counts: dict[str, Any], error: type[Exception]) -> None:
    async def bad(x: int) -> int:
        trioflow.current_step().add_usage(**counts)
        return x  # pragma: no cover

    with pytest.raises(FlowError) as info:
        await trioflow.map(bad, [1])
    assert isinstance(info.value.exceptions[0], error)
    assert "add_usage(tokens=" in str(info.value.exceptions[0])


async def test_usage_of_map_items_outside_a_flow_is_per_item() -> None:
    async def spend(x: int) -> int:
        trioflow.current_step().add_usage(tokens=x)
        await anyio.lowlevel.checkpoint()
        if x == 0:
            raise ValueError
        return x

    with pytest.raises(FlowError) as info:
        await trioflow.map(spend, [0, 4, 5], error_handling="continue")
    steps = info.value.result.steps
    assert [dict(s.usage) for s in steps.values()] == [{"tokens": 0}, {"tokens": 4}, {"tokens": 5}]
