"""``async with flow.open_run(...) as run`` (issue 12 item 1)."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import (
    Flow,
    FlowError,
    GraphError,
    RunFinished,
    RunStarted,
    StepStarted,
    StepSucceeded,
)


def _flow(fail: bool = False) -> Flow:
    flow = Flow("watched")

    @flow.step
    async def a(x: int) -> int:
        await anyio.sleep(0.01)
        return x + 1

    @flow.step(map_over="xs")
    async def m(xs: int, a: int) -> int:
        await anyio.sleep(0.01)
        if fail and xs == 2:
            raise ValueError("two")
        return xs * a

    @flow.step
    async def total(m: list[int]) -> int:
        return sum(m)

    return flow


INPUTS = {"x": 1, "xs": [1, 2, 3]}


@pytest.mark.anyio
async def test_issue_12_item_1_events_in_order_and_result(anyio_backend: Any) -> None:
    seen: list[Any] = []
    got: list[Any] = []
    async with _flow().open_run(INPUTS, max_concurrent=2, on_event=seen.append) as run:
        assert isinstance(run, trioflow.RunHandle)
        async for event in run.events():
            got.append(event)
        result = await run.result()
    assert got == seen  # every event, in order, and the caller's on_event got them too
    assert isinstance(got[0], RunStarted)
    assert isinstance(got[-1], RunFinished)
    assert got[-1].status == "succeeded"
    assert sum(isinstance(ev, StepStarted) for ev in got) == 5
    assert result["total"] == 12
    assert result.ok


@pytest.mark.trio
async def test_issue_12_item_1_events_whenever_called(autojump_clock: trio.testing.MockClock) -> None:
    async with _flow().open_run(INPUTS) as run:
        result = await run.result()  # the run ended before anyone looked at the events
        events = [ev async for ev in run.events()]
    assert isinstance(events[0], RunStarted)
    assert events[-1] == RunFinished("watched", 0.02, 0.02, True, (), "succeeded")
    assert result.duration == pytest.approx(0.02)
    with pytest.raises(RuntimeError, match=r"^run.events\(\) can be iterated once, and was already"):
        run.events()


@pytest.mark.trio
async def test_issue_12_item_1_a_slow_consumer_never_holds_the_run_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []
    async with _flow().open_run(INPUTS) as run:
        async for event in run.events():
            times.append(trio.current_time())
            last = event
            await trio.sleep(1)  # much slower than the run
    assert isinstance(last, RunFinished)
    assert last.time == pytest.approx(0.02)  # the run went on at its own pace
    assert times[-1] > 10  # while the consumer caught up later, missing nothing
    assert len(times) == 13  # (MapStarted too)


@pytest.mark.anyio
async def test_issue_12_item_1_failure_propagates_from_the_block_once(anyio_backend: Any) -> None:
    with pytest.raises(FlowError) as info:
        async with _flow(fail=True).open_run(INPUTS) as run:
            events = [ev async for ev in run.events()]
    assert type(info.value) is FlowError  # not wrapped in another group
    assert events[-1].status == "failed"
    assert info.value.result.failed == ["m"]
    # result() raised it: the block does not raise it again
    with pytest.raises(FlowError) as again:
        async with _flow(fail=True).open_run(INPUTS) as run:
            await run.result()
    assert type(again.value) is FlowError
    assert not any("failed too" in note for note in getattr(again.value, "__notes__", []))
    async with _flow(fail=True).open_run(INPUTS) as run:
        with pytest.raises(FlowError):
            await run.result()
    # (handled inside: nothing more from the block)


@pytest.mark.anyio
async def test_issue_12_item_1_leaving_the_block_cancels_the_run(anyio_backend: Any) -> None:
    flow = Flow("long")
    finished: list[str] = []

    @flow.step
    async def forever() -> None:
        try:
            await anyio.sleep(100)
        finally:
            finished.append("forever")

    async with flow.open_run() as run:
        async for event in run.events():
            if isinstance(event, StepStarted):
                break
    assert finished == ["forever"]  # cancelled and waited for
    with pytest.raises(RuntimeError, match="can be iterated once"):
        run.events()
    with pytest.raises(RuntimeError, match=r"^the run was cancelled before it ended, so it has no result$"):
        await run.result()
    assert "cancelled" in repr(run)


@pytest.mark.trio
async def test_issue_12_item_1_cancelled_run_still_sends_run_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("long")

    @flow.step
    async def forever() -> None:
        await trio.sleep(100)

    seen: list[Any] = []
    async with flow.open_run(on_event=seen.append) as run:
        await trio.sleep(5)
    assert seen[-1] == RunFinished("long", 5.0, 5.0, False, (), "cancelled")
    assert [type(ev) async for ev in run.events()][-1] is RunFinished


@pytest.mark.anyio
async def test_issue_12_item_1_body_error_propagates_as_is(anyio_backend: Any) -> None:
    class Oops(Exception):
        pass

    with pytest.raises(Oops):
        async with _flow().open_run(INPUTS):
            raise Oops("from the body")


@pytest.mark.trio
async def test_issue_12_item_1_body_error_notes_an_unraised_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Oops(Exception):
        pass

    async def body() -> None:
        async with _flow(fail=True).open_run(INPUTS):
            await trio.sleep(1)  # the run fails meanwhile
            raise Oops("from the body")

    with pytest.raises(Oops) as info:
        await body()
    assert type(info.value) is Oops
    assert any(note.startswith("trioflow: the run failed too: FlowError(") for note in info.value.__notes__)


@pytest.mark.trio
async def test_issue_12_item_1_outside_cancellation_leaves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("long")
    tasks: list[Any] = []

    @flow.step
    async def forever() -> None:
        tasks.append(trio.lowlevel.current_task())
        await trio.sleep(100)

    seen: list[Any] = []
    with trio.move_on_after(3) as scope:
        async with flow.open_run(on_event=seen.append) as run:
            await run.result()
    assert scope.cancelled_caught
    assert trio.current_time() == 3
    assert seen[-1].status == "cancelled"
    assert all(t.parent_nursery is None or not t.parent_nursery.child_tasks for t in tasks)
    with trio.CancelScope() as pre:
        pre.cancel()
        async with flow.open_run() as run:
            raise AssertionError("the block's body runs only once the run started")  # pragma: no cover


@pytest.mark.anyio
async def test_issue_12_item_1_bad_input_raises_on_entry(anyio_backend: Any) -> None:
    ran: list[str] = []
    flow = Flow("f")

    @flow.step
    async def a(x: int) -> None:
        ran.append("a")

    with pytest.raises(
        TypeError,
        match="^" + re.escape("flow.open_run() got an unknown option 'max_concurent'; it takes the options of flow.run(): "),
    ) as info:
        async with flow.open_run({"x": 1}, max_concurent=2):
            raise AssertionError("not reached")  # pragma: no cover
    assert str(info.value).endswith("; did you mean 'max_concurrent'?")
    with pytest.raises(GraphError, match="missing input 'x'"):
        async with flow.open_run():
            raise AssertionError("not reached")  # pragma: no cover
    with pytest.raises(GraphError, match="must be 'fail_fast' or 'continue'"):
        async with flow.open_run({"x": 1}, error_handling="stop"):
            raise AssertionError("not reached")  # pragma: no cover
    assert ran == []


@pytest.mark.anyio
async def test_issue_12_item_1_with_a_store(anyio_backend: Any) -> None:
    store = trioflow.MemoryStore()
    async with _flow().open_run(INPUTS, store=store, run_id="r1") as run:
        events = [ev async for ev in run.events()]
    assert events[0].run_id == "r1"
    async with _flow().open_run(INPUTS, store=store, run_id="r1") as run:
        events = [ev async for ev in run.events()]
        result = await run.result()
    assert events[0].restored == ("a", "m", "total")
    assert not any(isinstance(ev, StepSucceeded) for ev in events)
    assert result["total"] == 12


@pytest.mark.anyio
async def test_issue_12_item_1_a_raising_on_event_fails_the_run_not_the_stream(anyio_backend: Any) -> None:
    def picky(event: Any) -> None:
        if isinstance(event, StepSucceeded):
            raise RuntimeError("display broke")

    got: list[Any] = []

    async def watch() -> None:
        async with _flow().open_run(INPUTS, on_event=picky) as run:
            async for event in run.events():
                got.append(event)

    with pytest.raises(FlowError) as info:
        await watch()
    assert type(info.value) is FlowError
    assert any(isinstance(e, RuntimeError) and str(e) == "display broke" for e in info.value.exceptions)
    # the stream had every event up to the one the callback raised on, and then ended
    assert isinstance(got[0], RunStarted)
    assert isinstance(got[-1], StepSucceeded)
    assert info.value.result["total"] == 12  # the run went on


@pytest.mark.trio
async def test_issue_12_item_1_a_store_refusing_the_run_raises_on_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("busy")

    @flow.step
    async def slow() -> None:
        await trio.sleep(10)

    store = trioflow.MemoryStore()
    async with flow.open_run(store=store, run_id="same") as first:
        with pytest.raises(trioflow.StoreError, match="'same' is already running"):
            async with flow.open_run(store=store, run_id="same"):
                raise AssertionError("not reached")  # pragma: no cover
        assert (await first.result()).ok
