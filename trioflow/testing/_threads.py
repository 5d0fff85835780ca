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

import contextlib
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

__all__ = ["ThreadJobs", "install_thread_hook", "restore_thread_hook", "serial_alternatives"]

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
    # a call back into trio (trio.from_thread) is waiting for its answer
    posted: bool = False
    # set by the thread whenever it ends or calls back
    wake: threading.Event = attrs.Factory(threading.Event)


class ThreadJobs:
    """The thread calls of one deterministic run."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.pending: list[ThreadJob] = []
        self.free = 0  # uncontrolled calls still running
        self.started = 0
        self.uncontrolled = 0
        self.parallel = 0  # decisions that ran several thread calls at once
        # virtual time followed real time for a while (I/O, an uncontrolled thread)
        self.followed_real_time = False
        # where: (the index of each such decision, how many calls it ran)
        self.parallel_points: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        """The run is over: let go of the controller, which holds this object (a cycle
        that only the cycle collector would break); what was counted stays readable."""
        del self.controller

    def submit(
        self, fn: Callable[[], Any], deliver: Callable[[outcome.Outcome[Any]], object], name: str | None
    ) -> None:
        what = (name or "thread").split(" from ")[0]
        label = f"thread:{_ADDRESS.sub('', what)}#{self.started}"
        self.started += 1
        self.pending.append(ThreadJob(label, fn, deliver, name))
        # (from a task of the run: the next batch goes through trio's loop, see Controller._slow_path)
        self.controller.refills_left = 0

    def run(self, jobs: Sequence[ThreadJob]) -> bool:
        """Run *jobs* in worker threads (in parallel if several) while the loop waits.

        Returns whether the one job given stopped to call back into trio (see
        :meth:`_until_next`): its task runs the call at a later step.

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
            # (the decision that chose this was the last one taken)
            self.parallel_points.append((len(controller.decisions) - 1, len(jobs)))
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
                        job.wake.set()
                        return
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._free_done, job, result)

            fn = _together(job.fn, start)
            if len(jobs) == 1 and _original_send is not None:
                fn = _calling_back_in_turn(fn, job, self)
            _original_start(fn, deliver_here, job.name)
        if len(jobs) == 1 and _original_send is not None:
            return self._until_next(jobs[0], time.perf_counter(), baseline, token)
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
        return False

    def _until_next(
        self, job: ThreadJob, began: float, baseline: int, token: trio.lowlevel.TrioToken
    ) -> bool:
        """Wait while *job*'s thread runs, until it ends or calls back into trio (True).

        Its end is delivered at once. A call back (``trio.from_thread.run_sync``
        or ``run``) waits for its task to run it, at a step of the schedule
        like any other; the answer lets the thread go on, and the loop waits
        again (see :class:`_Answer`). So a thread that calls back is a chain of
        atomic pieces at points the schedule chooses, with the clock frozen
        during each: its runs replay exactly. A piece that takes longer than
        ``_ATOMIC_LIMIT`` seconds, or that queues a callback some other way,
        lets the thread go on uncontrolled (see :meth:`run`).
        """
        calls_back_since: float | None = None
        while True:
            job.wake.clear()
            if job.done.is_set():
                assert job.result is not None
                job.deliver(job.result)
                return False
            if job.posted:
                job.posted = False
                self.controller._trace.append(
                    (self.controller._now(), "thread", job.label, "calls back")
                )
                return True  # its task runs the call back, in turn; the answer resumes it
            now = time.perf_counter()
            if calls_back_since is None and (
                trio.lowlevel.current_statistics().run_sync_soon_queue_size > baseline
            ):
                calls_back_since = now  # (its from_thread call says so in a moment)
            if now - began > _ATOMIC_LIMIT or (
                calls_back_since is not None and now - calls_back_since > _POLL
            ):
                with self.lock:
                    if job.result is None:
                        job.free = True
                        self.free += 1
                        self.uncontrolled += 1
                if job.free:
                    self._real_time(True)
                    token.run_sync_soon(_nothing)  # no autojump after this wait
                    return False
                continue
            job.wake.wait(_POLL)

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
            if on:
                self.followed_real_time = True

    def _free_done(self, job: ThreadJob, result: outcome.Outcome[Any]) -> None:
        self.free -= 1
        if not self.free:
            self._real_time(False)
        job.deliver(result)


def serial_alternatives(
    decisions: Sequence[int], points: Sequence[tuple[int, int]]
) -> list[tuple[int, ...]]:
    """Schedules that run, one at a time, the thread calls that *decisions* ran in parallel.

    A run whose decision ``i`` ran ``n`` waiting thread calls at once (the last
    choice of that decision, *points* holds ``(i, n)``) cannot replay exactly:
    how the calls interleave inside is up to the operating system. Often the
    failure needs only that they run in a particular order; these schedules
    try each order: the ``k``-th call alone at decision ``i`` (the choice
    ``decision - n + k``), the rest of the run FIFO, then with the rest of the
    decisions as they were. The first parallel decision first.
    """
    found: list[tuple[int, ...]] = []
    for index, n in points[:2]:
        parallel = decisions[index]
        for k in range(n):
            serial = parallel - n + k
            for candidate in (
                (*decisions[:index], serial),
                (*decisions[:index], serial, *decisions[index + 1 :]),
            ):
                if candidate not in found:
                    found.append(candidate)
    return found


def _nothing() -> None:
    pass


# -- calls back into trio, in turn ---------------------------------------------------

_SEND: Final = "_send_message_to_trio"
#: What trio.from_thread.run and run_sync call in the worker thread (None if trio changed).
_original_send: Final[Callable[[Any, Any], Any] | None] = getattr(_trio_threads, _SEND, None)
_local = threading.local()  # .job: the harness's call this worker thread runs


class _Answer:
    """The queue a worker thread waits on for the answer to its call back into trio.

    ``get`` runs in the thread: it tells the harness that the thread waits
    (its call is queued for its task), then waits. ``put_nowait`` runs in
    trio's thread, in the task step that ran the call: it hands over the
    answer and holds the loop until the thread ends or calls back again.
    """

    __slots__ = ("inner", "job", "jobs")

    def __init__(self, inner: Any, job: ThreadJob, jobs: ThreadJobs) -> None:
        self.inner = inner
        self.job = job
        self.jobs = jobs

    def get(self, *args: Any, **kwargs: Any) -> Any:
        job = self.job
        job.posted = True
        job.wake.set()
        return self.inner.get(*args, **kwargs)

    def put_nowait(self, item: Any) -> None:
        self.inner.put_nowait(item)
        job = self.job
        if job.free:
            return
        jobs = self.jobs
        token: trio.lowlevel.TrioToken | None = None
        try:
            waiting = trio.lowlevel.current_statistics().run_sync_soon_queue_size
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            waiting = -1  # (the run is over: trio answers that it is)
        if token is None or jobs.controller.error is not None:
            # the run is ending: let the thread finish on its own, its result
            # delivered through trio's callbacks if the loop still runs
            with jobs.lock:
                if job.result is None:
                    job.free = True
                    jobs.free += 1
                    jobs.uncontrolled += 1
            return
        jobs._until_next(job, time.perf_counter(), waiting, token)


def _calling_back_in_turn(fn: Callable[[], Any], job: ThreadJob, jobs: ThreadJobs) -> Callable[[], Any]:
    def run_marked() -> Any:
        _local.job = (job, jobs)
        try:
            return fn()
        finally:
            _local.job = None

    return run_marked


def _send_message_to_trio(trio_token: Any, message: Any) -> Any:
    marked = getattr(_local, "job", None)
    if marked is not None and not marked[0].free:
        job, jobs = marked
        # (trio's messages are frozen attrs classes; their queue is read once, by
        # the worker thread, and written once, by trio)
        object.__setattr__(message, "queue", _Answer(message.queue, job, jobs))
    assert _original_send is not None
    return _original_send(trio_token, message)


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
    if _original_send is not None:
        setattr(_trio_threads, _SEND, _send_message_to_trio)


def restore_thread_hook() -> None:
    """Undo :func:`install_thread_hook`."""
    setattr(_trio_threads, _HOOK, _original_start)
    if _original_send is not None:
        setattr(_trio_threads, _SEND, _original_send)
