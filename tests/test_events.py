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
    Retry,
    RunFinished,
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
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda ev: type(ev).__name__)
def test_events_are_frozen_attrs(event: Any) -> None:
    assert attrs.has(type(event))
    field = attrs.fields(type(event))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(event, field, "changed")


def test_event_str() -> None:
    assert [str(ev) for ev in ALL_EVENTS] == [
        "[   0.000] start    s (attempt 1)",
        "[   1.000] done     s in 1.000s (attempt 1)",
        "[   1.000] FAILED   s (attempt 1): ValueError('x')",
        "[   1.000] retry    s after attempt 1 failed (ValueError('x')); next in 0.500s",
        "[   1.000] skipped  s (because 't' did not succeed)",
        "[   1.000] cancel   s (while running)",
        "[   0.000] Executing 2 steps in parallel: s, t",
        "[   1.000] finished f in 1.000s (ok)",
    ]
    assert str(StepStarted("m", 2, 0.0, 3)) == "[   0.000] start    m[3] (attempt 2)"
    assert str(RunFinished("f", 1.0, 1.0, False, ("a", "b"))) == "[   1.000] finished f in 1.000s (failed: a, b)"


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
