"""Issue 9 item 1: what happens at one virtual instant does not depend on the schedule.

Async tests run on trio (virtual time) and on asyncio (real time).
``check_deterministic`` tries the schedules of trio's harness.
"""

from __future__ import annotations

from typing import Any

import anyio

import trioflow
from trioflow.testing import check_deterministic

TICK = 0.01  # seconds: virtual on trio, real on asyncio

Outcome = tuple[Any, ...]


# -- the hand-over of a slot freed while another unit ends at the same instant ----------


async def _handover_timeline() -> Outcome:
    """s0 and s1 end together and free both slots; s0 makes s2 and s3 ready, more
    urgent than s4 (ready from the start): they take the slots, whichever end
    the async library runs first."""
    flow = trioflow.Flow("handover")

    async def sleeper() -> None:
        await anyio.sleep(TICK)

    @flow.step
    async def s0() -> None:
        await sleeper()

    @flow.step
    async def s1() -> None:
        await sleeper()

    @flow.step
    async def s2(s0: None) -> None:
        await sleeper()

    @flow.step
    async def s3(s0: None) -> None:
        await sleeper()

    @flow.step
    async def s4() -> None:
        await sleeper()

    result = await flow.run(max_concurrent=2)
    return tuple((name, step.started_at) for name, step in result.steps.items())


def test_issue9_item1_check_deterministic_passes_on_a_slot_freed_as_another_unit_ends() -> None:
    assert check_deterministic(_handover_timeline, runs=40) == (
        ("s0", 0.0),
        ("s1", 0.0),
        ("s2", TICK),
        ("s3", TICK),
        ("s4", 2 * TICK),
    )
