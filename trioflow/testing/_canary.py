"""The canary: check, when the harness is first used, that trio's internals are as it needs.

trioflow's engine uses trio's public API only and works with any trio in the
range ``pyproject.toml`` allows. The deterministic harness also reaches into
trio's private scheduler (see ``_control.py``). Instead of pinning trio for
everyone, it checks those internals the first time it runs, and refuses with
a clear message (naming the trio versions it was tested with) when they
changed, rather than misbehaving.
"""

from __future__ import annotations

import functools
import inspect
import random
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from .._exceptions import TrioflowError

TESTED_TRIO = ("0.26.2", "0.35.0")
"""The oldest and newest trio releases the harness is tested with (CI runs both)."""

# what the harness relies on in trio/_core/_run.py's unrolled_run
RUN_LOOP_SNIPPETS = (
    "batch = list(runner.runq)",
    "if _ALLOW_DETERMINISTIC_SCHEDULING:",
    "batch.sort(key=lambda t: t._counter)",
    "_r.shuffle(batch)",
    "task = batch.pop()",
    'runner.instruments.call("before_io_wait", timeout)',
    # the batch list refilled from after_task_step (Controller.after_task_step)
    "while batch:",
    'runner.instruments.call("after_task_step", task)',
    'if "after_task_step" in runner.instruments:',
    "runner.deadlines.expire(now)",
    "runner.waiting_for_idle",
    # what a task that waits for the run to settle yields (see _control._Park)
    "elif type(msg) is WaitTaskRescheduled:",
    "task._abort_func = msg.abort_func",
)
TASK_FIELDS = ("_counter", "_next_send", "_next_send_fn", "_abort_func", "_parent_nursery", "coro", "name")
TASK_METHODS = ("_attempt_abort", "iter_await_frames")


class UnsupportedTrioError(TrioflowError, RuntimeError):
    """The installed trio's private scheduler differs from what the harness drives."""


def problems() -> list[str]:
    """What the installed trio lacks, as sentences (empty: the harness can run)."""
    found: list[str] = []
    try:
        from trio._core import _run as trio_run
    except ImportError:  # pragma: no cover - trio moved its run loop
        return ["trio._core._run cannot be imported"]
    if not isinstance(getattr(trio_run, "_r", None), random.Random):
        found.append("trio._core._run._r is no longer a random.Random")
    if not isinstance(getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool):
        found.append("trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone or not a bool")
    try:
        source = inspect.getsource(trio_run.unrolled_run)
    except (AttributeError, OSError, TypeError):
        found.append("the source of trio._core._run.unrolled_run cannot be read")
    else:
        found.extend(
            f"unrolled_run no longer contains {snippet!r}"
            for snippet in RUN_LOOP_SNIPPETS
            if snippet not in source
        )
    fields = {a.name for a in getattr(trio.lowlevel.Task, "__attrs_attrs__", ())}
    found.extend(f"trio.lowlevel.Task has no field {name!r}" for name in TASK_FIELDS if name not in fields)
    found.extend(
        f"trio.lowlevel.Task.{name} is gone"
        for name in TASK_METHODS
        if not callable(getattr(trio.lowlevel.Task, name, None))
    )
    runner = getattr(trio_run, "Runner", None)
    if runner is None or "runq" not in {a.name for a in getattr(runner, "__attrs_attrs__", ())}:
        found.append("trio's Runner has no runq")
    found.extend(_more_problems(trio_run))
    return found


def _source_has(obj: object, snippet: str) -> bool:
    try:
        return snippet in inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False


def _more_problems(trio_run: Any) -> list[str]:
    """The internals of thread calls, the clock, locks, limiters and callbacks the harness uses."""
    found: list[str] = []
    from trio import _sync as trio_sync
    from trio import _threads as trio_threads

    if not _source_has(
        getattr(trio_threads, "to_thread_run_sync", None), "start_thread_soon(worker_fn"
    ) or not callable(getattr(trio_threads, "start_thread_soon", None)):
        found.append("to_thread_run_sync no longer starts threads through trio._threads.start_thread_soon")
    if not _source_has(
        getattr(trio_threads, "_send_message_to_trio", None), "message_to_trio.queue.get()"
    ):
        found.append(
            "trio.from_thread no longer waits for its answer on message_to_trio.queue in "
            "trio._threads._send_message_to_trio"
        )
    clock = trio.testing.MockClock(rate=2.0)
    if not hasattr(clock, "_virtual_base") or getattr(clock, "_rate", None) != 2.0:
        found.append("trio.testing.MockClock no longer keeps its state in _virtual_base and _rate")
    if not _source_has(getattr(getattr(trio_sync, "_LockImpl", None), "acquire_nowait", None), "self._owner"):
        found.append("trio's locks no longer keep their owner in _owner")
    if not _source_has(trio_sync.CapacityLimiter.acquire_on_behalf_of_nowait, "self._borrowers"):
        found.append("trio.CapacityLimiter no longer keeps its borrowers in _borrowers")
    for owner, name in (
        (getattr(trio_run, "Deadlines", None), "next_deadline"),
        (getattr(trio_run, "Nursery", None), "_nested_child_finished"),
        (getattr(trio_run, "CancelStatus", None), "effective_deadline"),
    ):
        if not callable(getattr(owner, name, None)):
            found.append(f"trio's {getattr(owner, '__name__', '?')}.{name} is gone")
    if not _source_has(getattr(getattr(trio_run, "Runner", None), "init", None), "main_task_nursery,"):
        # (the harness stops a run by cancelling that nursery's scope, see _harness._main)
        found.append("trio no longer runs the main task in a nursery of its own (Runner.init)")
    entry = {a.name for a in getattr(getattr(trio_run, "EntryQueue", None), "__attrs_attrs__", ())}
    if not {"queue", "idempotent_queue"} <= entry:
        found.append("trio's EntryQueue no longer keeps callbacks in queue and idempotent_queue")
    found.extend(_instrument_problems(trio_run))
    if not _source_has(trio_sync.Condition.wait, "self._lot.park()") or not _source_has(
        trio_sync.Condition.notify, "self._lot.repark(self._lock._lot"
    ):
        found.append("trio.Condition no longer parks waiters on _lot and reparks them on its lock's _lot")
    if not _source_has(trio_sync.Semaphore.acquire, "await self._lot.park()"):
        found.append("trio.Semaphore.acquire no longer parks on _lot")
    if not _source_has(trio.lowlevel.ParkingLot.park, "self._parked[task]"):
        found.append("trio.lowlevel.ParkingLot no longer keeps its tasks in _parked")
    from ._waitfor import GRAPH_WAITS

    if not (
        _source_has(trio.lowlevel.ParkingLot.park, "wait_task_rescheduled(abort_fn)")
        and _source_has(trio_run.Nursery._nested_child_finished, "wait_task_rescheduled(aborted)")
        and len(GRAPH_WAITS) >= 2
    ):
        found.append(
            "trio's ParkingLot.park and Nursery._nested_child_finished no longer wait with an "
            "abort function of their own"
        )
    return found


def _instrument_problems(trio_run: Any) -> list[str]:
    """The run loop's instrument table, which the harness replaces for each run (see
    ``_install._Instruments``)."""
    from trio._core import _instrumentation

    found: list[str] = []
    runner = getattr(trio_run, "Runner", None)
    if "instruments" not in {a.name for a in getattr(runner, "__attrs_attrs__", ())}:
        found.append("trio's Runner has no instruments table")
    table = getattr(_instrumentation, "Instruments", None)
    if not all(callable(getattr(table, name, None)) for name in ("add_instrument", "remove_instrument", "call")):
        found.append("trio's Instruments lost add_instrument, remove_instrument or call")
    if not hasattr(_instrumentation, "INSTRUMENT_LOGGER"):
        found.append("trio._core._instrumentation.INSTRUMENT_LOGGER is gone")
    if not _source_has(trio_run.Runner.reschedule, '"task_scheduled" in self.instruments'):
        found.append("trio's Runner.reschedule no longer asks its instruments table with `in`")
    return found


@functools.cache
def _checked(version: str) -> tuple[str, ...]:
    return tuple(problems())


def check_trio() -> None:
    """Raise :class:`UnsupportedTrioError` unless the installed trio's internals are as
    the harness needs (checked once per process).

    Raises:
        UnsupportedTrioError: names what changed, the installed trio, and the
            versions the harness is tested with.
    """
    found = _checked(trio.__version__)
    if found:
        raise UnsupportedTrioError(
            f"trioflow.testing cannot drive the scheduler of the installed trio "
            f"{trio.__version__}: {'; '.join(found)}. The deterministic harness is tested with "
            f"trio {TESTED_TRIO[0]} to {TESTED_TRIO[1]}; install one of those "
            f"(python -m pip install 'trio>={TESTED_TRIO[0]},<={TESTED_TRIO[1]}'), or check "
            f"for a newer trioflow. Flows themselves run on this trio."
        )
