"""Events reported to ``on_event``: sequence, fields, frozenness."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import anyio
import attrs
import pytest
import trio
import trio.testing

import trioflow
from trioflow import (
    BatchStarted,
    Flow,
    FlowError,
    MapStarted,
    Retry,
    RunFinished,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)


@pytest.mark.trio
async def test_event_sequence_of_a_chain(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("chain")

    @flow.step
    async def a() -> int:
        await trio.sleep(1)
        return 1

    @flow.step
    async def b(a: int) -> int:
        await trio.sleep(2)
        return a + 1

    events: list[Any] = []
    await flow.run(on_event=events.append)
    assert events == [
        RunStarted("chain", None, 0.0, ("a", "b"), ()),
        StepStarted("a", 1, 0.0),
        StepSucceeded("a", 1, 1.0, 1.0),
        StepStarted("b", 1, 1.0),
        StepSucceeded("b", 1, 3.0, 2.0),
        RunFinished("chain", 3.0, 3.0, True, ()),
    ]


@pytest.mark.trio
async def test_batch_started_when_several_steps_become_ready(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("fan")

    @flow.step
    async def root1() -> None:
        await trio.sleep(1)

    @flow.step
    async def root2() -> None:
        await trio.sleep(2)

    @flow.step
    async def left(root1: None) -> None:
        await trio.sleep(1)

    @flow.step
    async def right(root1: None) -> None:
        await trio.sleep(1)

    events: list[Any] = []
    await flow.run(on_event=events.append)
    batches = [ev for ev in events if isinstance(ev, BatchStarted)]
    assert batches == [BatchStarted(("root1", "root2"), 0.0), BatchStarted(("left", "right"), 1.0)]
    i = events.index(batches[1])
    assert events[i - 1] == StepSucceeded("root1", 1, 1.0, 1.0)
    assert {type(ev) for ev in events[i + 1 : i + 3]} == {StepStarted}
    assert events[-1] == RunFinished("fan", 2.0, 2.0, True, ())


@pytest.mark.trio
async def test_events_for_failure_retry_and_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("ff")

    @flow.step(retry=Retry(max_attempts=2, wait=0.5))
    async def bad() -> None:
        await trio.sleep(1)
        raise ValueError("bad")

    @flow.step
    async def running() -> None:
        await trio.sleep(100)

    @flow.step
    async def waiting(bad: None) -> None:
        pass

    events: list[Any] = []
    with pytest.raises(FlowError) as info:
        await flow.run(on_event=events.append)
    first, second = [ev for ev in events if isinstance(ev, (StepRetrying, StepFailed))]
    assert isinstance(first, StepRetrying)
    assert (first.step, first.attempt, first.time, first.wait, first.item) == ("bad", 1, 1.0, 0.5, None)
    assert str(first.error) == "bad"
    assert second == StepFailed("bad", 2, 2.5, info.value.exceptions[0])
    assert events[-3:] == [
        StepCancelled("running", 2.5, True),
        StepCancelled("waiting", 2.5, False),
        RunFinished("ff", 2.5, 2.5, False, ("bad",)),
    ]


@pytest.mark.trio
async def test_skipped_events_under_continue(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("c")

    @flow.step
    async def bad() -> None:
        await trio.sleep(1)
        raise ValueError("bad")

    @flow.step
    async def child(bad: None) -> None:
        pass

    @flow.step(after="child")
    async def grandchild() -> None:
        pass

    @flow.step
    async def fine() -> None:
        await trio.sleep(2)

    events: list[Any] = []
    with pytest.raises(FlowError):
        await flow.run(error_handling="continue", on_event=events.append)
    assert [ev for ev in events if isinstance(ev, StepSkipped)] == [
        StepSkipped("child", 1.0, "bad"),
        StepSkipped("grandchild", 1.0, "bad"),
    ]
    assert not any(isinstance(ev, StepCancelled) for ev in events)
    assert events[-1] == RunFinished("c", 2.0, 2.0, False, ("bad",))


@pytest.mark.trio
async def test_map_events_carry_the_item(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("m")

    @flow.step(map_over="xs")
    async def work(xs: int) -> int:
        await trio.sleep(xs)
        return xs

    events: list[Any] = []
    await flow.run({"xs": [2, 1]}, on_event=events.append)
    assert [ev for ev in events if isinstance(ev, StepStarted)] == [
        StepStarted("work", 1, 0.0, 0),
        StepStarted("work", 1, 0.0, 1),
    ]
    assert [ev for ev in events if isinstance(ev, StepSucceeded)] == [
        StepSucceeded("work", 1, 1.0, 1.0, 1),
        StepSucceeded("work", 1, 2.0, 2.0, 0),
    ]


@pytest.mark.anyio
async def test_event_partial_order_on_both_backends(anyio_backend: Any) -> None:
    flow = Flow("po")
    deps = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ()}

    def make(name: str, parents: tuple[str, ...]) -> Any:
        async def step(**kwargs: Any) -> str:
            await anyio.lowlevel.checkpoint()
            return name

        step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in parents]
        )
        return step

    for name, parents in deps.items():
        flow.add(make(name, parents), name=name)
    events: list[Any] = []
    await flow.run(on_event=events.append)
    pos = {(type(ev).__name__, getattr(ev, "step", None)): i for i, ev in enumerate(events)}
    for name, parents in deps.items():
        assert pos[("StepStarted", name)] < pos[("StepSucceeded", name)]
        for p in parents:
            assert pos[("StepSucceeded", p)] < pos[("StepStarted", name)]
    assert isinstance(events[-1], RunFinished)
    assert sum(isinstance(ev, StepStarted) for ev in events) == 5


ALL_EVENTS = [
    StepStarted("s", 1, 0.0),
    StepSucceeded("s", 1, 1.0, 1.0),
    StepFailed("s", 1, 1.0, ValueError("x")),
    StepRetrying("s", 1, 1.0, ValueError("x"), 0.5),
    StepSkipped("s", 1.0, "t"),
    StepCancelled("s", 1.0, True),
    BatchStarted(("s", "t"), 0.0),
    RunFinished("f", 1.0, 1.0, True),
    RunStarted("f", None, 0.0, ("s", "t")),
    MapStarted("s", 1.0, 3),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda ev: type(ev).__name__)
def test_events_are_frozen_attrs(event: Any) -> None:
    assert attrs.has(type(event))
    field = attrs.fields(type(event))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(event, field, "changed")


def test_event_str() -> None:
    # the prefix is ``elapsed``, the seconds since the run started (0 unless given)
    assert [str(ev) for ev in ALL_EVENTS] == [
        "[+   0.000s] start    s (attempt 1)",
        "[+   0.000s] done     s in 1.000s (attempt 1)",
        "[+   0.000s] FAILED   s (attempt 1): ValueError('x')",
        "[+   0.000s] retry    s after attempt 1 failed (ValueError('x')); next in 0.500s",
        "[+   0.000s] skipped  s (because 't' did not succeed)",
        "[+   0.000s] cancel   s (while running)",
        "[+   0.000s] Executing 2 steps in parallel: s, t",
        "[+   0.000s] finished f in 1.000s (ok)",
        "[+   0.000s] started  f: 2 steps",
        "[+   0.000s] map      s: 3 items",
    ]
    assert str(MapStarted("m", 2.0, 5, 2, elapsed=1.0)) == "[+   1.000s] map      m: 5 items (2 restored)"
    assert str(StepStarted("m", 2, 7.0, 3, elapsed=2.5)) == "[+   2.500s] start    m[3] (attempt 2)"
    assert (
        str(RunFinished("f", 1.0, 1.0, False, ("a", "b"), elapsed=1.0))
        == "[+   1.000s] finished f in 1.000s (failed: a, b)"
    )
    assert (
        str(RunFinished("f", 1.0, 1.0, False, (), "cancelled", elapsed=1.0))
        == "[+   1.000s] finished f in 1.000s (cancelled)"
    )
    assert (
        str(RunStarted("f", "r1", 3.0, ("a", "b", "c"), ("a",), elapsed=0.0))
        == "[+   0.000s] started  f (run 'r1'): 3 steps, 1 restored"
    )


def test_event_union_names_every_event_type() -> None:
    assert set(trioflow.Event.__args__) == {type(ev) for ev in ALL_EVENTS}


def test_on_event_must_be_callable() -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        pass

    with pytest.raises(
        TypeError,
        match="^" + re.escape("flow.run(on_event=...) must be a callable taking an event (got 3)") + "$",
    ):
        trio.run(functools.partial(flow.run, on_event=3))  # type: ignore[arg-type]


# -- issue 11 item 6: elapsed, RunStarted, RunFinished.status -----------------------


def _chain_flow() -> Flow:
    flow = Flow("chain")

    @flow.step
    async def a() -> int:
        await anyio.sleep(0.01)
        return 1

    @flow.step
    async def b(a: int) -> int:
        await anyio.sleep(0.02)
        return a + 1

    return flow


@pytest.mark.trio
async def test_issue_11_item_6_every_event_carries_elapsed(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("e")

    @flow.step(retry=Retry(max_attempts=2, wait=1))
    async def flaky() -> None:
        await trio.sleep(1)
        if trioflow.current_step().attempt == 1:
            raise ValueError("once")

    @flow.step
    async def left(flaky: None) -> None:
        await trio.sleep(1)

    @flow.step
    async def right(flaky: None) -> None:
        await trio.sleep(2)
        raise KeyError("right")

    @flow.step
    async def child(right: None) -> None:
        pass

    await trio.sleep(100)  # the run starts at clock 100, not 0
    events: list[Any] = []
    with pytest.raises(FlowError):
        await flow.run(error_handling="continue", on_event=events.append)
    assert {type(ev).__name__ for ev in events} == {
        "RunStarted", "StepStarted", "StepRetrying", "StepSucceeded", "BatchStarted",
        "StepFailed", "StepSkipped", "RunFinished",
    }
    for ev in events:
        assert ev.elapsed == pytest.approx(ev.time - 100.0), ev
        assert f"[+{ev.elapsed:8.3f}s]" in str(ev)
    assert events[0] == RunStarted("e", None, 100.0, ("flaky", "left", "right", "child"), ())
    assert events[-1] == RunFinished("e", 105.0, 5.0, False, ("right",), "failed")
    assert events[-1].elapsed == 5.0


@pytest.mark.anyio
async def test_issue_11_item_6_run_started_first_and_finished_last(anyio_backend: Any) -> None:
    events: list[Any] = []
    await _chain_flow().run(on_event=events.append, run_id="r-1")
    assert isinstance(events[0], RunStarted)
    assert (events[0].flow, events[0].run_id, events[0].steps, events[0].restored) == (
        "chain", "r-1", ("a", "b"), ()
    )
    assert events[0].elapsed == 0.0
    assert isinstance(events[-1], RunFinished)
    assert (events[-1].status, events[-1].ok, events[-1].failed) == ("succeeded", True, ())
    assert events[-1].elapsed == events[-1].duration > 0
    assert all(0 <= ev.elapsed <= events[-1].elapsed for ev in events)
    assert [ev.elapsed for ev in events] == sorted(ev.elapsed for ev in events)


@pytest.mark.anyio
async def test_issue_11_item_6_run_started_names_the_restored_steps(anyio_backend: Any) -> None:
    flow = Flow("resume")
    fail = {"c": True}

    @flow.step
    async def a() -> int:
        return 1

    @flow.step
    async def b() -> int:
        return 2

    @flow.step
    async def c(a: int) -> int:
        if fail["c"]:
            raise ValueError("c")
        return a

    @flow.step
    async def d(b: int) -> int:
        await anyio.sleep(0.01)
        return b

    store = trioflow.MemoryStore()
    events: list[Any] = []
    with pytest.raises(FlowError):
        await flow.run(store=store, run_id="r", error_handling="continue", on_event=events.append)
    assert events[0] == RunStarted("resume", "r", events[0].time, ("a", "b", "c", "d"), ())
    assert events[-1].status == "failed"
    fail["c"] = False
    events.clear()
    await flow.run(store=store, run_id="r", on_event=events.append)
    # c was recorded as failed: not restored; declaration order
    assert events[0] == RunStarted("resume", "r", events[0].time, ("a", "b", "c", "d"), ("a", "b", "d"))
    assert [ev.step for ev in events if isinstance(ev, StepStarted)] == ["c"]
    assert events[-1].status == "succeeded"


@pytest.mark.anyio
async def test_issue_11_item_6_run_finished_on_outside_cancellation(anyio_backend: Any) -> None:
    flow = Flow("slow")

    @flow.step
    async def a() -> None:
        await anyio.sleep(10)

    @flow.step
    async def b(a: None) -> None:
        pass

    events: list[Any] = []
    with anyio.move_on_after(0.05) as scope:
        await flow.run(on_event=events.append)
    assert scope.cancelled_caught
    assert isinstance(events[0], RunStarted)
    last = events[-1]
    assert isinstance(last, RunFinished)
    assert (last.status, last.ok, last.failed) == ("cancelled", False, ())
    assert last.duration == last.elapsed
    assert [type(ev).__name__ for ev in events[-3:-1]] == ["StepCancelled", "StepCancelled"]
    assert str(last).endswith("(cancelled)")


@pytest.mark.anyio
async def test_issue_11_item_6_run_finished_status_failed_under_fail_fast(anyio_backend: Any) -> None:
    flow = Flow("ff")

    @flow.step
    async def bad() -> None:
        raise ValueError("bad")

    @flow.step
    async def other() -> None:
        await anyio.sleep(10)

    events: list[Any] = []
    with pytest.raises(FlowError):
        await flow.run(on_event=events.append)
    last = events[-1]
    assert isinstance(last, RunFinished)
    assert (last.status, last.ok, last.failed) == ("failed", False, ("bad",))
    assert sum(isinstance(ev, RunFinished) for ev in events) == 1


def test_issue_11_item_6_run_finished_status_defaults_from_ok() -> None:
    assert RunFinished("f", 1.0, 1.0, True).status == "succeeded"
    assert RunFinished("f", 1.0, 1.0, False, ("a",)).status == "failed"
    assert RunFinished("f", 1.0, 1.0, False, (), "cancelled").status == "cancelled"
    # elapsed is keyword-only and derived from time: not part of equality
    assert StepStarted("a", 1, 2.0, elapsed=1.0) == StepStarted("a", 1, 2.0)


@pytest.mark.trio
async def test_map_started_and_limiters_for_displays(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("m")

    @flow.step(limiter="llm")
    async def src() -> list[int]:
        await trio.sleep(1)
        return [1, 2, 3]

    @flow.step(map_over="src", limiter=["llm", "gpu"])
    async def each(src: int) -> int:
        return src

    llm = trio.CapacityLimiter(5)
    events: list[Any] = []
    await flow.run(limiters={"llm": llm, "gpu": 2}, on_event=events.append)
    assert events[0].limiters == {"llm": (5, ("src", "each")), "gpu": (2, ("each",))}
    maps = [ev for ev in events if isinstance(ev, MapStarted)]
    assert maps == [MapStarted("each", 1.0, 3, 0)]
    assert maps[0].elapsed == 1.0
    assert events.index(maps[0]) < min(i for i, ev in enumerate(events) if getattr(ev, "item", None) is not None)
