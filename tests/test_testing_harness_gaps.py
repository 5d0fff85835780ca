"""Issue 10: what the second corpus showed the harness missed, each fixed and pinned here.

* A failure found in a run that ran worker-thread calls in parallel could not
  replay exactly (how they interleave is up to the operating system):
  ``check_deterministic`` now looks for a schedule that runs them one after
  another and fails the same way, and reports that one.
* A lock taken through a wrapper that parks on the trio lock's queue itself
  (anyio's ``Lock(fast_acquire=True)``) was not in the wait-for graph, so a
  lock-order deadlock beside a ticking task ran to the step budget.
* PCT's strict priorities starved forever a task that a polling loop waits
  for (``while not ready: await trio.sleep(0)``), so a correct program ran to
  the step budget (a false positive): PCT is now fair after a bounded number
  of decisions.
* The bounded search's queue held one whole schedule per pending choice, so
  its memory grew with the square of the run length: it now keeps one record
  per run, with a cap.

A thread calling back into trio ran uncontrolled, in real time, so even a
correct program's virtual end time differed between runs (a false positive):
``tests/test_testing_threads.py`` pins that such calls now run in turn. For
the same reason (virtual time following real time while a task waits for a
subprocess or a socket), ``check_deterministic`` compared end times that
include real durations, and flagged every correct program that runs a
subprocess: such runs are now compared by value only.
"""

from __future__ import annotations

import sys
import threading
import time

import anyio
import pytest
import trio
import trio.lowlevel

from trioflow.testing import (
    DeadlockError,
    DecisionPoint,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)
from trioflow.testing._strategy import PCT, Bounded


class ThreadsInParallel:
    """Runs waiting thread calls all at once whenever it can, else FIFO."""

    def start_run(self, run: int) -> None:
        pass

    def decide(self, point: DecisionPoint) -> int:
        if point.choices and point.choices[-1].startswith("threads:all"):
            return len(point.choices)
        return 0

    def end_run(self, decisions: object, steps: int) -> None:
        pass


async def write_then_read() -> str:
    box: dict[str, str] = {}

    def write() -> None:
        time.sleep(0.05)  # in parallel, the read always comes first
        box["v"] = "written"

    def read() -> str:
        return box.get("v", "missing")

    got: list[str] = []

    async def reader() -> None:
        got.append(await trio.to_thread.run_sync(read))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, write)
        nursery.start_soon(reader)
    return got[0]


def test_a_failure_of_thread_calls_run_in_parallel_is_reported_with_a_serial_schedule() -> None:
    assert run_deterministic(write_then_read).value == "written"  # FIFO: the oldest call first
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(write_then_read, runs=2, strategy=ThreadsInParallel())
    error = info.value
    assert error.run == 1
    assert error.got == "missing"
    assert "runs them one after another and fails the same way" in str(error)
    replay = failing_schedule(error)
    assert replay is not None
    for _ in range(10):
        again = run_deterministic(write_then_read, schedule=replay.schedule)
        assert again.value == "missing"


async def ticker() -> None:
    beats = 0
    while True:
        await trio.sleep(1)
        beats += 1


def fast_locks(ordered: bool) -> object:
    async def main() -> str:
        a, b = anyio.Lock(fast_acquire=True), anyio.Lock(fast_acquire=True)

        async def one() -> None:
            async with a:
                await trio.lowlevel.checkpoint()
                async with b:
                    pass

        async def two() -> None:
            first, second = (a, b) if ordered else (b, a)
            async with first:
                await trio.lowlevel.checkpoint()
                async with second:
                    pass

        async with trio.open_nursery() as outer:
            outer.start_soon(ticker)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                nursery.start_soon(two)
            outer.cancel_scope.cancel()
        return "done"

    return main


def test_a_lock_order_deadlock_through_anyio_fast_locks_is_a_cycle_beside_a_ticker() -> None:
    with pytest.raises(DeadlockError) as info:
        # FIFO: both take their first lock in the first batch
        run_deterministic(fast_locks(False), max_steps=5000)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("deadlock: 2 tasks wait for each other in a cycle")
    assert message.count("holds a trio.Lock wanted by") == 2
    assert "ticker" not in message
    assert check_deterministic(fast_locks(True), runs=100, max_steps=5000) == "done"  # type: ignore[arg-type]


async def many_steps() -> int:
    total = [0]

    async def worker() -> None:
        for _ in range(20):
            total[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(worker)
    return total[0]


def test_the_bounded_search_keeps_a_record_per_run_and_caps_what_it_keeps() -> None:
    strategy = Bounded(max_pending=50)
    for _ in range(30):
        run_deterministic(many_steps, strategy=strategy)
        assert strategy.pending <= 50
        assert strategy.pending == sum(record.left() for record in strategy.queue)
    assert strategy.truncated
    assert len(strategy.queue) <= 30
    # uncapped, it enumerates the same schedules in the same order as before, one per run
    first, second = Bounded(), Bounded()
    seen = [run_deterministic(many_steps, strategy=first).decisions for _ in range(40)]
    assert seen == [run_deterministic(many_steps, strategy=second).decisions for _ in range(40)]
    assert len(set(seen)) == len(seen)
    assert not first.truncated


async def polls_until_ready() -> int:
    ready = [False]
    polls = [0]

    async def setter() -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        ready[0] = True

    async def poller() -> None:
        while not ready[0]:
            polls[0] += 1
            await trio.sleep(0)  # noqa: ASYNC115 (the polling loop is the point)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(setter)
        nursery.start_soon(poller)
    return 1


def test_pct_is_fair_after_a_bound_so_a_correct_polling_loop_is_not_flagged() -> None:
    assert check_deterministic(polls_until_ready, runs=60, strategy="pct") == 1
    # depth 1, the poller first: strict priorities alone would never run the setter again
    strategy = PCT(seed=0, depth=1)
    went_fair = 0
    for _ in range(6):
        result = run_deterministic(polls_until_ready, strategy=strategy)
        went_fair += strategy.went_fair
        assert result.value == 1
        assert strategy.length < PCT.MIN_UNFAIR  # a starving run is no run length
    assert went_fair >= 1


def test_a_deadlock_while_a_thread_waits_for_its_call_back_ends_the_run_cleanly() -> None:
    # the call back never returns; the harness reports the deadlock, cancels the
    # call back, and the thread (told it was cancelled) ends: no hang, no stray thread
    finished = threading.Event()

    async def stuck() -> None:
        def in_thread() -> None:
            try:
                trio.from_thread.run(trio.sleep_forever)
            finally:
                finished.set()

        await trio.to_thread.run_sync(in_thread)

    with pytest.raises(DeadlockError, match="every task is blocked"):
        run_deterministic(stuck)
    assert finished.wait(5)


def test_a_correct_program_that_runs_a_subprocess_is_not_flagged_for_its_end_time() -> None:
    # while a task waits for real I/O the clock follows real time, so end times
    # include real durations and differ from run to run: only values are compared
    async def runs_true() -> int:
        await trio.lowlevel.checkpoint()
        done = await trio.run_process([sys.executable, "-c", "pass"])
        return done.returncode

    assert check_deterministic(runs_true, runs=12) == 0
