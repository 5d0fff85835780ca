"""Worker-thread calls as scheduling decisions.

Under the harness, ``trio.to_thread.run_sync`` (and anything built on it, such
as ``anyio.to_thread.run_sync`` on trio) does not start its thread when
called. The call waits, as a *choice* of the next batch decisions, until the
schedule picks it, or until no task can run; then it runs in a real worker
thread while the event loop waits for it, and its result reaches its task at
once. So a thread call is one atomic step at a point the schedule chooses:
the virtual clock cannot jump while thread work is pending, races between a
thread and the tasks are explored like any other interleaving, and the run
replays exactly.

When two or more calls wait, one more choice runs them all at once, in
parallel: that is how races *between* threads are found, though what they do
inside is up to the operating system, so a failure of such a run says that
its replay may not reproduce it.

A thread that calls back into trio (``trio.from_thread.run``) cannot run as
one atomic step, since the loop would have to run its callback, nor can one
that waits for another thread call that has not started: the harness notices
the callback, or gives up after ``_ATOMIC_LIMIT`` seconds, and lets the loop
run on while the thread works, with the virtual clock running at the rate of
real time (it neither jumps past the thread's work nor stands still while
the thread may wait for the tasks) until the thread ends; it counts the call
as *uncontrolled*, and a failure of such a run says that its replay may not
be exact.

The only private name used is ``trio._threads.start_thread_soon``, the
function ``to_thread_run_sync`` looks up when it starts a thread (see
``tests/test_canary.py``).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import outcome
import trio
import trio.lowlevel
from trio import _threads as _trio_threads

if TYPE_CHECKING:
    from ._control import Controller

__all__ = ["ThreadJobs", "install_thread_hook", "restore_thread_hook"]

_HOOK: Final = "start_thread_soon"
_original_start: Final[Callable[..., None]] = getattr(_trio_threads, _HOOK)
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")
#: Seconds of real time between checks on an atomic thread call.
_POLL: Final = 0.005
#: Seconds of real time after which a thread call no longer holds the loop.
_ATOMIC_LIMIT: Final = 1.0


@attrs.define(eq=False)
class ThreadJob:
    """One waiting ``to_thread.run_sync`` call."""

    label: str
    fn: Callable[[], Any]
    deliver: Callable[[outcome.Outcome[Any]], object]
    name: str | None
    free: bool = False
    result: outcome.Outcome[Any] | None = None
    done: threading.Event = attrs.Factory(threading.Event)


class ThreadJobs:
    """The thread calls of one deterministic run."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.pending: list[ThreadJob] = []
        self.free = 0  # uncontrolled calls still running
        self.started = 0
        self.uncontrolled = 0
        self.parallel = 0  # decisions that ran several thread calls at once
        self.lock = threading.Lock()

    def submit(
        self, fn: Callable[[], Any], deliver: Callable[[outcome.Outcome[Any]], object], name: str | None
    ) -> None:
        what = (name or "thread").split(" from ")[0]
        label = f"thread:{_ADDRESS.sub('', what)}#{self.started}"
        self.started += 1
        self.pending.append(ThreadJob(label, fn, deliver, name))

    def run(self, jobs: Sequence[ThreadJob]) -> None:
        """Run *jobs* in worker threads (in parallel if several) while the loop waits.

        Their results are delivered at once, in the order given. A job that
        calls back into trio, or takes longer than ``_ATOMIC_LIMIT`` seconds
        (it may wait for a thread that has not started), is let go on while
        the loop runs, uncontrolled, with the clock frozen until it ends.
        """
        controller = self.controller
        for job in jobs:
            self.pending.remove(job)
            controller._trace.append((controller._now(), "thread", job.label, ""))
        if len(jobs) > 1:
            self.parallel += 1
        token = trio.lowlevel.current_trio_token()
        # parallel calls start at the same moment, so that they overlap
        start = threading.Barrier(len(jobs)) if len(jobs) > 1 else None
        baseline = trio.lowlevel.current_statistics().run_sync_soon_queue_size
        for job in jobs:

            def deliver_here(result: outcome.Outcome[Any], job: ThreadJob = job) -> None:
                with self.lock:
                    if not job.free:
                        job.result = result
                        job.done.set()
                        return
                token.run_sync_soon(self._free_done, job, result)

            _original_start(_together(job.fn, start), deliver_here, job.name)
        began = time.perf_counter()
        waiting = list(jobs)
        while waiting:
            waiting[0].done.wait(_POLL)
            waiting = [job for job in waiting if not job.done.is_set()]
            if not waiting:
                break
            calls_back = trio.lowlevel.current_statistics().run_sync_soon_queue_size > baseline
            if calls_back or time.perf_counter() - began > _ATOMIC_LIMIT:
                with self.lock:
                    for job in waiting:
                        if job.result is None:
                            job.free = True
                            self.free += 1
                            self.uncontrolled += 1
                if self.free:
                    self._real_time(True)
                    token.run_sync_soon(_nothing)  # no autojump after this wait
                break
        for job in jobs:
            if not job.free:
                assert job.result is not None
                job.deliver(job.result)

    def _real_time(self, on: bool) -> None:
        """While uncontrolled threads run, virtual time passes as real time does."""
        self.real_time_changed()

    def real_time_changed(self) -> None:
        """Set the clock: real time while an uncontrolled thread runs or a task waits for I/O."""
        on = bool(self.free) or self.controller.io_real_time
        clock = self.controller.clock
        if (clock.rate != 0) != on:
            clock.autojump_threshold = math.inf if on else 0
            clock.rate = 1.0 if on else 0.0

    def _free_done(self, job: ThreadJob, result: outcome.Outcome[Any]) -> None:
        self.free -= 1
        if not self.free:
            self._real_time(False)
        job.deliver(result)


def _nothing() -> None:
    pass


def _together(fn: Callable[[], Any], start: threading.Barrier | None) -> Callable[[], Any]:
    if start is None:
        return fn

    def wait_then_run() -> Any:
        try:
            start.wait(timeout=_ATOMIC_LIMIT)
        except threading.BrokenBarrierError:
            pass
        return fn()

    return wait_then_run


def _start_thread_soon(
    fn: Callable[[], Any],
    deliver: Callable[[outcome.Outcome[Any]], object],
    name: str | None = None,
) -> None:
    from ._install import active

    if active:
        controller = active[-1]
        try:
            task = trio.lowlevel.current_task()
        except RuntimeError:
            task = None
        if task is not None and task in controller.labels and controller.error is None:
            controller.threads.submit(fn, deliver, name)
            return
    _original_start(fn, deliver, name)


def install_thread_hook() -> None:
    """Route new worker-thread calls through the harness (while a run is active)."""
    setattr(_trio_threads, _HOOK, _start_thread_soon)


def restore_thread_hook() -> None:
    """Undo :func:`install_thread_hook`."""
    setattr(_trio_threads, _HOOK, _original_start)
