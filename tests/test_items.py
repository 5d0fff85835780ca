"""Partial results of map steps: ``StepResult.items`` and ``on_item_error="none"`` (issue 11 item 4)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import trioflow
from trioflow import FlowError, GraphError, Retry, StepFailed, StepStatus

pytestmark = pytest.mark.anyio


def mapping_flow(on_item_error: Any = "fail", retry: Retry | None = None) -> trioflow.Flow:
    flow = trioflow.Flow("f")

    @flow.step(map_over="xs", on_item_error=on_item_error, retry=retry)
    async def square(xs: int) -> int:
        await anyio.sleep(0.01 * xs)
        if xs == 2:
            raise ValueError(f"bad {xs}")
        return xs * xs

    @flow.step
    async def total(square: list[int | None]) -> int:
        return sum(v for v in square if v is not None)

    return flow


async def test_issue_11_item_4_items_survive_a_failed_map_step() -> None:
    with pytest.raises(FlowError) as info:
        await mapping_flow().run({"xs": [1, 2, 3]}, error_handling="continue")
    step = info.value.result.steps["square"]
    assert step.status is StepStatus.FAILED
    assert [i.name for i in step.items] == ["square[0]", "square[1]", "square[2]"]
    assert [i.status for i in step.items] == ["succeeded", "failed", "succeeded"]
    assert [i.value for i in step.items] == [1, None, 9]
    assert isinstance(step.items[1].error, ValueError)
    assert [i.attempts for i in step.items] == [1, 1, 1]
    assert all(i.started_at is not None and i.finished_at is not None for i in step.items)


@pytest.mark.trio_only
async def test_issue_11_item_4_item_times_are_exact_in_virtual_time() -> None:
    result = await mapping_flow("none").run({"xs": [1, 3]})
    items = result.steps["square"].items
    assert [i.duration for i in items] == [pytest.approx(0.01), pytest.approx(0.03)]


async def test_issue_11_item_4_fail_fast_reports_the_other_items_as_cancelled() -> None:
    flow = trioflow.Flow("f")

    @flow.step(map_over="xs")
    async def slow(xs: int) -> int:
        if xs == 0:
            raise ValueError("first")
        await anyio.sleep(10)
        return xs

    with pytest.raises(FlowError) as info:
        await flow.run({"xs": [0, 1, 2]})
    items = info.value.result.steps["slow"].items
    assert [i.status for i in items] == ["failed", "cancelled", "cancelled"]
    assert items[1].finished_at is None


async def test_issue_11_item_4_plain_steps_have_no_items() -> None:
    flow = trioflow.Flow("f")

    @flow.step
    async def a() -> int:
        return 1

    assert (await flow.run()).steps["a"].items == ()


async def test_issue_11_item_4_on_item_error_none_in_a_flow() -> None:
    events: list[Any] = []
    result = await mapping_flow("none", Retry(max_attempts=2)).run(
        {"xs": [1, 2, 3]}, on_event=events.append
    )
    assert result["square"] == [1, None, 9]
    assert result["total"] == 10
    step = result.steps["square"]
    assert step.status is StepStatus.SUCCEEDED
    assert step.error is None
    assert step.items[1].status is StepStatus.FAILED
    assert step.items[1].attempts == 2
    assert str(step.items[1].error) == "bad 2"
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert [(e.step, e.item, e.attempt) for e in failed] == [("square", 1, 2)]


async def test_issue_11_item_4_on_item_error_is_validated() -> None:
    flow = trioflow.Flow("f")

    async def a(xs: int) -> int:
        return xs

    with pytest.raises(GraphError, match=r"on_item_error='skip' must be 'fail' .* or 'none'"):
        flow.add(a, map_over="xs", on_item_error="skip")
    with pytest.raises(GraphError, match="but this step has no map_over="):
        flow.add(a, on_item_error="none")
    with pytest.raises(GraphError, match=r"on_item_error='x'\) must be 'fail'"):
        await trioflow.map(a, [1], on_item_error="x")  # type: ignore[arg-type]


async def test_issue_11_item_4_trioflow_map_on_item_error_none() -> None:
    async def half(x: int) -> float:
        await anyio.sleep(0.01)
        if x % 2:
            raise ValueError(x)
        return x / 2

    for handling in ("fail_fast", "continue"):
        out = await trioflow.map(
            half, range(5), on_item_error="none", error_handling=handling, retry=Retry(max_attempts=2)
        )
        assert out == [0.0, None, 1.0, None, 2.0]
