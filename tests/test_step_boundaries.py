"""A worker checks for cancellation between two steps, also when no step awaited
(issue 16: that check is a cheap read of the task's cancel state, not a call)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
import trio.testing
from _backends import on_trio

import trioflow


def _scope(shield: bool = False) -> Any:
    # trio's own scope under trio (anyio's passes trio a reason for cancel(), which
    # the oldest trio supported does not take)
    return trio.CancelScope(shield=shield) if on_trio() else anyio.CancelScope(shield=shield)

pytestmark = pytest.mark.anyio


async def test_a_cancel_from_inside_a_step_stops_the_next_step_before_it_starts() -> None:
    started: list[str] = []
    flow = trioflow.Flow("boundaries")
    scope = _scope()

    @flow.step
    async def a() -> int:
        started.append("a")
        scope.cancel()  # no await: only the check between steps can see it
        return 1

    @flow.step
    async def b(a: int) -> int:
        started.append("b")
        return a + 1

    @flow.step
    async def c(b: int) -> int:
        started.append("c")
        return b + 1

    with scope:
        await flow.run()
    assert scope.cancelled_caught
    assert started == ["a"]


async def test_a_shielded_run_is_not_stopped_by_the_cancel_around_it() -> None:
    started: list[str] = []
    flow = trioflow.Flow("shielded")
    outer = _scope()

    @flow.step
    async def a() -> int:
        started.append("a")
        outer.cancel()
        return 1

    @flow.step
    async def b(a: int) -> int:
        started.append("b")
        return a + 1

    result: Any = None
    with outer, _scope(shield=True):
        result = await flow.run()
    assert started == ["a", "b"]
    assert result["b"] == 2


def test_a_run_cancelled_from_outside_leaves_no_cyclic_garbage() -> None:
    # issue 16: a reference cycle through each cancelled worker left 10k tasks
    # for the garbage collector, which made cancelling slower than raw trio; so did
    # one through the run itself
    import gc
    import types

    flow = trioflow.Flow("cancelled")

    async def sleeper() -> None:
        await trio.sleep(10)

    for i in range(50):
        flow.add(sleeper, name=f"s{i}")

    async def main() -> None:
        with trio.move_on_after(1):
            await flow.run()

    gc.collect()
    gc.disable()
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [
            o
            for o in gc.garbage
            if type(o).__module__.startswith("trioflow")
            or (type(o) is types.FrameType and "trioflow" in o.f_code.co_filename)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []  # (trio.run leaves a few cycles of its own: its system tasks)
