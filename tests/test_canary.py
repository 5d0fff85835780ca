"""Canary: trio's private scheduler internals that trioflow.testing relies on.

If one of these fails after a trio upgrade, ``trioflow.testing`` can no longer
control or observe trio's scheduler the way it does (and, at run time, the
harness refuses with the message of ``trioflow/testing/_canary.py``). Read the
new ``trio/_core/_run.py`` (``unrolled_run``), adapt
``trioflow/testing/_control.py`` and ``_canary.py``, and update this file and
``TESTED_TRIO``. The ``trio_range`` nox session runs this on the oldest and the
newest supported trio.
"""

from __future__ import annotations

import inspect
import random
from collections import deque

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio._core import _run as trio_run

from trioflow.testing import run_deterministic

ADVICE = (
    f" -- trio's scheduler internals changed (trio {trio.__version__}); trioflow.testing relies on them. "
    "Adapt trioflow/testing/_control.py and _canary.py (TESTED_TRIO)."
)


def require(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(what + ADVICE, pytrace=False)


def test_module_global_random_exists() -> None:
    require(
        isinstance(getattr(trio_run, "_r", None), random.Random),
        "trio._core._run._r is no longer a random.Random",
    )


def test_deterministic_scheduling_flag_exists() -> None:
    require(
        isinstance(getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool),
        "trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone or not a bool",
    )


def test_run_loop_sorts_by_counter_then_shuffles_and_pops_from_the_end() -> None:
    source = inspect.getsource(trio_run.unrolled_run)
    for snippet in (
        "batch = list(runner.runq)",
        "if _ALLOW_DETERMINISTIC_SCHEDULING:",
        "batch.sort(key=lambda t: t._counter)",
        "_r.shuffle(batch)",
        "task = batch.pop()",
        'runner.instruments.call("before_io_wait", timeout)',
        # the harness refills the batch list from after_task_step (see Controller.after_task_step)
        "while batch:",
        'runner.instruments.call("after_task_step", task)',
        "runner.deadlines.expire(now)",
    ):
        require(snippet in source, f"unrolled_run no longer contains {snippet!r}")


def test_task_fields_used_by_the_harness() -> None:
    fields = {a.name for a in trio.lowlevel.Task.__attrs_attrs__}  # type: ignore[attr-defined]
    for name in ("_counter", "_next_send", "_next_send_fn", "_abort_func", "_parent_nursery", "coro", "name"):
        require(name in fields, f"trio.lowlevel.Task has no attribute {name!r}")
    require(
        callable(getattr(trio.lowlevel.Task, "_attempt_abort", None)),
        "trio.lowlevel.Task._attempt_abort is gone",
    )
    require(
        callable(getattr(trio.lowlevel.Task, "iter_await_frames", None)),
        "trio.lowlevel.Task.iter_await_frames is gone",
    )


def test_runner_has_a_deque_runq_and_statistics() -> None:
    seen: dict[str, object] = {}

    async def main() -> None:
        runner = trio_run.GLOBAL_RUN_CONTEXT.runner
        seen["runq"] = runner.runq
        stats = trio.lowlevel.current_statistics()
        seen["fields"] = {
            "tasks_runnable",
            "seconds_to_next_deadline",
            "run_sync_soon_queue_size",
            "io_statistics",
        } <= set(dir(stats))

    trio.run(main)
    require(isinstance(seen["runq"], deque), "Runner.runq is no longer a deque")
    require(seen["fields"] is True, "trio.lowlevel.current_statistics() lost a field")


def test_the_shuffle_hook_is_really_called() -> None:
    # a schedule that runs the newest task first must change the outcome
    async def order() -> list[int]:
        seen: list[int] = []

        async def worker(i: int) -> None:
            seen.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)
        return seen

    require(
        run_deterministic(order).value == [0, 1, 2], "FIFO no longer runs the oldest task first"
    )
    require(
        run_deterministic(order, schedule=[3]).value[0] == 2,
        "a schedule decision no longer chooses which task runs",
    )


def test_internals_of_the_thread_runner_clock_and_locks() -> None:
    from trio import _sync as trio_sync
    from trio import _threads as trio_threads

    require(
        callable(getattr(trio_threads, "start_thread_soon", None)),
        "trio._threads.start_thread_soon is gone (to_thread_run_sync no longer looks it up)",
    )
    require(
        "start_thread_soon(worker_fn, deliver_worker_fn_result"
        in inspect.getsource(trio_threads.to_thread_run_sync),
        "to_thread_run_sync no longer starts its thread through start_thread_soon",
    )
    clock = trio.testing.MockClock(autojump_threshold=0)
    require(
        clock._virtual_base == clock.current_time() == 0.0,
        "MockClock._virtual_base no longer holds the virtual time of a clock at rate 0",
    )
    clock.rate = 1.0
    require(clock._rate == 1.0, "MockClock no longer keeps its rate in _rate")
    require(
        "self._owner" in inspect.getsource(trio_sync._LockImpl.acquire_nowait),
        "trio's locks no longer keep their owner in _owner",
    )
    require(
        "_borrowers" in inspect.getsource(trio_sync.CapacityLimiter.acquire_on_behalf_of_nowait),
        "CapacityLimiter no longer keeps its borrowers in _borrowers",
    )
    require(
        "runner.waiting_for_idle" in inspect.getsource(trio_run.unrolled_run),
        "Runner.waiting_for_idle is gone",
    )
    require(
        callable(getattr(trio_run.Deadlines, "next_deadline", None)),
        "Deadlines.next_deadline is gone",
    )
    entry_fields = {a.name for a in trio_run.EntryQueue.__attrs_attrs__}  # type: ignore[attr-defined]
    require(
        {"queue", "idempotent_queue"} <= entry_fields,
        "trio's EntryQueue no longer keeps its callbacks in queue and idempotent_queue",
    )


def test_the_main_task_runs_alone_in_a_nursery_of_its_own() -> None:
    # the harness stops a run by cancelling that nursery's scope (see _harness._main)
    async def main() -> bool:
        task = trio.lowlevel.current_task()
        nursery = task.parent_nursery
        return nursery is not None and nursery.child_tasks == frozenset({task})

    require(trio.run(main), "trio no longer runs the main task alone in a nursery of its own")


def test_internals_of_the_instrument_table_conditions_and_semaphores() -> None:
    # the harness puts its own instrument table in the runner for each run, and
    # its wait-for graph reads where Condition and Semaphore waiters are parked
    from trio import _sync as trio_sync
    from trio._core import _instrumentation

    seen: dict[str, object] = {}

    async def main() -> None:
        seen["table"] = trio_run.GLOBAL_RUN_CONTEXT.runner.instruments

    trio.run(main)
    table = seen["table"]
    require(
        isinstance(getattr(table, "data", table), dict),
        "Runner.instruments is no longer a dict of hook names (or a UserDict of one)",
    )
    for name in ("add_instrument", "remove_instrument", "call"):
        require(callable(getattr(_instrumentation.Instruments, name, None)), f"Instruments.{name} is gone")
    require(hasattr(_instrumentation, "INSTRUMENT_LOGGER"), "INSTRUMENT_LOGGER is gone")
    require(
        'if "after_task_step" in runner.instruments:' in inspect.getsource(trio_run.unrolled_run),
        "unrolled_run no longer asks its instrument table before after_task_step",
    )
    require(
        "self._lot.repark(self._lock._lot" in inspect.getsource(trio_sync.Condition.notify),
        "Condition.notify no longer moves waiters to its lock's parking lot",
    )
    require(
        "self._parked[task]" in inspect.getsource(trio.lowlevel.ParkingLot.park),
        "ParkingLot no longer keeps its tasks in _parked",
    )
    require(
        "await self._lot.park()" in inspect.getsource(trio_sync.Semaphore.acquire),
        "Semaphore.acquire no longer parks on _lot",
    )


def test_the_waits_the_wait_for_graph_looks_at_have_known_abort_functions() -> None:
    # The harness looks for a cycle only among tasks whose abort function is a
    # ParkingLot's (locks, limiters, conditions) or a nursery's wait for its children.
    from trioflow.testing._waitfor import GRAPH_WAITS

    lock, limiter, condition = trio.Lock(), trio.CapacityLimiter(1), trio.Condition()
    tasks: dict[str, trio.lowlevel.Task] = {}
    aborts: dict[str, object] = {}

    async def wait_on(name: str, what: trio.Lock | trio.CapacityLimiter) -> None:
        tasks[name] = trio.lowlevel.current_task()
        async with what:
            pass

    async def wait_for_notify() -> None:
        tasks["condition"] = trio.lowlevel.current_task()
        async with condition:
            await condition.wait()

    async def wait_for_children() -> None:
        tasks["children"] = trio.lowlevel.current_task()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)

    async def sleep() -> None:
        tasks["sleep"] = trio.lowlevel.current_task()
        await trio.sleep_forever()

    async def main() -> None:
        async with lock, limiter, trio.open_nursery() as nursery:
            nursery.start_soon(wait_on, "lock", lock)
            nursery.start_soon(wait_on, "limiter", limiter)
            nursery.start_soon(wait_for_notify)
            nursery.start_soon(wait_for_children)
            nursery.start_soon(sleep)
            await trio.testing.wait_all_tasks_blocked()
            aborts.update((name, task._abort_func) for name, task in tasks.items())
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert sorted(aborts) == ["children", "condition", "limiter", "lock", "sleep"]
    for name, abort in aborts.items():
        code = getattr(abort, "__code__", None)
        if name == "sleep":
            require(code not in GRAPH_WAITS, "a sleeping task's abort function counts as a ParkingLot's")
        else:
            require(
                code in GRAPH_WAITS,
                f"a task waiting on a {name} has an abort function that the wait-for graph does not "
                f"know (trioflow.testing._waitfor.GRAPH_WAITS)",
            )


def test_asyncio_loop_internals_used_by_the_asyncio_backend() -> None:
    import asyncio.base_events

    source = inspect.getsource(asyncio.base_events.BaseEventLoop._run_once)
    for snippet in ("self._scheduled", "self._ready", "self._selector.select(timeout)", "handle._run()"):
        require(snippet in source, f"asyncio's BaseEventLoop._run_once no longer contains {snippet!r}")


# -- issue 11 item 10: the harness checks these itself, when it is used -------------------


def test_issue_11_item_10_the_installed_trio_passes_the_harness_canary() -> None:
    from trioflow.testing import _canary

    assert _canary.problems() == []
    _canary.check_trio()


def test_issue_11_item_10_a_changed_trio_is_refused_with_the_supported_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trioflow.testing import _canary

    monkeypatch.setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None)
    _canary._checked.cache_clear()
    try:
        found = _canary.problems()
        assert found == ["trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone or not a bool"]

        async def nothing() -> int:
            return 1

        with pytest.raises(_canary.UnsupportedTrioError) as info:
            run_deterministic(nothing)
        message = str(info.value)
        assert message.startswith(
            f"trioflow.testing cannot drive the scheduler of the installed trio {trio.__version__}: "
            f"trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone or not a bool. The "
            f"deterministic harness is tested with trio {_canary.TESTED_TRIO[0]} to "
            f"{_canary.TESTED_TRIO[1]}"
        )
        assert isinstance(info.value, RuntimeError)
    finally:
        monkeypatch.undo()
        _canary._checked.cache_clear()
    assert run_deterministic(nothing).value == 1  # flows and the harness work again
