"""A worker checks for cancellation between two steps, also when no step awaited
(issue 16: that check is a cheap read of the task's cancel state, not a call)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import trioflow

pytestmark = pytest.mark.anyio


async def test_a_cancel_from_inside_a_step_stops_the_next_step_before_it_starts() -> None:
    started: list[str] = []
    flow = trioflow.Flow("boundaries")
    scope = anyio.CancelScope()

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
    outer = anyio.CancelScope()

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
    with outer:
        with anyio.CancelScope(shield=True):
            result = await flow.run()
    assert started == ["a", "b"]
    assert result["b"] == 2
