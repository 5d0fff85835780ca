"""The deterministic harness on asyncio: an event loop whose ready queue follows the schedule.

asyncio has no scheduling hook, so the harness brings its own loop: a
:class:`asyncio.SelectorEventLoop` whose ``_run_once`` (the one iteration of
the loop, a private method that has kept its shape since Python 3.4) is
replaced. Each iteration takes the ready callbacks as one *batch*, the way
trio's run loop takes its runnable tasks:

* ``0`` runs the whole batch in FIFO order;
* ``k >= 1`` runs only choice ``(k - 1) % n`` (callbacks oldest first, then
  waiting executor calls) and puts the others back at the head of the ready
  queue, where the callbacks made ready meanwhile join them.

The clock is virtual: ``loop.time()`` starts at 0 and, when nothing is ready,
jumps to the next timer, so ``asyncio.sleep`` and timeouts take no real time
and end exactly. ``loop.run_in_executor`` (and so ``asyncio.to_thread``) calls
on the default executor are decisions, run as one atomic step as on trio. A
run in which nothing is ready, no timer is set, no executor call waits and no
I/O is registered for ``grace`` seconds of real time is a deadlock.

A callback that is not a task's step and that posts itself again with
``call_soon`` when it runs (a *poll*, such as anyio's delivery of a
cancellation, which retries each iteration until the task it cancels has
run) is not a choice: it runs in every batch, after what the decision runs,
as asyncio's own loop runs it once per iteration. A strategy that keeps
choosing it would otherwise starve the task it waits for.

The flow engine runs in the same *quiescent mode* as on trio
(``trioflow._scheduler.quiescent_scheduling``): the loop wakes the tasks
waiting for the run to settle (:meth:`_VirtualLoop.wait_settled`) once
nothing is ready, no timer is due and no executor call waits, before the
clock moves on; fail-fast's cancellation waits until after them
(:meth:`_VirtualLoop.wait_settled_last`), or lands as under plain asyncio, a
``"cancel"`` decision (:meth:`_VirtualLoop.cancel_decision`); and whether a
freed slot is handed over at once or after the run settles is a
``"handover"`` decision (:meth:`_VirtualLoop.handover`), as on trio.

What is not covered on asyncio (see :doc:`testing`): wait-for cycles
(asyncio's locks have no owner), and threads started by other means
(``anyio.to_thread`` runs its own worker threads there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain, islice
from typing import Any, TypeVar

import anyio.lowlevel
import attrs
import outcome

from .._scheduler import quiescent_scheduling, settle_decision
from ._errors import BudgetExceededError, DeadlockError
from ._strategy import DecisionPoint, Strategy
from ._trace import _LIBRARY_MARKERS, Trace, _trim, cohort_done

__all__ = ["run_asyncio"]

T = TypeVar("T")


@attrs.define(eq=False)
class _Job:
    label: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any]


class _Jobs:
    """Executor calls waiting to run (the same counters as the trio thread runner)."""

    def __init__(self) -> None:
        self.pending: list[_Job] = []
        self.started = 0
        self.uncontrolled = 0
        self.lock = threading.Lock()


class _Executor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: a call waits until the schedule runs it."""

    def __init__(self, jobs: _Jobs) -> None:
        super().__init__(max_workers=2, thread_name_prefix="trioflow-testing")
        self.jobs = jobs

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        name = getattr(fn, "__name__", type(fn).__name__)
        with self.jobs.lock:
            label = f"thread:{name}#{self.jobs.started}"
            self.jobs.started += 1
            self.jobs.pending.append(_Job(label, fn, args, kwargs, future))
        return future

    def run(self, job: _Job) -> None:
        """Run *job* in a worker thread while the loop waits, and settle its future."""
        self.jobs.pending.remove(job)
        if not job.future.set_running_or_notify_cancel():
            return
        real = super().submit(job.fn, *job.args, **job.kwargs)
        try:
            value = real.result()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)


class _Controller:
    def __init__(
        self,
        schedule: Sequence[int],
        strategy: Strategy | None,
        grace: float,
        max_steps: int,
        max_virtual_time: float,
        main_name: str,
    ) -> None:
        self.schedule = list(schedule)
        self.strategy = strategy
        self.grace = grace
        self.max_steps = max_steps
        self.max_virtual_time = max_virtual_time
        self.main_name = main_name
        self.decisions: list[int] = []
        self._trace: list[tuple[float, str, str, str]] = []
        self.labels: dict[asyncio.Task[Any], str] = {}
        self.spawned = 0
        self.steps = 0
        self.error: BaseException | None = None
        self.threads = _Jobs()

    def take_trace(self) -> Trace:
        """The run's trace, handed over (see ``Controller.take_trace``)."""
        trace = Trace(self._trace)
        self._trace = []
        return trace

    def next_decision(self, kind: str, choices: Sequence[str]) -> int:
        n = len(choices)
        index = len(self.decisions)
        if index < len(self.schedule):
            raw = self.schedule[index]
        elif self.strategy is not None:
            raw = self.strategy.decide(DecisionPoint(kind, tuple(choices), self.steps, index))
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                raise TypeError(
                    f"{type(self.strategy).__name__}.decide() must return an int >= 0, got {raw!r}"
                )
        else:
            raw = 0
        decision = 0 if raw == 0 else (raw - 1) % n + 1
        self.decisions.append(decision)
        return decision


class _EngineHooks:
    """What the engine's quiescent mode asks the harness (``trioflow._scheduler.settle_decision``),
    the asyncio loop's side of :class:`._control.EngineHooks`."""

    __slots__ = (
        "_loop", "cancel_cohort", "cancel_decision", "wait_all_tasks_blocked", "wait_cohort", "wait_settled_last",
    )

    def __init__(self, loop: _VirtualLoop) -> None:
        self._loop = loop
        self.wait_all_tasks_blocked = loop.wait_settled
        self.wait_settled_last = loop.wait_settled_last
        # fail-fast's cancellation: when it lands is a decision too (see _VirtualLoop.cancel_decision)
        self.cancel_cohort = loop.cancel_cohort
        self.cancel_decision = loop.cancel_decision
        self.wait_cohort = loop.wait_cohort

    def __call__(self, nursery: Any, fixed: Callable[[], bool] | None = None) -> bool:
        return self._loop.handover(nursery, fixed)

    def drives_current_loop(self) -> bool:
        """Whether the engine runs on this harness's loop (not, say, in a thread of its own)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, controller: _Controller) -> None:
        super().__init__()
        self._ctl = controller
        self._virtual = 0.0
        self._idle_since: float | None = None
        self._main: asyncio.Task[Any] | None = None
        self._cleanup = False
        self._executor = _Executor(controller.threads)
        self.set_default_executor(self._executor)
        self.set_task_factory(self._make_task)
        # the task that created each task, and the tasks by id (to tell the tasks of
        # a flow run, see _descends)
        self._parents: dict[asyncio.Task[Any], asyncio.Task[Any] | None] = {}
        self._by_id: dict[int, asyncio.Task[Any]] = {}
        # what is left of the batch being run, in the order it runs (popped from the end)
        self._batch: list[asyncio.Handle] = []
        # callbacks that posted themselves again: not choices (see _run_once)
        self._polls: set[asyncio.Handle] = set()
        # futures of the tasks waiting for the run to settle, oldest first, and of
        # those waiting until after them (see wait_settled, wait_settled_last)
        self._settling: list[asyncio.Future[None]] = []
        self._settling_tasks: list[asyncio.Task[Any] | None] = []  # (whose waits they are)
        # the tasks woken as the run settled: their wake-ups run next, all of them
        self._woken: set[asyncio.Task[Any]] = set()
        self._settling_last: list[asyncio.Future[None]] = []
        # fail-fast's cancellation waiting for the tasks of the failure's batch (wait_cohort)
        self._cohort_waiter: tuple[asyncio.Future[None], tuple[int, frozenset[str]]] | None = None

    def time(self) -> float:
        return self._virtual

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        parent = asyncio.current_task(self)
        task = asyncio.Task(coro, loop=loop, **kwargs)
        ctl = self._ctl
        if self._cleanup:
            return task
        self._parents[task] = parent
        self._by_id[id(task)] = task
        if self._main is None:
            name = ctl.main_name
            self._main = task
        else:
            module = getattr(getattr(coro, "cr_frame", None), "f_globals", {}).get("__name__", "")
            qualname = getattr(coro, "__qualname__", type(coro).__name__)
            name = f"{module}.{qualname}" if module else qualname
        label = f"{name}#{ctl.spawned}"
        ctl.spawned += 1
        ctl.labels[task] = label
        ctl._trace.append((self._virtual, "spawn", label, ""))
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._parents.pop(task, None)
        self._by_id.pop(id(task), None)
        label = self._ctl.labels.pop(task, None)
        if label is not None:
            self._ctl._trace.append((self._virtual, "exit", label, ""))
            if self._cohort_waiter is not None:
                self._wake_cohort_waiter()

    def _label(self, handle: asyncio.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        label = self._ctl.labels.get(owner) if isinstance(owner, asyncio.Task) else None
        if label is not None:
            return label
        return f"callback:{getattr(callback, '__qualname__', type(callback).__name__)}"

    def _stop_with(self, error: BaseException) -> None:
        ctl = self._ctl
        if ctl.error is None:
            ctl.error = error
            if self._main is not None:
                self._main.cancel()
        else:
            raise ctl.error  # the cancellation did not end it: give up on the run

    def _run_once(self) -> None:
        ctl = self._ctl
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        ready: Any = self._ready  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            handle = heapq.heappop(scheduled)
            handle._scheduled = False  # type: ignore[attr-defined]
        stopping = self._stopping  # type: ignore[attr-defined]
        if not ready and not stopping and ctl.threads.pending:
            # nothing else can run: the oldest waiting executor call runs now
            self._executor.run(ctl.threads.pending[0])
        waiting = self._settling or self._settling_last
        timeout = 0.0 if ready or stopping or scheduled or waiting or self._cleanup else ctl.grace
        event_list = self._selector.select(timeout)  # type: ignore[attr-defined]
        self._process_events(event_list)  # type: ignore[attr-defined]
        if not ready and not stopping and not event_list:
            if waiting and not (scheduled and scheduled[0]._when <= self._virtual):  # type: ignore[attr-defined]
                # nothing is ready and nothing is due: the run has settled at this
                # instant, before the clock moves on
                self._idle_since = None
                self._wake_settled()
            elif self._cleanup:
                pass
            elif scheduled:
                self._virtual = max(self._virtual, scheduled[0]._when)  # type: ignore[attr-defined]
            elif len(self._selector.get_map()) <= 1:  # type: ignore[attr-defined]
                now = time.perf_counter()
                if self._idle_since is None:
                    self._idle_since = now
                elif now - self._idle_since >= ctl.grace:
                    self._idle_since = None
                    self._stop_with(self._deadlock_error())
        else:
            self._idle_since = None
        while scheduled and scheduled[0]._when <= self._virtual:  # type: ignore[attr-defined]
            handle = heapq.heappop(scheduled)
            handle._scheduled = False  # type: ignore[attr-defined]
            ready.append(handle)
        batch = [h for h in ready if not h._cancelled]
        ready.clear()
        forced = False
        if self._woken:
            batch, forced = self._take_woken(batch)
        polls = self._polls
        if polls:
            # (a poll is not a choice: it runs after what the decision runs)
            choices = [h for h in batch if h not in polls]
            after = [h for h in batch if h in polls]
            polls.clear()
        else:
            choices = batch
            after = []
        jobs = ctl.threads.pending
        if len(choices) + len(jobs) >= 2 and ctl.error is None and not self._cleanup and not forced:
            labels = [self._label(h) for h in choices] + [job.label for job in jobs]
            decision = ctl.next_decision("batch", labels)
            if decision > len(choices):
                self._executor.run(jobs[decision - len(choices) - 1])
            elif decision:
                chosen = choices.pop(decision - 1)
                ready.extend(choices)
                batch = [chosen, *after]
        batch.reverse()
        self._batch = batch
        try:
            while batch:
                self._step(batch.pop())
        finally:
            self._batch = []

    def _step(self, handle: asyncio.Handle) -> None:
        ctl = self._ctl
        ctl.steps += 1
        owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
        label = ctl.labels.get(owner) if isinstance(owner, asyncio.Task) else None
        if label is not None:
            ctl._trace.append((self._virtual, "step", label, ""))
        if ctl.error is None and not self._cleanup:
            if ctl.steps > ctl.max_steps:
                self._stop_with(
                    self._budget_error(f"max_steps={ctl.max_steps!r} task steps",
                                       f"max_steps={ctl.max_steps * 10!r}")
                )
            elif self._virtual > ctl.max_virtual_time:
                self._stop_with(
                    self._budget_error(
                        f"max_virtual_time={ctl.max_virtual_time!r} seconds",
                        f"max_virtual_time={ctl.max_virtual_time * 10!r}",
                    )
                )
        if isinstance(owner, asyncio.Task):
            handle._run()
            if self._cohort_waiter is not None:
                self._wake_cohort_waiter()
            return
        ready: Any = self._ready  # type: ignore[attr-defined]
        before = len(ready)
        handle._run()
        if len(ready) > before:
            # a callback that posted itself again is a poll (see _run_once)
            callback, args = handle._callback, handle._args  # type: ignore[attr-defined]
            for new in islice(ready, before, None):
                if new._callback == callback and new._args == args:
                    self._polls.add(new)

    # -- the engine's quiescent mode (see trioflow._scheduler) ------------------

    def _take_woken(self, batch: list[asyncio.Handle]) -> tuple[list[asyncio.Handle], bool]:
        """The wake-ups of the tasks woken as the run settled, all of them and in order,
        with no decision; the rest of *batch* goes back to the ready queue for the next.

        They all waited for the same settled instant, and each takes its unit as of
        then: had a decision run one alone, the unit it took could end (at the same
        virtual instant) before the next one took its own (see
        ``_control.Controller._run_woken``).
        """
        woken = self._woken
        first: list[asyncio.Handle] = []
        rest: list[asyncio.Handle] = []
        for handle in batch:
            owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
            (first if owner in woken else rest).append(handle)
        woken.clear()
        if not first:
            return batch, False
        self._ready.extend(rest)  # type: ignore[attr-defined]
        return first, True

    def _quiet(self) -> bool:
        """Whether nothing but the running task could run before the run has settled.

        Nothing ready (the ready queue, or what is left of the batch being
        run), no task waiting to settle, no timer due, no executor call
        waiting, no I/O registered but the loop's own.
        """
        if self._ready or self._batch or self._settling or self._settling_last:  # type: ignore[attr-defined]
            return False
        if self._ctl.threads.pending:
            return False
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled and scheduled[0]._when <= self._virtual:  # type: ignore[attr-defined]
            return False
        return len(self._selector.get_map()) <= 1  # type: ignore[attr-defined]

    async def wait_settled(self) -> None:
        """Wait until every task is blocked and nothing is due at this virtual instant.

        The engine's ``wait_all_tasks_blocked``: the loop wakes the tasks
        waiting here, oldest first, in the iteration where nothing is ready,
        no timer is due and no executor call waits (before the clock jumps).
        A task that would be the only one to run anyway does not wait (it
        still checks for cancellation).
        """
        if self._ctl.error is None and self._quiet():
            await anyio.lowlevel.checkpoint_if_cancelled()
            return
        future: asyncio.Future[None] = self.create_future()
        self._settling.append(future)
        self._settling_tasks.append(asyncio.current_task(self))
        await future

    async def wait_settled_last(self) -> None:
        """Like :meth:`wait_settled`, woken only once no task waits there (fail-fast's
        cancellation: after the workers that settle at the same instant)."""
        future: asyncio.Future[None] = self.create_future()
        self._settling_last.append(future)
        await future

    def _wake_settled(self) -> None:
        waiting = self._settling
        if waiting:
            self._settling = []
            self._woken.update(task for task in self._settling_tasks if task is not None)
            self._settling_tasks = []
        else:
            waiting = self._settling_last
            self._settling_last = []
        for future in waiting:
            if not future.done():  # (a cancelled wait)
                future.set_result(None)

    # -- when fail-fast's cancellation lands (see _control.Controller.cancel_decision)

    def cancel_cohort(self) -> tuple[int, frozenset[str]]:
        """At a fail-fast run's first failure: the tasks that plain asyncio would run
        before the cancellation can land (the engine's cancelling task, started now,
        takes its first step after every callback ready now), with where the trace
        stands: those whose step is left in the batch being run or is ready (held
        back by the last decision, or made ready by this batch), and those a
        callback there wakes (a timer due at this instant, which plain asyncio
        runs in the same iteration as the failure's)."""
        labels = self._ctl.labels
        cohort = frozenset(
            label
            for handle in (*self._batch, *self._ready)  # type: ignore[attr-defined]
            for task in _woken(handle) or ()
            if (label := labels.get(task)) is not None
        )
        return len(self._ctl._trace), cohort

    def cancel_decision(self) -> bool:
        """The engine asks, as fail-fast's cancellation is about to wait: wait until the
        run settles (``0``), or land as under plain asyncio (``1``: once the tasks of
        the failure's batch have run, while others may be between two awaits)?"""
        ctl = self._ctl
        if ctl.error is not None:
            return False
        current = asyncio.current_task(self)
        label = ctl.labels.get(current, "?") if current is not None else "?"
        return ctl.next_decision("cancel", (label,)) != 0

    async def wait_cohort(self, cohort: tuple[int, frozenset[str]]) -> None:
        """Wait until every task of *cohort* (see :meth:`cancel_cohort`) has run a
        step since, or ended. Event-driven (checked as each task step ends), so
        that no strategy can starve the cohort by running the waiting task."""
        if cohort_done(self._ctl._trace, cohort):
            await anyio.lowlevel.checkpoint()
            return
        future: asyncio.Future[None] = self.create_future()
        self._cohort_waiter = (future, cohort)
        try:
            await future
        finally:
            self._cohort_waiter = None

    def _wake_cohort_waiter(self) -> None:
        waiter = self._cohort_waiter
        if waiter is not None and cohort_done(self._ctl._trace, waiter[1]):
            self._cohort_waiter = None
            if not waiter[0].done():
                waiter[0].set_result(None)

    def handover(self, nursery: Any, fixed: Callable[[], bool] | None = None) -> bool:
        """The engine asks: settle before taking a freed slot (True), or take it at once?

        As on trio (:meth:`._control.Controller.handover`): the run settles
        when another task of the same run (under *nursery*) may run at this
        instant, unless *fixed* (the engine's) says nothing it may do can
        change which unit the slot goes to; the slot is taken at once, with no
        decision, when nothing else at all could run first; otherwise the
        schedule decides. A ready callback that is not a task's step counts as
        the tasks it wakes (the waiters of a future it settles), or, if the
        loop cannot tell, as a task of the run.
        """
        ctl = self._ctl
        if ctl.error is not None:
            return True
        current = asyncio.current_task(self)
        if fixed is None or not fixed():
            members: Any = getattr(nursery, "_tasks", None)  # (anyio's task group's tasks)
            scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
            # (then the timers due at this instant, looked at only if none of those is the run's)
            due = (h for h in scheduled if h._when <= self._virtual and not h._cancelled)  # type: ignore[attr-defined]
            for handle in chain(self._ready, self._batch, due):  # type: ignore[attr-defined]
                woken = _woken(handle)
                if woken is None:
                    return True
                for task in woken:
                    if task is not current and (members is None or self._descends(task, members)):
                        return True
            # (and the workers waiting to take their units once the instant settles)
            for waiter in self._settling_tasks:
                if waiter is not None and waiter is not current and (
                    members is None or self._descends(waiter, members)
                ):
                    return True
        if self._quiet():
            return False
        label = ctl.labels.get(current, "?") if current is not None else "?"
        return ctl.next_decision("handover", (label,)) == 0

    def _descends(self, task: asyncio.Task[Any] | None, members: Any) -> bool:
        """Whether *task* is one of *members* or a task started below one of them.

        A task's parent is, as trio sees it, the task that owns the task group
        it runs in (anyio records that one), else the task that created it.
        """
        states = _anyio_task_states()
        while task is not None:
            if task in members:
                return True
            parent_id = getattr(states.get(task), "parent_id", None)
            task = self._parents.get(task) if parent_id is None else self._by_id.get(parent_id)
        return False

    def _deadlock_error(self) -> DeadlockError:
        ctl = self._ctl
        lines = [
            f"deadlock: every task is blocked and no timer is set, at virtual time "
            f"{self._virtual!r} after {ctl.steps} steps of the asyncio loop "
            f"(nothing happened for {ctl.grace!r} s of real time).",
            "Blocked tasks, and where each one waits:",
        ]
        for task, label in ctl.labels.items():
            lines.append(f"  - {label}: {_where(task)}")
        lines.append(
            f"Replay it exactly with run_deterministic(..., schedule={_trim(ctl.decisions)!r}, "
            f"backend='asyncio')."
        )
        return DeadlockError("\n".join(lines), decisions=tuple(_trim(ctl.decisions)))

    def _budget_error(self, what: str, more: str) -> BudgetExceededError:
        ctl = self._ctl
        return BudgetExceededError(
            f"the run exceeded {what} (at virtual time {self._virtual!r} after {ctl.steps} "
            f"steps of the asyncio loop): a livelock, an endless ticker, or simply a longer run "
            f"than the budget allows. If the work is legitimately this long, raise the budget, "
            f"e.g. run_deterministic(..., {more}, backend='asyncio').\n"
            f"Replay it exactly with run_deterministic(..., schedule={_trim(ctl.decisions)!r}, "
            f"backend='asyncio').",
            decisions=tuple(_trim(ctl.decisions)),
        )

    def finish(self) -> None:
        """Cancel what is left, give it a few loop iterations to end, and close the loop."""
        self._cleanup = True
        try:
            for _ in range(3):
                tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
                if not tasks:
                    break
                for task in tasks:
                    task.cancel()
                for _ in range(100):
                    if all(t.done() for t in tasks):
                        break
                    self._run_once()
            self.run_until_complete(self.shutdown_asyncgens())
        finally:
            self._executor.shutdown(wait=True)
            self.close()


def _anyio_task_states() -> Any:
    """anyio's record of the tasks it started on asyncio (task -> its parent's id), or {}."""
    backend = sys.modules.get("anyio._backends._asyncio")
    return getattr(backend, "_task_states", None) or {}


def _woken(handle: asyncio.Handle) -> list[asyncio.Task[Any]] | None:
    """The tasks that *handle* runs or wakes: a task's step, or the waiters of the
    futures it is passed (a timer of ``asyncio.sleep``); ``None`` if unknown."""
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return [owner]
    tasks: list[asyncio.Task[Any]] = []
    found = False
    for arg in handle._args or ():
        if isinstance(arg, asyncio.Future):
            found = True
            for waiter, _ in getattr(arg, "_callbacks", None) or ():
                task = getattr(waiter, "__self__", None)
                if not isinstance(task, asyncio.Task):
                    return None
                tasks.append(task)
    return tasks if found else None


def _where(task: asyncio.Task[Any]) -> str:
    """The innermost frame of user code in *task*'s chain of awaits."""
    coro: Any = task.get_coro()
    found = "<not started>"
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            filename = frame.f_code.co_filename
            if not any(marker in filename for marker in (*_LIBRARY_MARKERS, "/asyncio/")):
                found = f"{filename}:{frame.f_lineno} in {frame.f_code.co_qualname}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


def run_asyncio(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    schedule: list[int],
    strategy: Strategy | None,
    grace: float,
    max_steps: int,
    max_virtual_time: float,
    holder: list[Any],
    main_name: str = "main",
) -> tuple[outcome.Outcome[T], float, _Controller]:
    """One deterministic run of ``fn(*args)`` on the virtual asyncio loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_deterministic(..., backend='asyncio') was called from inside a running asyncio "
            "loop; it runs its own loop, so call it from synchronous code"
        )
    ctl = _Controller(schedule, strategy, grace, max_steps, max_virtual_time, main_name)
    holder.append(ctl)
    loop = _VirtualLoop(ctl)
    # the engine settles each virtual instant before it hands out slots, unless
    # the schedule says to hand a freed slot over at once (as on trio)
    quiescent = quiescent_scheduling.set(True)
    settle = settle_decision.set(_EngineHooks(loop))

    async def main() -> tuple[outcome.Outcome[T], float]:
        result = await outcome.acapture(fn, *args)
        return result, loop.time()

    try:
        try:
            result, end = loop.run_until_complete(main())
        except BaseException:
            if ctl.error is not None:
                raise ctl.error from None
            raise
        if ctl.error is not None:
            raise ctl.error
        if math.isnan(end):  # pragma: no cover (a clock cannot be NaN)
            raise AssertionError(end)
        return result, end, ctl
    finally:
        try:
            loop.finish()
        finally:
            settle_decision.reset(settle)
            quiescent_scheduling.reset(quiescent)
