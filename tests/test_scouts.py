"""How many tasks a run starts, and how soon a wide fan-out is under way (issue 16).

A step that blocks holds its worker task, so a fan-out of blocking steps needs
a task per step: the scouts double every scheduling batch until each step has
one. A step that ends soon (it only passes a schedule point) gives its worker
back at once: those workers take the next units themselves, and the run starts
far fewer tasks than it has steps. trio's instruments count both.
"""

from __future__ import annotations

import math

import trio
import trio.lowlevel
import trio.testing

import trioflow


class _Counts(trio.abc.Instrument):
    def __init__(self) -> None:
        self.batches = 0  # iterations of trio's run loop
        self.spawned = 0

    def before_io_wait(self, timeout: float) -> None:
        self.batches += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


def _run(flow: trioflow.Flow, counts: _Counts) -> trioflow.RunResult:
    async def main() -> trioflow.RunResult:
        trio.lowlevel.add_instrument(counts)
        return await flow.run()

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _fan_out(yielding: int, blocking: int, started: list[int], when_all: list[int], counts: _Counts) -> trioflow.Flow:
    """``yielding`` steps that pass one schedule point, then ``blocking`` steps
    that wait until every blocking step has started (a barrier)."""
    flow = trioflow.Flow("fan-out")
    gate = trio.Event()

    async def yields() -> int:
        await trio.lowlevel.checkpoint()
        return 1

    async def blocks() -> int:
        started.append(1)
        if len(started) == blocking:
            when_all.append(counts.batches)
            gate.set()
        await gate.wait()
        return 2

    for i in range(yielding):
        flow.add(yields, name=f"y{i}")
    for i in range(blocking):
        flow.add(blocks, name=f"b{i}")
    return flow


def test_a_wide_fan_out_of_blocking_steps_is_under_way_within_log2_batches() -> None:
    counts = _Counts()
    started: list[int] = []
    when_all: list[int] = []
    result = _run(_fan_out(0, 1024, started, when_all, counts), counts)
    assert result.ok
    assert len(started) == 1024
    # the scouts double each batch: 1024 steps have a task each after about 10
    assert when_all[0] <= 2 * math.log2(1024) + 4, when_all


def test_doubling_resumes_once_the_workers_stop_coming_back() -> None:
    # the first steps end soon (their workers come back, so no scout doubles);
    # then every worker blocks, and the scouts double again
    counts = _Counts()
    started: list[int] = []
    when_all: list[int] = []
    result = _run(_fan_out(30, 1000, started, when_all, counts), counts)
    assert result.ok
    assert len(started) == 1000
    assert when_all[0] <= 60, when_all  # (one more scout per batch would take about 1000)


def test_steps_that_only_pass_a_schedule_point_reuse_their_workers() -> None:
    counts = _Counts()
    result = _run(_fan_out(1000, 0, [], [], counts), counts)
    assert result.ok
    assert len(result.outputs) == 1000
    assert counts.spawned < 200, counts.spawned  # (a task per step: 1000)
