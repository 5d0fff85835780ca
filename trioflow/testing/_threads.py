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

A thread that calls back into trio (``trio.from_thread.run``) cannot run as
one atomic step, since the loop would have to run its callback: the harness
notices the callback, lets the loop run on while the thread works (the
virtual clock stays frozen until the thread ends) and counts the call as
*uncontrolled*; a failure of such a run says that its replay may not be exact.

The only private name used is ``trio._threads.start_thread_soon``, the
function ``to_thread_run_sync`` looks up when it starts a thread (see
``tests/test_canary.py``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
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


@attrs.define(eq=False)
class ThreadJob:
    """One waiting ``to_thread.run_sync`` call."""

    label: str
    fn: Callable[[], Any]
    deliver: Callable[[outcome.Outcome[Any]], object]
    name: str | None
    free: bool = False
    result: outcome.Outcome[Any] | None = None


class ThreadJobs:
    """The thread calls of one deterministic run."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.pending: list[ThreadJob] = []
        self.free = 0  # uncontrolled calls still running
        self.started = 0
        self.uncontrolled = 0
        self.lock = threading.Lock()

    def submit(
        self, fn: Callable[[], Any], deliver: Callable[[outcome.Outcome[Any]], object], name: str | None
    ) -> None:
        what = (name or "thread").split(" from ")[0]
        label = f"thread:{_ADDRESS.sub('', what)}#{self.started}"
        self.started += 1
        self.pending.append(ThreadJob(label, fn, deliver, name))

    def run(self, job: ThreadJob) -> None:
        """Run *job* in a worker thread while the loop waits; deliver its result now."""
        self.pending.remove(job)
        done = threading.Event()
        token = trio.lowlevel.current_trio_token()

        def deliver_here(result: outcome.Outcome[Any]) -> None:
            with self.lock:
                if not job.free:
                    job.result = result
                    done.set()
                    return
            token.run_sync_soon(self._free_done, job, result)

        baseline = trio.lowlevel.current_statistics().run_sync_soon_queue_size
        _original_start(job.fn, deliver_here, job.name)
        while not done.wait(_POLL):
            if trio.lowlevel.current_statistics().run_sync_soon_queue_size > baseline:
                with self.lock:
                    if job.result is None:  # it calls back into trio: let the loop run
                        job.free = True
                        self.free += 1
                        self.uncontrolled += 1
                        self.controller.clock.autojump_threshold = math.inf
                        return
        assert job.result is not None
        job.deliver(job.result)

    def _free_done(self, job: ThreadJob, result: outcome.Outcome[Any]) -> None:
        self.free -= 1
        if not self.free:
            self.controller.clock.autojump_threshold = 0
        job.deliver(result)


def _start_thread_soon(
    fn: Callable[[], Any],
    deliver: Callable[[outcome.Outcome[Any]], object],
    name: str | None = None,
) -> None:
    from ._control import active

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
