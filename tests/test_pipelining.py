"""Item-level pipelining of a map step over another map step (issue 13 item 3).

Exact timings on trio in virtual time; results and statuses on both backends,
compared with the same flow run without pipelining (``max_concurrent=1`` gives
the unpipelined order, and the rules say results must not differ).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, StepStatus


def _two_stage(up_seconds: dict[int, float], down_seconds: float = 1.0, fail_up: tuple[int, ...] = (),
               fail_down: tuple[int, ...] = ()) -> tuple[Flow, list[tuple[str, int, float]]]:
    flow = Flow("pipe")
    log: list[tuple[str, int, float]] = []

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        log.append(("up", items, anyio.current_time()))
        await anyio.sleep(up_seconds[items])
        if items in fail_up:
            raise ValueError(f"up {items}")
        return items * 10

    @flow.step(map_over="up")
    async def down(up: int) -> int:
        log.append(("down", up // 10, anyio.current_time()))
        await anyio.sleep(down_seconds)
        if up // 10 in fail_down:
            raise ValueError(f"down {up // 10}")
        return up + 1

    return flow, log


@pytest.mark.trio
async def test_downstream_items_start_when_their_upstream_item_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0, 2: 1.0})
    result = await flow.run({"items": [0, 1, 2]})
    assert result["down"] == [1, 11, 21]
    starts = {(stage, i): t for stage, i, t in log}
    assert (starts[("down", 1)], starts[("down", 2)], starts[("down", 0)]) == (1.0, 1.0, 3.0)
    assert result.duration == 4.0
    assert result.steps["down"].started_at == 1.0
    assert result.steps["down"].finished_at == 4.0


@pytest.mark.trio
async def test_pipelining_waits_for_the_other_dependencies(autojump_clock: trio.testing.MockClock) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0, 2: 1.0})

    @flow.step
    async def config() -> str:
        await trio.sleep(2)
        return "cfg"

    @flow.step(map_over="up")
    async def tagged(up: int, config: str) -> str:
        log.append(("tagged", up // 10, trio.current_time()))
        await trio.sleep(1)
        return f"{config}{up}"

    result = await flow.run({"items": [0, 1, 2]})
    assert result["tagged"] == ["cfg0", "cfg10", "cfg20"]
    starts = {(stage, i): t for stage, i, t in log}
    # items 1 and 2 of `up` are done at 1.0, config at 2.0: they start then; item 0 at 3.0
    assert [starts[("tagged", i)] for i in range(3)] == [3.0, 2.0, 2.0]


@pytest.mark.trio
async def test_a_chain_of_three_map_steps_pipelines_through(autojump_clock: trio.testing.MockClock) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0})

    @flow.step(map_over="down")
    async def third(down: int) -> int:
        log.append(("third", down // 10, trio.current_time()))
        await trio.sleep(1)
        return down

    result = await flow.run({"items": [0, 1]})
    assert result["third"] == [1, 11]
    starts = {(stage, i): t for stage, i, t in log}
    assert (starts[("third", 1)], starts[("third", 0)]) == (2.0, 4.0)
    assert result.duration == 5.0


@pytest.mark.anyio
async def test_outputs_and_statuses_equal_the_unpipelined_rules(anyio_backend: Any) -> None:
    for fail_up, fail_down in [((), ()), ((1,), ()), ((), (2,)), ((0,), (2,))]:
        seen = []
        for max_concurrent in (None, 1, 2):
            flow, log = _two_stage({0: 0.003, 1: 0.001, 2: 0.002}, 0.001, fail_up, fail_down)
            try:
                result = await flow.run({"items": [0, 1, 2]}, error_handling="continue",
                                        max_concurrent=max_concurrent)
            except FlowError as exc:
                result = exc.result
            ran_down = sorted(i for stage, i, _ in log if stage == "down")
            assert not set(ran_down) & set(fail_up)  # no item runs whose upstream item failed
            seen.append({n: (s.status, s.value) for n, s in result.steps.items()})
        assert seen[0] == seen[1] == seen[2]


@pytest.mark.trio
async def test_under_continue_started_items_finish_when_upstream_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 5.0, 1: 1.0, 2: 1.0}, down_seconds=2.0, fail_up=(0,))
    with pytest.raises(FlowError) as info:
        await flow.run({"items": [0, 1, 2]}, error_handling="continue")
    steps = info.value.result.steps
    assert steps["up"].status is StepStatus.FAILED
    assert steps["down"].status is StepStatus.SKIPPED
    assert steps["down"].skip_reason == "dependency"
    assert steps["down"].attempts == 1  # the largest over the items that ran
    # items 1 and 2 started at 1.0 and ran to completion (at 3.0), item 0 never ran
    assert sorted((s, i) for s, i, _ in log if s == "down") == [("down", 1), ("down", 2)]
    assert info.value.result.duration == 5.0


@pytest.mark.trio
async def test_under_fail_fast_an_upstream_failure_cancels_started_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 2.0, 1: 1.0}, down_seconds=5.0, fail_up=(0,))
    with pytest.raises(FlowError) as info:
        await flow.run({"items": [0, 1]})
    steps = info.value.result.steps
    assert (steps["up"].status, steps["down"].status) == (StepStatus.FAILED, StepStatus.CANCELLED)
    assert info.value.result.duration == 2.0
    assert ("down", 1, 1.0) in log  # started early, then cancelled by the failure at 2.0


@pytest.mark.trio
async def test_pipelined_items_respect_the_map_steps_own_limit(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("lim")
    running = [0]
    peak = [0]

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        await trio.sleep(items)
        return items

    @flow.step(map_over="up", max_concurrent=1)
    async def down(up: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await trio.sleep(3)
        running[0] -= 1
        return up

    result = await flow.run({"items": [1, 1, 1]})
    assert result["down"] == [1, 1, 1]
    assert peak[0] == 1
    assert result.duration == 10.0


@pytest.mark.trio
async def test_pipelining_with_a_store_resumes_recorded_items(autojump_clock: trio.testing.MockClock) -> None:
    store = trioflow.MemoryStore()
    calls: list[tuple[str, int]] = []
    flaky = {"fail": True}
    flow = Flow("resume")

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        calls.append(("up", items))
        await trio.sleep(items)
        return items

    @flow.step(map_over="up")
    async def down(up: int) -> int:
        calls.append(("down", up))
        if up == 3 and flaky["fail"]:
            raise RuntimeError("once")
        return up * 2

    with pytest.raises(FlowError):
        await flow.run({"items": [1, 2, 3]}, store=store, run_id="r", error_handling="continue")
    flaky["fail"] = False
    calls.clear()
    result = await flow.run({"items": [1, 2, 3]}, store=store, run_id="r")
    assert result["down"] == [2, 4, 6]
    assert calls == [("down", 3)]


@pytest.mark.trio
@pytest.mark.parametrize("items", [[], [1, 2, 3]])
async def test_a_pipelined_map_step_announces_its_items(
    autojump_clock: trio.testing.MockClock, items: list[int]
) -> None:
    # a pipelined map step sends MapStarted too (with none it looked cancelled to
    # Timeline.from_events when it had no items, found by the fuzz suite)
    flow, _log = _two_stage({i: 1.0 for i in items})
    events: list[trioflow.Event] = []
    result = await flow.run({"items": items}, on_event=events.append)
    started = [(e.step, e.items) for e in events if isinstance(e, trioflow.MapStarted)]
    assert sorted(started) == [("down", len(items)), ("up", len(items))]
    assert trioflow.Timeline.from_events(events, flow=flow).statuses == result.timeline().statuses
