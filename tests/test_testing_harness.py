"""run_deterministic and check_deterministic on plain trio and anyio code."""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import types
from typing import Any

import anyio
import pytest
import trio
import trio.lowlevel
from trio._core import _run as trio_run

from trioflow.testing import (
    DeterministicRun,
    NonDeterminismError,
    TraceEvent,
    check_deterministic,
    run_deterministic,
)


async def lost_update(workers: int = 2) -> int:
    """Each worker reads a counter, awaits, writes it back plus one: updates get lost."""
    state = {"n": 0}

    async def inc() -> None:
        value = state["n"]
        await trio.lowlevel.checkpoint()
        state["n"] = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(inc)
    return state["n"]


async def staggered() -> list[str]:
    """Tasks sleep different virtual times and record the order they finish in."""
    order: list[str] = []

    async def worker(name: str, delay: float) -> None:
        await trio.sleep(delay)
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name, delay in [("c", 3), ("a", 1), ("b", 2)]:
            nursery.start_soon(worker, name, delay)
    return order


def test_fifo_is_the_default_and_time_is_virtual() -> None:
    result = run_deterministic(staggered)
    assert isinstance(result, DeterministicRun)
    assert result.value == ["a", "b", "c"]
    assert result.virtual_time == 3.0
    assert result.decisions == ()
    assert result.steps > 0


@pytest.mark.parametrize("seed", range(5))
def test_same_seed_same_everything(seed: int) -> None:
    first = run_deterministic(lost_update, 3, seed=seed)
    second = run_deterministic(lost_update, 3, seed=seed)
    assert first == second  # value, virtual time, decisions, trace and step count


@pytest.mark.parametrize("seed", range(5))
def test_decisions_replay_the_run_exactly(seed: int) -> None:
    first = run_deterministic(lost_update, 3, seed=seed)
    replay = run_deterministic(lost_update, 3, schedule=first.decisions)
    assert replay == first


def test_schedules_reach_different_interleavings() -> None:
    values = {run_deterministic(lost_update, schedule=s).value for s in ([], [1], [2])}
    assert values == {1, 2}


def test_trace_names_tasks_deterministically() -> None:
    trace = run_deterministic(staggered).trace
    assert all(isinstance(event, TraceEvent) for event in trace)
    assert not any("0x" in event.task for event in trace)
    spawns = [e.task for e in trace if e.kind == "spawn"]
    assert spawns[0] == f"{__name__}.staggered#0"
    assert spawns[1:] == [f"{__name__}.staggered.<locals>.worker#{i}" for i in (1, 2, 3)]
    exits = [(e.time, e.task) for e in trace if e.kind == "exit"]
    assert [t for t, _ in exits] == [1.0, 2.0, 3.0, 3.0]


def test_a_dropped_runs_trace_is_freed_at_once_not_by_the_cycle_collector() -> None:
    # trio's runner is cyclic garbage once a run is over, and it refers to the
    # harness's controller: a trace the controller still held would wait for
    # the cycle collector, which then runs about twice as often in a fuzzing loop
    gc.collect()
    gc.disable()
    try:
        ran = run_deterministic(staggered)
        raw = ran.trace._raw  # type: ignore[attr-defined]
        del ran
        holders = [o for o in gc.get_referrers(raw) if not isinstance(o, types.FrameType)]
        assert holders == []
    finally:
        gc.enable()


def test_a_finished_run_leaves_the_cycle_collector_nothing_of_the_harness() -> None:
    # the run's tasks keep the engine hooks in their contexts, and the thread jobs
    # point back at the controller: both let go of it once the run is over, so a
    # fuzzing loop frees each run's controller (its lists, its waits) at once
    import trioflow

    flow = trioflow.Flow("contended")
    for name in "abcd":

        async def step() -> None:
            for _ in range(3):
                await trio.lowlevel.checkpoint()

        flow.add(step, name=name)
    gc.collect()
    gc.disable()
    try:
        check_deterministic(functools.partial(flow.run, max_concurrent=2), runs=20, strategy="pct")
        left = [o for o in gc.get_objects() if type(o).__module__.startswith("trioflow.testing")]
        # (only the emptied hooks, which the tasks' contexts still hold)
        assert {type(o).__name__ for o in left} <= {"EngineHooks"}
        assert all(getattr(o, name) is None for o in left for name in o.__slots__)
    finally:
        gc.enable()


def test_anyio_code_runs_on_the_trio_backend() -> None:
    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 5)
            with anyio.move_on_after(2):
                await anyio.sleep_forever()
        return anyio.current_time()

    result = run_deterministic(main, seed=1)
    assert result.value == result.virtual_time == 5.0


def test_fn_exception_is_raised_as_it_is_with_a_replay_note() -> None:
    async def fails() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 1)
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing") as info:
        run_deterministic(fails, schedule=[1])
    assert type(info.value) is KeyError
    assert any("replay this run with schedule=" in note for note in info.value.__notes__)


def test_trio_state_is_restored_after_success_and_error() -> None:
    before = (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING)
    run_deterministic(lost_update, seed=3)
    assert (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING) == before

    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_deterministic(fails)
    assert (trio_run._r, trio_run._ALLOW_DETERMINISTIC_SCHEDULING) == before


def test_an_instrument_added_during_a_run_sees_every_step() -> None:
    # the harness calls its own hooks once per batch; an instrument of the
    # program's own is still called for every task step, as trio calls it
    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.before = 0
            self.after = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.before += 1

        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            self.after += 1

    steps = Steps()

    async def counted() -> int:
        trio.lowlevel.add_instrument(steps)
        try:
            return await lost_update(workers=4)
        finally:
            trio.lowlevel.remove_instrument(steps)

    for seed in (None, 1, 2):
        steps.before = steps.after = 0
        result = run_deterministic(counted, seed=seed)
        assert result.value in (1, 2, 3, 4)
        worker_steps = sum(1 for e in result.trace if e.kind == "step" and ".inc#" in e.task)
        assert worker_steps == 4 * 2
        # each worker step, the main task's steps while it is added, trio's own
        assert steps.before == steps.after >= worker_steps + 1


def test_plain_trio_runs_still_work_afterwards() -> None:
    run_deterministic(lost_update, seed=0)
    assert trio.run(lost_update) in (1, 2)


def test_calling_it_inside_a_trio_run_is_refused() -> None:
    async def nested() -> None:
        run_deterministic(lost_update)

    with pytest.raises(RuntimeError, match="from inside a running trio loop"):
        run_deterministic(nested)


def test_a_concurrent_run_from_another_thread_is_refused() -> None:
    async def from_a_thread() -> None:
        await trio.to_thread.run_sync(run_deterministic, lost_update)

    with pytest.raises(RuntimeError, match="already running: it replaces trio's process-wide"):
        run_deterministic(from_a_thread)


def test_a_coroutine_object_is_a_type_error_that_shows_the_fix() -> None:
    coro = lost_update()
    with pytest.raises(TypeError, match=r"got the coroutine object .*pass the function itself"):
        run_deterministic(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("schedule", "error", "match"),
    [
        ("012", TypeError, "schedule must be a sequence of non-negative ints"),
        ([0, -1], ValueError, r"got -1 in \[0, -1\]"),
        ([0.5], ValueError, "got 0.5"),
    ],
)
def test_bad_schedules_are_rejected(schedule: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        run_deterministic(lost_update, schedule=schedule)


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"grace": -1}, "grace must be a finite number"),
        ({"max_steps": 0}, "max_steps must be a positive int"),
        ({"max_virtual_time": 0}, "max_virtual_time must be a positive number"),
        ({"seed": "1"}, "seed must be an int or None"),
    ],
)
def test_bad_options_are_rejected(option: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        run_deterministic(lost_update, **option)


def test_a_schedule_longer_than_needed_is_fine_and_exhausted_ones_continue_fifo() -> None:
    assert run_deterministic(lost_update, schedule=[2] * 100).value in (1, 2)
    assert (
        run_deterministic(lost_update, schedule=[0]).value == run_deterministic(lost_update).value
    )


def test_check_deterministic_returns_the_common_value() -> None:
    assert check_deterministic(staggered, runs=20) == ["a", "b", "c"]


def test_check_deterministic_finds_a_lost_update_with_replayable_schedules() -> None:
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(lost_update, runs=50)
    error = info.value
    assert error.expected_schedule == ()
    assert error.expected == run_deterministic(lost_update, schedule=[]).value
    assert error.got != error.expected
    assert run_deterministic(lost_update, schedule=error.schedule).value == error.got
    assert "the first difference is value is" in str(error)
    assert isinstance(error, AssertionError)


def test_check_deterministic_compares_virtual_end_times() -> None:
    async def timing_depends_on_order() -> None:
        first: list[int] = []

        async def worker(i: int) -> None:
            await trio.lowlevel.checkpoint()
            first.append(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
        await trio.sleep(first[0] + 1)

    with pytest.raises(NonDeterminismError, match=r"the virtual end time: 1\.0 vs 2\.0"):
        check_deterministic(timing_depends_on_order, runs=50)


def test_check_deterministic_reports_a_schedule_that_raises() -> None:
    async def sometimes_fails() -> int:
        n = await lost_update()
        if n == 2:
            raise ValueError("two")
        return n

    with pytest.raises(
        NonDeterminismError, match="returned under the FIFO schedule but raised"
    ) as info:
        check_deterministic(sometimes_fails, runs=50)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="two"):
        run_deterministic(sometimes_fails, schedule=info.value.schedule)


def test_check_deterministic_raises_the_fifo_runs_own_error() -> None:
    async def always_fails() -> None:
        raise LookupError("always")

    with pytest.raises(LookupError, match="always"):
        check_deterministic(always_fails, runs=3)


def test_keyword_arguments_through_partial() -> None:
    result = run_deterministic(functools.partial(lost_update, workers=4))
    assert result.value == 1
    assert result.trace[0].task == f"{__name__}.lost_update#0"


def test_importing_trioflow_testing_does_not_import_hypothesis() -> None:
    code = "import sys, trioflow.testing; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_hypothesis_strategies_without_hypothesis_say_what_to_install() -> None:
    # (None in sys.modules makes the import fail as if Hypothesis were not installed)
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n    import trioflow.testing.strategies\n"
        "except ModuleNotFoundError as exc:\n    print(exc.name); print(exc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, message = out.stdout.strip().split("\n")
    assert name == "hypothesis"
    assert "python -m pip install 'trioflow[testing]'" in message


def test_flows_run_directly_and_are_deterministic() -> None:
    import trioflow

    flow = trioflow.Flow("fan")

    @flow.step
    async def numbers(n: int) -> list[int]:
        await trio.sleep(1)
        return list(range(n))

    @flow.step(map_over="numbers", max_concurrent=2)
    async def square(numbers: int) -> int:
        await trio.sleep(numbers)
        return numbers * numbers

    result = check_deterministic(flow.run, {"n": 4}, runs=30)
    assert result["square"] == [0, 1, 4, 9]
    assert result.duration == 1 + 4  # items 0 and 1, then 2 (at 1 s) and 3 (at 2 s)
    assert run_deterministic(flow.run, {"n": 4}, seed=5).value == result


def test_all_is_sorted_and_complete() -> None:
    import trioflow.testing

    public = {name for name in vars(trioflow.testing) if not name.startswith("_")}
    public -= {"annotations"}
    public = {n for n in public if not isinstance(getattr(trioflow.testing, n), type(sys))}
    assert trioflow.testing.__all__ == sorted(trioflow.testing.__all__)
    assert set(trioflow.testing.__all__) == public
