"""Issue 10 item 5: worker-thread calls are scheduling decisions under the harness."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread
import pytest
import trio
import trio.lowlevel

from trioflow.testing import (
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)


def test_the_clock_does_not_jump_past_thread_work() -> None:
    async def main() -> str:
        with trio.move_on_after(5) as scope:
            await trio.to_thread.run_sync(time.sleep, 0.05)
        return "timed out" if scope.cancelled_caught else "done"

    result = run_deterministic(main)
    assert (result.value, result.virtual_time) == ("done", 0.0)
    assert check_deterministic(main, runs=20) == "done"


async def race() -> int:
    state = {"n": 0}

    def add_in_thread() -> None:
        time.sleep(0.001)
        state["n"] += 1

    async def add_in_task() -> None:
        value = state["n"]
        await trio.lowlevel.checkpoint()
        state["n"] = value + 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, add_in_thread)
        nursery.start_soon(add_in_task)
        nursery.start_soon(anyio.to_thread.run_sync, add_in_thread)
    return state["n"]


def test_thread_calls_are_choices_of_a_batch_and_replay_exactly() -> None:
    values = set()
    for seed in range(30):
        first = run_deterministic(race, seed=seed)
        values.add(first.value)
        for _ in range(9):
            assert run_deterministic(race, schedule=first.decisions) == first
    assert values == {2, 3}  # the task's update is lost when a thread call runs in between


def test_a_thread_race_found_by_check_deterministic_names_the_thread_calls() -> None:
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(race, runs=200)
    replay = failing_schedule(info.value)
    assert replay is not None
    assert replay.threads == 2
    assert run_deterministic(race, schedule=replay.schedule).value == info.value.got


def test_a_decision_point_lists_waiting_thread_calls_by_name() -> None:
    seen: list[tuple[str, ...]] = []

    class Spy:
        def start_run(self, run: int) -> None:
            pass

        def decide(self, point: object) -> int:
            seen.append(point.choices)  # type: ignore[attr-defined]
            return 0

        def end_run(self, decisions: object, steps: int) -> None:
            pass

    run_deterministic(race, strategy=Spy())
    assert any(c.startswith("thread:") for choices in seen for c in choices)


def test_a_cancelled_thread_call_that_abandons_its_thread_is_fine() -> None:
    async def main() -> str:
        with trio.move_on_after(1):
            await trio.to_thread.run_sync(time.sleep, 0.01, abandon_on_cancel=True)
        await trio.sleep(2)
        return "ok"

    assert check_deterministic(main, runs=10) == "ok"


def test_a_thread_that_calls_back_into_trio_runs_in_turn_and_replays() -> None:
    # issue 10 (second corpus): a call back is run by its task at a step of the
    # schedule, the thread's pieces between call backs are atomic; no real time passes
    async def main() -> int:
        def in_thread() -> int:
            first = trio.from_thread.run_sync(lambda: 40)
            trio.from_thread.run(trio.sleep, 3)
            return first + trio.from_thread.run_sync(lambda: 1) + 1

        value = await trio.to_thread.run_sync(in_thread)
        if value == 42:
            raise ValueError("called back")
        return value

    with pytest.raises(ValueError, match="called back") as info:
        run_deterministic(main)
    assert not any("uncontrolled" in note for note in info.value.__notes__)
    replay = failing_schedule(info.value)
    assert replay is not None
    assert replay.threads == 1
    for _ in range(5):
        with pytest.raises(ValueError, match="called back"):
            run_deterministic(main, schedule=replay.schedule)

    async def timed() -> float:
        try:
            await main()
        except ValueError:
            pass
        return trio.current_time()

    runs = {(r.value, r.virtual_time) for r in (run_deterministic(timed) for _ in range(5))}
    assert runs == {(3.0, 3.0)}  # the sleep the thread asked for, and no real time


def test_threads_outside_a_harness_run_are_untouched() -> None:
    seen: list[str] = []

    async def main() -> None:
        await trio.to_thread.run_sync(lambda: seen.append(threading.current_thread().name))

    run_deterministic(main)
    trio.run(main)
    assert len(seen) == 2
    assert all(name != threading.main_thread().name for name in seen)


def test_thread_calls_run_in_parallel_when_chosen_and_the_failure_says_so() -> None:
    async def two_threads() -> int:
        state = {"n": 0}

        def add() -> None:
            value = state["n"]
            time.sleep(0.01)
            state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, add)
            nursery.start_soon(trio.to_thread.run_sync, add)
        return state["n"]

    assert run_deterministic(two_threads).value == 2  # FIFO: one after the other
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(two_threads, runs=300)
    assert info.value.got == 1
    assert "in parallel" in str(info.value)
    assert "may not reproduce a race between them" in str(info.value)


def test_a_thread_waiting_for_a_later_thread_call_is_let_go_not_hung() -> None:
    async def handshake() -> str:
        ready = threading.Event()

        def waiter() -> str:
            return "ok" if ready.wait(10) else "timed out"

        results: list[str] = []

        async def first() -> None:
            results.append(await trio.to_thread.run_sync(waiter))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.sleep(1)
            await trio.to_thread.run_sync(ready.set)
        return results[0]

    # the waiter holds the loop for a second, then runs uncontrolled while
    # virtual time follows real time, so the sleep ends and sets the event
    result = run_deterministic(handshake)
    assert result.value == "ok"
    assert 1.0 <= result.virtual_time < 9.0


def test_steps_on_the_thread_runner_are_decisions_and_show_in_the_trace() -> None:
    import trioflow

    def make_flow(shared: bool) -> trioflow.Flow:
        flow = trioflow.Flow("threads")
        state = {"n": 0}

        @flow.step(runner="thread")
        def in_thread() -> int:
            if shared:
                state["n"] += 1
            return 1

        @flow.step
        async def in_task() -> int:
            if shared:
                value = state["n"]
                await trio.lowlevel.checkpoint()
                state["n"] = value + 1
            return 1

        @flow.step
        async def total(in_thread: int, in_task: int) -> int:
            return state["n"] if shared else in_thread + in_task

        return flow

    async def run(shared: bool) -> int:
        return (await make_flow(shared).run())["total"]

    assert check_deterministic(run, False, runs=100) == 2
    result = run_deterministic(run, False)
    threads = [e.task for e in result.trace if e.kind == "thread"]
    assert len(threads) == 1
    assert threads[0].startswith("thread:")  # anyio's wrapper around the step's call
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(run, True, runs=300)
    assert {info.value.expected, info.value.got} == {1, 2}


def test_virtual_time_follows_real_time_while_a_task_waits_for_a_subprocess() -> None:
    import sys

    async def main() -> tuple[str, float]:
        with trio.move_on_after(5) as scope:
            await trio.run_process([sys.executable, "-c", "import time; time.sleep(0.3)"])
        waited = trio.current_time()
        await trio.sleep(100)  # no I/O any more: the clock jumps again
        return ("timed out" if scope.cancelled_caught else "done"), trio.current_time() - waited

    result = run_deterministic(main)
    assert result.value[0] == "done"
    assert abs(result.value[1] - 100.0) < 0.05  # (a moment of real time before the jump)
    assert 0.3 <= result.virtual_time - 100 < 5
