"""The pieces of the deterministic harness that reach into trio's run loop.

Everything that depends on trio's private scheduler internals lives here, so
that ``tests/test_canary.py`` and this module are the only places to look when
a new trio release changes them. What we rely on (trio 0.35):

* ``trio._core._run._r``: the module-global :class:`random.Random` whose
  ``shuffle`` orders each batch of runnable tasks in ``unrolled_run``;
* ``trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING``: when true the batch is
  sorted by ``Task._counter`` before the shuffle, and ``_r.shuffle`` is used
  instead of a coin-flip reversal;
* ``Runner.runq``: the deque of runnable tasks, from which the harness takes
  the next batch itself when trio's loop would only do that, and to which it
  gives back the tasks it holds back before trio's loop runs again;
* ``Runner.instruments``: the table of hooks, which the harness replaces for
  its run by one that calls it once per batch (see :class:`._install._Instruments`);
* ``Task._next_send`` and ``Task._attempt_abort``: used only to force a run
  to stop when cancellation alone cannot end it (a shielded deadlock, a
  livelock that ignores cancellation).

The batch arrives sorted by ``Task._counter`` (oldest task first) and trio
runs it by popping from the *end*. A *decision* is made at every batch that
holds two or more choices: the run's own tasks, and worker-thread calls that
wait to be run (see :mod:`._threads`):

* ``0``: run the whole batch, oldest task first (the canonical "FIFO" order);
* ``k >= 1``: take choice number ``(k - 1) % n`` (``n`` the number of
  choices, tasks oldest first, then thread calls oldest first). A task runs
  alone and the others are held back, in a line where they join the tasks
  that become runnable meanwhile (see :meth:`Controller._hold`); a thread
  call runs to its end
  (one atomic step, delivered to its task at once), then the batch runs FIFO;
  when several thread calls wait, a last choice runs them all in parallel.

The flow engine adds *hand-over* decisions (``quiescent`` mode of
``trioflow._scheduler``): ``0`` lets the run settle before a freed slot is
taken, ``1`` takes it at once.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from types import CodeType
from typing import Any, Final

import attrs
import outcome
import trio
import trio.lowlevel
from trio._core import _run as _trio_run

from .._stores._base import _Signal
from ._errors import BudgetExceededError, DeadlockError
from ._strategy import (
    DecisionPoint,
    Strategy,
    fast_paths,
)
from ._threads import ThreadJobs
from ._trace import _ADDRESS, Trace, _await_frames, _replay_hint, _trim, _where, cohort_done
from ._waitfor import (
    GRAPH_WAITS,
    Notify,
    Wait,
    _has_deadline,
    describe_resource,
    describe_wait,
    find_cycle,
)

# where a task waits for an SQLiteStore's writer thread (see _looks_idle)
_THREAD_WAIT: Final = _Signal.wait.__code__

__all__ = ["Controller", "EngineHooks", "PARALLEL_THREADS"]


#: Task names without their addresses, for all runs (a run's tasks mostly have the names of the last's).
_CLEAN_NAMES: dict[str, str] = {}
#: Why a worker at a contended slot takes it at once, or settles first (see Controller._handover).
_AT_ONCE: Final = 0
_OTHERS_FIRST: Final = 1
_SETTLE: Final = 2
#: The choices of a hand-over decision, for a built-in strategy (see _decide_handover).
_ONE_CHOICE: Final = ("",)
#: Batches the harness takes in a row without an iteration of trio's loop.
_MAX_REFILLS: Final = 64
#: The choice that runs every waiting thread call at once, in parallel.
PARALLEL_THREADS: Final = "threads:all, in parallel"
#: Task steps between looks for a wait-for cycle while tasks keep running (the
#: harness also looks whenever no task is runnable).
_CYCLE_CHECK_EVERY: Final = 2000
#: The fields of each I/O manager's statistics that count tasks waiting for I/O.
_IO_COUNTS: dict[type, tuple[str, ...]] = {}


class _ForcedStop(BaseException):
    """Injected into tasks that a cancellation could not stop; never escapes the harness."""


class EngineHooks:
    """What the engine's quiescent mode asks the harness (``trioflow._scheduler.settle_decision``).

    Called with the run's nursery where a worker would settle before taking a
    contended slot: ``True`` settles, ``False`` takes the slot at once. Its
    ``wait_all_tasks_blocked`` is the controller's settling, and its
    ``settle(nursery)`` both: the engine awaits it instead of calling the
    hooks and then waiting.
    """

    __slots__ = ("_handover", "cancel_cohort", "cancel_decision", "settle", "wait_all_tasks_blocked", "wait_cohort")

    def __init__(self, controller: Controller) -> None:
        self._handover = controller.handover
        self.wait_all_tasks_blocked = controller.wait_settled
        # the hand-over decision and the settling in one call (``settle(nursery)``)
        self.settle = controller.settle
        # fail-fast's cancellation: when it lands is a decision too (see Controller.cancel_decision)
        self.cancel_cohort = controller.cancel_cohort
        self.cancel_decision = controller.cancel_decision
        self.wait_cohort = controller.wait_cohort

    def __call__(self, nursery: Any, fixed: Callable[[], bool] | None = None) -> bool:
        return self._handover(nursery, fixed)

    def close(self) -> None:
        """The run is over: let go of the controller. The run's tasks keep these hooks in
        their contexts, and trio's runner, cyclic garbage once the run is over, keeps
        the tasks: hooks that still held the controller's methods would keep it, and
        all it holds, for the cycle collector."""
        for name in self.__slots__:
            setattr(self, name, None)


class _Park:
    """A task's wait for the run to settle (see :meth:`Controller.settle`): what
    :func:`trio.lowlevel.wait_task_rescheduled` does, made once per task.

    The message trio's loop reads (with the abort function that takes the task
    out of the waiting line if it is cancelled) is made when the task first
    waits, and awaited again at each of its waits: a flow's worker settles at
    most slots it frees, and each wait then costs no coroutine, no closure
    and no message of its own.
    """

    __slots__ = ("message",)

    def __init__(self, task: trio.lowlevel.Task, settling: list[trio.lowlevel.Task]) -> None:
        def abort(_: Any) -> trio.lowlevel.Abort:
            settling.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        self.message = _trio_run.WaitTaskRescheduled(abort)  # type: ignore[attr-defined]  # (checked by the canary)

    def __await__(self) -> Generator[Any, Any, None]:
        # (wait_task_rescheduled: trio's loop sends what the task is rescheduled with)
        return (yield self.message).unwrap()  # type: ignore[no-any-return]


class Controller(trio.abc.Instrument):
    """Chooses the schedule, records the trace, enforces budgets, detects deadlocks.

    One controller serves exactly one ``trio.run``. The decisions come from the
    explicit ``schedule`` first, then from ``strategy`` (``None``: FIFO).
    """

    __slots__ = (
        "_trace",
        "alone",
        "bits",
        "callbacks",
        "cancel_scope",
        "clock",
        "cohort_waiter",
        "conditions",
        "current_batch",
        "cycle_checked",
        "deadlines",
        "decisions",
        "draw",
        "error",
        "fast_decide",
        "force_stop_after",
        "forced_rounds",
        "grace",
        "held",
        "idempotent_callbacks",
        "idle_generation",
        "idle_since",
        "io_real_time",
        "io_registered",
        "labels",
        "last_waits",
        "lost_notifies",
        "main_code",
        "main_name",
        "main_task",
        "max_steps",
        "max_virtual_time",
        "parks",
        "refills_left",
        "runner",
        "runq",
        "schedule",
        "scheduled",
        "settling",
        "spawned",
        "steps",
        "sticky",
        "strategy",
        "thread_calls",
        "threads",
        "token",
        "trio_instruments",
        "woken",
        "zero_sizes",
        "zeros_from",
    )

    def __init__(
        self,
        *,
        schedule: Sequence[int],
        strategy: Strategy | None,
        grace: float,
        max_steps: int,
        max_virtual_time: float,
        main_code: CodeType,
        main_name: str,
        clock: trio.testing.MockClock,
    ) -> None:
        self.schedule = list(schedule)
        self.scheduled = len(self.schedule)
        self.strategy = strategy
        # the strategy's shortcuts (see fast_paths): from zeros_from on, every batch
        # decision is 0 (FIFO, a bounded search past its prefix), and the strategy,
        # if any, only records the number of choices in zero_sizes; at the decision
        # indexes in sticky, the strategy may not repeat itself
        self.fast_decide, self.draw, self.bits, self.zeros_from, self.zero_sizes, self.sticky = fast_paths(
            strategy, self.scheduled
        )
        # the task the last decision ran alone, that decision, and its label
        self.alone: tuple[trio.lowlevel.Task, int, str] | None = None
        self.grace = grace
        self.max_steps = max_steps
        self.max_virtual_time = max_virtual_time
        self.clock = clock
        self.main_code = main_code
        self.main_name = main_name
        self.decisions: list[int] = []
        self._trace: list[tuple[float, str, str, str]] = []
        self.labels: dict[trio.lowlevel.Task, str] = {}
        self.spawned = 0
        self.steps = 0
        self.main_task: trio.lowlevel.Task | None = None
        # the scope around the function, cancelled (through trio's callback
        # queue) when the harness stops the run; see _main in _harness.py
        self.cancel_scope: trio.CancelScope | None = None
        self.runner: Any = None  # trio's Runner, once the run started (see install_instruments)
        self.trio_instruments: Any = None  # trio's own instrument table, which the harness's replaced
        # the runner's run queue, deadlines and callback queues (see install_instruments)
        self.runq: Any = None
        self.deadlines: Any = None
        self.callbacks: Any = None
        self.idempotent_callbacks: Any = None
        self.io_registered: Any = None  # epoll's table of file descriptors waited on, on Linux
        self.token: trio.lowlevel.TrioToken | None = None
        # tasks waiting for the run to settle (wait_settled), oldest first
        self.settling: list[trio.lowlevel.Task] = []
        self.parks: dict[trio.lowlevel.Task, _Park] = {}  # their waits, one per task (see _Park)
        # those woken as the run settled: they run next, all of them (see _run_woken)
        self.woken: list[trio.lowlevel.Task] = []
        self.error: BaseException | None = None
        self.force_stop_after: int | None = None
        self.idle_since: float | None = None
        self.idle_generation = -1
        self.forced_rounds = 0
        self.cycle_checked = -1
        self.last_waits: frozenset[tuple[trio.lowlevel.Task, object]] = frozenset()
        self.threads = ThreadJobs(self)
        self.thread_calls = self.threads.pending  # (the same list: thread calls waiting to be run)
        self.current_batch: list[trio.lowlevel.Task] = []
        # the run's runnable tasks that the last decision held back (see _hold),
        # oldest first (by Task._counter)
        self.held: list[trio.lowlevel.Task] = []
        # batches the harness may still take in a row without trio's loop (see
        # after_task_step): 0 while the run stops or a fail-fast cancellation waits
        # for its cohort (see _slow_path), reset by each pass of trio's loop
        self.refills_left = 0
        self.io_real_time = False  # a task waits for real I/O: see _follow_io
        # conditions notified while no task waited on them: id -> the last such notify
        self.lost_notifies: dict[int, Notify] = {}
        self.conditions: list[trio.Condition] = []
        # fail-fast's cancellation waiting for the tasks of the failure's batch (wait_cohort)
        self.cohort_waiter: tuple[trio.lowlevel.Task, tuple[int, frozenset[str]]] | None = None

    def take_trace(self) -> Trace:
        """The run's trace, whose :class:`TraceEvent` objects are made when looked at, handed
        over once the run is over: the controller keeps none of it.

        A trace held by its caller alone is freed as soon as the caller drops
        it, whatever becomes of the controller (on trio, the controller is
        freed at once too, see :meth:`EngineHooks.close`; the asyncio
        harness's waits for the cycle collector, with its loop).
        """
        trace = Trace(self._trace)
        self._trace = []
        return trace

    def _now(self) -> float:
        # the MockClock runs at rate 0: virtual time is its base, moved only by
        # jumps (except while uncontrolled threads run, see _threads)
        return self.clock.current_time() if self.clock._rate else self.clock._virtual_base

    # -- scheduling ---------------------------------------------------------

    def next_decision(self, kind: str, choices: Sequence[str]) -> int:
        n = len(choices)
        index = len(self.decisions)
        if index < self.scheduled:
            raw = self.schedule[index]
        elif self.fast_decide is not None and self.error is None:
            raw = self.fast_decide(kind, choices, index)
        elif self.strategy is not None and self.error is None:
            try:
                raw = self.strategy.decide(DecisionPoint(kind, tuple(choices), self.steps, index))
            except Exception as exc:  # trio would call it an internal error: stop the run with it
                self._stop(exc)
                raw = 0
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                self._stop(
                    TypeError(
                        f"{type(self.strategy).__name__}.decide() must return an int >= 0, "
                        f"got {raw!r}"
                    )
                )
                raw = 0
        else:
            raw = 0
        decision = 0 if raw == 0 else (raw - 1) % n + 1
        self.decisions.append(decision)
        return decision

    def handover(self, nursery: trio.Nursery, fixed: Callable[[], bool] | None = None) -> bool:
        """The engine asks: settle before taking a freed slot (True), or take it at once?

        It is a decision when no other task of the same run (under *nursery*,
        the run's) is runnable, or when *fixed* (the engine's) says that
        nothing they may do at this instant can change which unit the slot
        goes to: taking the slot at once then gives the same timeline, while
        other tasks (those the settling would have let run first) see the unit
        start before them, as in production. Otherwise a unit ending at the
        same instant may be about to make a more urgent step ready: the run
        settles, so timelines stay schedule-independent. When nothing at all
        could run before the worker, settling would change nothing: the slot
        is taken at once, with no decision either.
        """
        return self._handover(nursery, fixed) != _AT_ONCE

    def _handover(self, nursery: trio.Nursery, fixed: Callable[[], bool] | None = None) -> int:
        """:meth:`handover`, saying why: ``_AT_ONCE``, ``_OTHERS_FIRST`` (another task of the
        run is runnable: the run is not settled) or ``_SETTLE`` (decided, or stopping)."""
        if self.error is not None:
            return _SETTLE
        current = _trio_run.GLOBAL_RUN_CONTEXT.task
        held = self.held
        if held and held[0]._parent_nursery is nursery:
            # (the usual case under a strategy: a worker that the last decision held back)
            if fixed is None or not fixed():
                return _OTHERS_FIRST
            return self._decide_handover(current)
        # (the running batch first: the workers that an instant woke together are there;
        # then the workers waiting to take their units once the instant settles, and the
        # tasks whose deadline is due, which run at this instant too)
        heap = self.deadlines._heap
        due = self._due_tasks() if heap and heap[0][0] <= self.clock._virtual_base else ()
        for tasks in (self.current_batch, self.runq, held, self.settling, due):
            for task in tasks:
                if task is not current and (task._parent_nursery is nursery or _descends_from(task, nursery)):
                    if fixed is None or not fixed():
                        return _OTHERS_FIRST
                    return self._decide_handover(current)
        if self._quiet():
            return _AT_ONCE
        return self._decide_handover(current)

    def _due_tasks(self) -> Iterator[trio.lowlevel.Task]:
        """The tasks that a deadline due now will wake at this virtual instant (a
        sleep or a timeout that ends now): blocked, but as good as runnable."""
        heap = self.deadlines._heap  # (deadline, id, cancel scope), earliest first
        now = self.clock._virtual_base
        places = [0]
        while places:
            i = places.pop()
            deadline, _, scope = heap[i]
            if deadline > now:
                continue  # (nor any entry below it in the heap)
            places.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(heap))
            if deadline != scope._registered_deadline or scope._cancel_status is None:
                continue  # a stale entry
            statuses = [scope._cancel_status]
            while statuses:
                status = statuses.pop()
                yield from status._tasks
                statuses.extend(status._children)

    def _decide_handover(self, current: trio.lowlevel.Task) -> int:
        decisions = self.decisions
        index = len(decisions)
        fast = self.fast_decide
        if fast is not None and index >= self.scheduled and self.error is None:
            # next_decision, for a built-in strategy (a flow's worker asks at most units;
            # the built-in strategies look at the number of choices only)
            decision = 0 if fast("handover", _ONE_CHOICE, index) == 0 else 1
            decisions.append(decision)
        else:
            decision = self.next_decision("handover", (self.labels.get(current, "?"),))
        return _SETTLE if decision == 0 else _AT_ONCE

    # -- when fail-fast's cancellation lands -------------------------------------

    def cancel_cohort(self) -> tuple[int, frozenset[str]]:
        """At a fail-fast run's first failure: the tasks that plain trio would run
        before the cancellation can land, with where the trace stands. Those left
        in the batch being run run before any task started now; those the last
        decision held back would have been in that batch under plain trio, which
        runs every runnable task of a batch."""
        labels = self.labels
        cohort = frozenset(label for task in self.held if (label := labels.get(task)) is not None)
        return len(self._trace), cohort

    def cancel_decision(self) -> bool:
        """The engine asks, as fail-fast's cancellation is about to wait: wait until
        the run settles (``0``: every task that can go on at this instant does
        first, so the failures of the instant are all reported), or land as under
        plain trio (``1``: once the tasks of the failure's batch have run, while
        the others may be between two awaits)? ``True`` for the second."""
        if self.error is not None:
            return False
        return self.next_decision("cancel", (self.labels.get(trio.lowlevel.current_task(), "?"),)) != 0

    async def wait_cohort(self, cohort: tuple[int, frozenset[str]]) -> None:
        """Wait until every task of *cohort* (see :meth:`cancel_cohort`) has run a
        step since, or ended: one batch of plain trio. Event-driven (checked as
        each batch ends, see :meth:`after_task_step`), so that no strategy can
        starve the cohort by running the waiting task again and again."""
        if cohort_done(self._trace, cohort):
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        self.cohort_waiter = (task, cohort)
        self.refills_left = 0  # (checked at each batch's end, in trio's loop: see _slow_path)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.cohort_waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_cohort_waiter(self) -> None:
        waiter = self.cohort_waiter
        if waiter is not None and cohort_done(self._trace, waiter[1]):
            self.cohort_waiter = None
            trio.lowlevel.reschedule(waiter[0])

    # -- settling: the engine's quiescent mode ----------------------------------

    def _quiet(self, settling: bool = False) -> bool:
        """Whether nothing but the running task could run before the run is blocked.

        No task runnable (in trio's run queue or left in the batch being run),
        none waiting to settle (unless *settling*: then tasks waiting to settle
        are allowed, as blocked), no callback queued, no deadline due, no
        thread call waiting or running uncontrolled, no task waiting for real I/O.
        """
        if (
            self.runq
            or self.current_batch
            or self.held
            or (self.settling and not settling)
            or self.runner.waiting_for_idle
            or self.thread_calls
            or self.threads.free
            or self.io_real_time
            or self.callbacks
            or self.idempotent_callbacks
        ):
            return False
        due: float = self.deadlines.next_deadline()
        return due > self.clock._virtual_base

    async def wait_settled(self) -> None:
        """Wait until every task is blocked: :func:`trio.testing.wait_all_tasks_blocked`,
        event-driven.

        The controller sees every batch end, so it wakes the tasks waiting here
        the moment the run queue is empty and nothing is due (no deadline, no
        callback, no thread call), in the same pass of trio's loop; and a task
        that would be the only one to run anyway does not wait at all (it
        still checks for cancellation). Trio's own version waits for a full
        pass of its loop to go by idle, once per wake-up.
        """
        waiting = self.settle(None)
        assert waiting is not None  # (with no nursery, it always waits or checks for cancellation)
        await waiting

    def settle(
        self, nursery: trio.Nursery | None, fixed: Callable[[], bool] | None = None
    ) -> Awaitable[None] | None:
        """The engine's ``settle(nursery)`` at a contended slot: :meth:`handover` decides
        whether to wait at all, and what to await is returned (``None``: take the slot at
        once), so that a wait costs the engine no coroutine of the harness's. With no
        *nursery*, the wait of :meth:`wait_settled`.
        """
        why = _SETTLE if nursery is None else self._handover(nursery, fixed)
        if why == _AT_ONCE:
            return None
        # (with another task of the run runnable, the run has not settled)
        if self.error is None and not self.runq and not self.current_batch and not self.held and self._quiet(settling=True):
            # Every other task is blocked, or waits here: the run has settled.
            # Those waiting go on after this one (in the next batch, oldest
            # first), as they would once this one waited too.
            self._wake_settling()
            return trio.lowlevel.checkpoint_if_cancelled()  # noqa: ASYNC105 (the engine awaits it at once)
        task = _trio_run.GLOBAL_RUN_CONTEXT.task
        park = self.parks.get(task)
        if park is None:
            park = self.parks[task] = _Park(task, self.settling)
        self.settling.append(task)
        return park

    def _wake_settling(self, batch: list[trio.lowlevel.Task] | None = None) -> None:
        """Wake the tasks waiting for the run to settle: they run next, all of them (see
        :meth:`_run_woken`). With *batch* (the empty batch being refilled, nothing else
        runnable), they are that batch at once, oldest first."""
        settling = self.settling
        reschedule = _trio_run.GLOBAL_RUN_CONTEXT.runner.reschedule
        for task in settling:
            reschedule(task)
        if batch is None:
            self.woken.extend(settling)
        else:
            self.runq.clear()  # (they are all it holds)
            batch.extend(reversed(settling))  # (trio pops from the end)
            self.alone = None
            self._account(batch)
        settling.clear()

    def _run_woken(self, runnable: Any, batch: list[trio.lowlevel.Task]) -> None:
        """The next batch is the tasks woken as the run settled, all of them, oldest first
        (after trio's own tasks); the run's other runnable tasks wait for the next decision.

        They all waited for the same settled instant, and each takes its unit as of
        then: had a decision run one of them alone, the unit it took could end
        (at the same virtual instant) before the next one took its own, and which
        units start at that instant would depend on the schedule. No decision is
        made: the order among them does not change which units start.
        """
        woken = self.woken
        self.alone = None
        n = len(woken)
        if not batch and len(runnable) >= n and list(itertools.islice(runnable, n)) == woken:
            # (the usual case: woken as nothing else could run, they lead trio's run
            # queue; after them, at most the task that went on as the run settled)
            rest: list[trio.lowlevel.Task] = list(itertools.islice(runnable, n, None))
            first = woken[:]
        else:
            chosen = set(woken)
            rest = [task for task in runnable if task not in chosen]
            there = set(runnable)
            first = [task for task in woken if task in there]
        woken.clear()
        runnable.clear()
        if rest:
            self._hold(rest, batch)  # (trio's own tasks go in batch, and run first)
            batch.reverse()
        batch[:0] = reversed(first)  # (trio pops from the end)
        self._account(batch)

    # -- scheduling decisions -------------------------------------------------

    def order_batch(self, batch: list[trio.lowlevel.Task]) -> None:
        """Reorder (and possibly shorten) a batch that trio will run by popping from its end.

        Called by trio (as the shuffle of each batch, sorted oldest task
        first). Only the run's own tasks (not trio's system tasks) and waiting
        thread calls count: a decision is made when two or more are there.
        """
        if self.force_stop_after is not None and self.steps >= self.force_stop_after:
            if self.steps >= self.force_stop_after + 1000 and self.error is not None:
                # Even injected stops are being swallowed: crash trio's run loop
                # (trio.run raises TrioInternalError, which the harness unwraps).
                raise self.error
            self._inject_into_runnable(batch)
        self.current_batch = batch  # trio pops the tasks it runs from this list
        self.alone = None
        if not self.labels:
            # trio's own tasks, before the run's function started: nothing to decide,
            # oldest first (trio pops from the end)
            batch.reverse()
            self.steps += len(batch)
            return
        if self.woken:
            tasks = batch[:]
            batch.clear()
            self._run_woken(tasks, batch)
            return
        if len(batch) < 2 and not self.threads.pending:
            # nothing to choose (the common case), and nothing to reverse
            if batch:
                self.steps += 1
                label = self.labels.get(batch[0])
                if label is not None:
                    clock = self.clock
                    now = clock._virtual_base if not clock._rate else clock.current_time()
                    self._trace.append((now, "step", label, ""))
                    if now > self.max_virtual_time or self.steps > self.max_steps:
                        self._over_budget(now)
            return
        if len(self.decisions) >= self.zeros_from and not self.threads.pending:
            self._run_all(batch)
            return
        tasks = batch[:]
        batch.clear()
        held = self.held
        if held:
            self._hold(tasks, batch)
        else:
            # (the usual case: trio's batch is sorted oldest first, and nothing is held
            # back between its passes, so the run's tasks join the line in order)
            labels = self.labels
            for task in tasks:
                if task in labels:
                    held.append(task)
                else:
                    batch.append(task)
        self._decide(batch)

    def _run_all(self, batch: list[trio.lowlevel.Task]) -> None:
        """A batch decision that can only be ``0`` (see ``zeros_from``): *batch* and the
        held tasks all run, oldest first. What :meth:`_hold`, :meth:`_decide` and
        :meth:`_account` do then, in one pass, when no thread call waits."""
        held = self.held
        if held:
            batch.extend(held)
            held.clear()
        self.alone = None
        labels = self.labels
        clock = self.clock
        now = clock._virtual_base if not clock._rate else clock.current_time()
        if len(batch) == 1:  # (the usual case: nothing to sort, no decision)
            label = labels.get(batch[0])
            if label is not None:
                self._trace.append((now, "step", label, ""))
            steps = self.steps = self.steps + 1
        else:
            batch.sort(key=_COUNTER, reverse=True)  # (trio pops from the end)
            ran = [(now, "step", label, "") for task in reversed(batch) if (label := labels.get(task)) is not None]
            if len(ran) >= 2 and self.error is None:
                self.decisions.append(0)
                if self.zero_sizes is not None:
                    self.zero_sizes.append(len(ran))
            self._trace.extend(ran)
            steps = self.steps = self.steps + len(batch)
        if now > self.max_virtual_time or steps > self.max_steps:
            self._over_budget(now)

    def _hold(self, tasks: Iterable[trio.lowlevel.Task], batch: list[trio.lowlevel.Task]) -> None:
        """Put the run's runnable *tasks* in the held line (oldest first); trio's own go in *batch*.

        The held line is the next decision's choices. It lives across batches
        (a task held back stays in it, with its label, until it runs), so a
        decision costs about the same whether one task or ten are runnable.
        """
        labels = self.labels
        held = self.held
        for task in tasks:
            if task not in labels:
                batch.append(task)
                continue
            key = task._counter
            if not held or key > held[-1]._counter:
                held.append(task)
            else:
                held.insert(bisect.bisect_left(held, key, key=_COUNTER), task)

    def _decide(self, batch: list[trio.lowlevel.Task]) -> None:
        """Decide what runs now, from the held line and the waiting thread calls, and fill *batch*.

        ``0`` runs every task, oldest first; ``k`` runs only the ``k``-th
        choice: a task (the others stay held, for the next decision, which
        also sees the tasks this one wakes) or a thread call (run to its end,
        then every task runs). *batch* holds trio's own runnable tasks, which
        run first. The steps are counted, traced and held against the budgets
        here, once per batch: trio calls no hook of the harness per step.
        """
        self.alone = None
        held = self.held
        jobs = self.threads.pending
        n = len(held)
        if n + len(jobs) < 2 or self.error is not None:
            self._release_held(batch)
        else:
            decisions = self.decisions
            draw = self.draw
            fast = self.fast_decide
            if draw is not None and len(decisions) >= self.scheduled:
                # the random walk, as its _choose draws it: 0..the number of choices
                # (the held tasks, the thread calls, and all of them at once if several),
                # with no labels looked up
                decision = draw(n + len(jobs) + (len(jobs) > 1) + 1)
                decisions.append(decision)
            else:
                labels = self.labels
                choices = list(map(labels.__getitem__, held))
                if jobs:
                    choices = [*choices, *(job.label for job in jobs)]
                    if len(jobs) > 1:
                        choices.append(PARALLEL_THREADS)
                if fast is not None and len(decisions) >= self.scheduled:
                    # next_decision, for a built-in strategy (the hot path)
                    raw = fast("batch", choices, len(decisions))
                    decision = 0 if raw == 0 else (raw - 1) % len(choices) + 1
                    decisions.append(decision)
                else:
                    decision = self.next_decision("batch", choices)
            if decision == 0:
                self._release_held(batch)
            elif decision > n:
                index = decision - n - 1
                if not self.threads.run(jobs[index : index + 1] if index < len(jobs) else list(jobs)):
                    self._release_held(batch)
                # (else the call waits for its task to run a call back into trio: the
                # held tasks are the next decision's choices, beside that task)
            else:
                self._run_alone(held.pop(decision - 1), decision, batch)
                return
        self._account(batch)

    def _run_alone(self, chosen: trio.lowlevel.Task, decision: int, batch: list[trio.lowlevel.Task]) -> None:
        """Decision *decision* runs the held task *chosen* alone, after trio's own tasks
        in *batch*: fill the batch, and count, trace and budget its steps."""
        if batch:
            # trio pops from the end: its own tasks first, then the chosen one
            batch.reverse()
            batch.insert(0, chosen)
            self._account(batch)
            return
        # the usual case: one task runs
        batch.append(chosen)
        label = self.labels[chosen]
        self.alone = (chosen, decision, label)
        self._one_step(label, self.clock._virtual_base)

    def _release_held(self, batch: list[trio.lowlevel.Task]) -> None:
        """Every held task runs in this batch, oldest first (trio pops from the end)."""
        held = self.held
        if batch:
            batch.extend(held)
            batch.sort(key=_COUNTER, reverse=True)
        else:
            batch.extend(reversed(held))
        held.clear()

    def _unhold(self) -> None:
        """Give the held tasks back to trio's run queue (its next loop pass takes them)."""
        runq = _trio_run.GLOBAL_RUN_CONTEXT.runner.runq
        runq.extend(self.held)
        self.alone = None
        self.held.clear()

    def _account(self, batch: list[trio.lowlevel.Task]) -> None:
        """Count, trace and budget the steps of *batch*, run from its end."""
        self.steps += len(batch)
        clock = self.clock
        now = clock._virtual_base if not clock._rate else clock.current_time()
        labels = self.labels
        if len(batch) == 1:
            label = labels.get(batch[0])
            if label is not None:
                self._trace.append((now, "step", label, ""))
        else:
            self._trace.extend(
                [(now, "step", label, "") for task in reversed(batch) if (label := labels.get(task)) is not None]
            )
        if now > self.max_virtual_time or self.steps > self.max_steps:
            self._over_budget(now)

    def _over_budget(self, now: float) -> None:
        if self.error is not None:
            return
        if self.steps > self.max_steps:
            what = f"max_steps={self.max_steps!r} task steps"
            self._stop(self._budget_error(what, f"max_steps={self.max_steps * 10!r}", now))
        elif now > self.max_virtual_time:
            what = f"max_virtual_time={self.max_virtual_time!r} seconds"
            more = f"max_virtual_time={self.max_virtual_time * 10!r}"
            self._stop(self._budget_error(what, more, now))

    def lost_notify(self, condition: trio.Condition) -> None:
        """*condition* was notified while no task waited on it (see :func:`describe_wait`)."""
        try:
            task = trio.lowlevel.current_task()
        except RuntimeError:
            return
        if task not in self.labels:
            return
        key = id(condition)
        notify = self.lost_notifies.get(key)
        if notify is None:
            self.lost_notifies[key] = Notify(self.labels[task], self._now())
            self.conditions.append(condition)  # (so that its id is not reused meanwhile)
        else:
            notify.by, notify.time = self.labels[task], self._now()
            notify.count += 1

    def note(self, detail: str) -> None:
        task = trio.lowlevel.current_task()
        label = self.labels.get(task, _ADDRESS.sub("", task.name))
        self._trace.append((self.clock.current_time(), "note", label, detail))

    # -- instrument hooks ---------------------------------------------------

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nursery = task._parent_nursery
        if nursery is not None and nursery.parent_task in self.labels:
            is_main = False
            name = task.name
        elif getattr(task.coro, "cr_code", None) is self.main_code:
            is_main = True
            name = self.main_name
        else:
            return  # one of trio's own system tasks
        clean = _CLEAN_NAMES.get(name)
        if clean is None:
            if len(_CLEAN_NAMES) > 10_000:
                _CLEAN_NAMES.clear()
            clean = _CLEAN_NAMES[name] = _ADDRESS.sub("", name)
        label = f"{clean}#{self.spawned}"
        self.spawned += 1
        self.labels[task] = label
        if is_main:
            self.main_task = task
        self._trace.append((self._now(), "spawn", label, ""))

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        """When a batch is done, take the next one at once if trio's loop would only do that.

        The next iteration of trio's loop would poll for I/O, expire deadlines
        that are due, run queued callbacks, and take the runnable tasks as the
        next batch. When no deadline is due, no callback is queued and no
        thread call waits, the poll is all it would add (and a virtual-time
        program does no I/O): so the harness takes the next batch into the
        list trio is running from, with the same decision it would make there,
        and spares the iteration. At most ``_MAX_REFILLS`` batches in a row, so
        I/O still gets polled. When no task is runnable at all, the run has
        settled: the tasks waiting for that (:meth:`wait_settled`) are the
        next batch.

        trio calls :meth:`instrument_call` instead while the controller is its only
        instrument.
        """
        self.instrument_call("after_task_step", task)

    def instrument_call(self, hookname: str, arg: Any = None) -> None:
        """What trio's instrument table calls (``runner.instruments.call``) while the
        controller is its only instrument (see ``_install._Instruments``): the other hooks,
        and :meth:`after_task_step`'s work, written out here (one call less): it runs at
        every decision of a strategy that runs one task at a time."""
        if hookname != "after_task_step":
            try:
                getattr(self, hookname)(arg)
            except BaseException:  # as trio does with an instrument that raises: disable it, and log
                self._hook_failed(hookname)
            return
        batch = self.current_batch
        if batch:
            return  # (nothing to do in mid-batch)
        try:
            runq = self.runq
            held = self.held
            deadlines = self.deadlines
            heap = deadlines._heap  # (earliest first; next_deadline() drops stale ones)
            clock = self.clock
            now = clock._virtual_base
            left = self.refills_left = self.refills_left - 1
            if (
                left < 0
                or self.threads.free
                or self.callbacks
                or self.idempotent_callbacks
                or (heap and heap[0][0] <= now and deadlines.next_deadline() <= now)
            ):
                self._slow_path()
                return
            if not runq and not held:
                settling = self.settling
                if not settling or self.io_real_time:
                    return  # (with I/O waited for, settled only if none is ready: trio polls first)
                if not self.woken:
                    self._wake_settling(batch)  # (nothing else can run: they are the batch)
                    return
                self._wake_settling()
            if self.woken:
                self._run_woken(runq, batch)
                return
            decisions = self.decisions
            index = len(decisions)
            if index >= self.zeros_from:
                batch.extend(runq)
                runq.clear()
                self._run_all(batch)
                return
            labels = self.labels
            runnable = len(runq)
            if runnable == 1 and not held:
                # one task can run, none is held back: nothing to decide (_hold, _decide
                # and _account, in short)
                task = runq.popleft()
                batch.append(task)
                self.alone = None
                steps = self.steps = self.steps + 1
                label = labels.get(task)
                if label is not None:
                    if clock._rate:
                        now = clock.current_time()
                    self._trace.append((now, "step", label, ""))
                if now > self.max_virtual_time or steps > self.max_steps:
                    self._over_budget(now)
                return
            if runnable > 1 or index < self.scheduled:  # (none runnable: some are held)
                self._hold(runq, batch)
                runq.clear()
                self._decide(batch)
                return
            # The hot path: beside the tasks held back, the task just run is runnable
            # again (or none is: it waits), and the strategy decides.
            if runnable:
                task = runq[0]
                alone = self.alone
                if alone is not None and task is alone[0] and self.sticky is not None and index not in self.sticky:
                    # Nothing else changed: the choices are the last decision's, and the
                    # strategy says it would decide as it did (PCT between its change points).
                    runq.clear()
                    batch.append(task)
                    decisions.append(alone[1])
                    # (_one_step, inlined: this is PCT's common path)
                    steps = self.steps = self.steps + 1
                    if clock._rate:
                        now = clock.current_time()
                    self._trace.append((now, "step", alone[2], ""))
                    if now > self.max_virtual_time or steps > self.max_steps:
                        self._over_budget(now)
                    return
                if task not in labels:  # (one of trio's own tasks)
                    self._hold(runq, batch)
                    runq.clear()
                    self._decide(batch)
                    return
                runq.clear()
                key = task._counter
                if key > held[-1]._counter:
                    held.append(task)
                else:
                    held.insert(bisect.bisect_left(held, key, key=_COUNTER), task)
            n = len(held)
            if n < 2:  # (the one task held back is the only one that can run: it runs)
                task = held.pop()
                batch.append(task)
                self.alone = None
                self._one_step(labels[task], now)
                return
            bits = self.bits
            if bits is not None:  # the random walk: 0..n, as its _choose draws it (_below)
                m = n + 1
                k = m.bit_length()
                decision = bits(k)
                while decision >= m:
                    decision = bits(k)
                decisions.append(decision)
            elif self.draw is not None:  # the random walk, drawn by Random itself
                decision = self.draw(n + 1)
                decisions.append(decision)
            else:
                names = list(map(labels.__getitem__, held))
                fast = self.fast_decide
                if fast is not None:  # next_decision, for a built-in strategy
                    raw = fast("batch", names, index)
                    decision = 0 if raw == 0 else (raw - 1) % n + 1
                    decisions.append(decision)
                else:
                    decision = self.next_decision("batch", names)
            if decision == 0:
                self.alone = None
                self._release_held(batch)
                self._account(batch)
                return
            task = held.pop(decision - 1)
            label = labels[task]
            batch.append(task)
            self.alone = (task, decision, label)
            # (_one_step, inlined: the random walk's common path)
            steps = self.steps = self.steps + 1
            if clock._rate:
                now = clock.current_time()
            self._trace.append((now, "step", label, ""))
            if now > self.max_virtual_time or steps > self.max_steps:
                self._over_budget(now)
        except BaseException:  # as trio does with an instrument that raises: disable it, and log
            self._hook_failed(hookname)

    def _slow_path(self) -> None:
        """The end of a batch after which trio's loop runs (the tasks held back go back
        to its run queue): it has batches to take that the harness may not take for it
        (a deadline due, a callback or a thread call waiting), or the harness took
        ``_MAX_REFILLS`` in a row, or the run stops, or a fail-fast cancellation waits
        for its cohort (checked here, at each batch's end). The last three, and a
        thread call submitted, set ``refills_left`` to 0 (trio's loop sets it back,
        in :meth:`before_io_wait`, once none holds)."""
        if self.cohort_waiter is not None:
            self._wake_cohort_waiter()
        if self.held:
            self._unhold()

    def _hook_failed(self, hookname: str) -> None:
        table = self.runner.instruments
        table._disable(hookname, next(iter(table[hookname])))

    def _one_step(self, label: str, now: float) -> None:
        """Count, trace and budget the step of the one task of a batch (*now*: the
        virtual time, unless the clock follows real time)."""
        self.steps += 1
        clock = self.clock
        if clock._rate:
            now = clock.current_time()
        self._trace.append((now, "step", label, ""))
        if now > self.max_virtual_time or self.steps > self.max_steps:
            self._over_budget(now)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        label = self.labels.pop(task, None)
        if label is not None:
            self._trace.append((self._now(), "exit", label, ""))

    def before_io_wait(self, timeout: float) -> None:
        # (a pass of trio's loop: the harness may take batches again, see _slow_path)
        self.refills_left = (
            _MAX_REFILLS if self.error is None and self.cohort_waiter is None and not self.thread_calls else 0
        )
        runner = _trio_run.GLOBAL_RUN_CONTEXT.runner
        if self.held:  # (given back at every batch's end; never expected here)
            self._unhold()
            if timeout > 0:
                trio.lowlevel.current_trio_token().run_sync_soon(_nothing)
        if not self.labels:
            return  # the run's tasks have not started, or have all ended: trio's own end
        if runner.runq or runner.waiting_for_idle:
            # tasks are runnable, or will be once the others block (the common
            # cases, so checked first): not idle
            self.idle_since = None
            if self.steps - self.cycle_checked >= _CYCLE_CHECK_EVERY:
                self._check_cycle()
            return
        if self.threads.pending or self.threads.free:
            jobs = self.threads.pending
            if jobs:
                # nothing else can run: a waiting thread call runs now, before
                # the clock may jump (the oldest, unless the schedule says
                # another, or all of them in parallel)
                index = 0
                if len(jobs) > 1 and self.error is None:
                    choices = [job.label for job in jobs] + [PARALLEL_THREADS]
                    index = max(0, self.next_decision("batch", choices) - 1)
                self.threads.run(jobs[index : index + 1] if index < len(jobs) else list(jobs))
            return
        if self.settling:
            # no task is runnable: once nothing is due either, the run has
            # settled, and the tasks waiting for that are the next batch
            self.idle_since = None
            entry = runner.entry_queue
            if entry.queue or entry.idempotent_queue:
                return
            if runner.deadlines.next_deadline() <= self._now():
                return
            self._wake_settling()
            if timeout > 0:  # computed for a loop with nothing to run: wake its I/O wait
                trio.lowlevel.current_trio_token().run_sync_soon(_nothing)
            return
        if self.cycle_checked != self.steps and self._check_cycle():
            return
        if (self._io_waiters() > 1) != self.io_real_time:
            self._follow_io()
        if runner.deadlines.next_deadline() != math.inf or not self._looks_idle():
            # (a deadline pending, the common case: the clock will jump to it)
            self.idle_since = None
            return
        now = time.perf_counter()
        if self.idle_since is None or self.idle_generation != self.steps:
            self.idle_since = now
            self.idle_generation = self.steps
            return
        if now - self.idle_since < self.grace:
            return
        self.idle_since = None
        if self.error is None:
            self._stop(self._deadlock_error())
        elif self.forced_rounds < 3:
            # Cancellation did not end it (a shielded wait): raise into every
            # blocked task, the way trio delivers a cancellation.
            self.forced_rounds += 1
            self._inject_into_blocked()

    def _check_cycle(self) -> bool:
        """Stop the run if some of its tasks wait for each other in a cycle."""
        self.cycle_checked = self.steps
        if self.error is not None:
            return False
        # The tasks that could be in a cycle: blocked, with no deadline to wake
        # them, each in one particular wait (a wait's abort function is its
        # own). If that set is what it was at the last look, so is the answer
        # (a ticking task re-parks each tick, but it has a deadline).
        # Only parked tasks and tasks waiting for their children can be in a
        # cycle (GRAPH_WAITS): most runs have fewer than two, and are done here.
        blocked = [
            (task, abort)
            for task in self.labels
            if (abort := task._abort_func) is not None and getattr(abort, "__code__", None) in GRAPH_WAITS
        ]
        if len(blocked) < 2:
            self.last_waits = frozenset()
            return False
        waits = frozenset(wait for wait in blocked if not _has_deadline(wait[0]))
        if waits == self.last_waits:
            return False
        self.last_waits = waits
        if len(waits) < 2:
            return False
        cycle = find_cycle(self._user_tasks(), self.labels)
        if cycle is None:
            return False
        self._stop(self._cycle_error(cycle))
        return True

    def _stop(self, error: BaseException) -> None:
        self.error = error
        self.refills_left = 0
        # If cancellation does not end the run within this many further steps,
        # inject a stop into every runnable task.
        self.force_stop_after = self.steps + max(1000, self.max_steps // 10)
        if self.token is not None:
            # cancel from a task (trio's callback task), not from inside a hook
            self.token.run_sync_soon(self._cancel)

    def _cancel(self) -> None:
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def stop_with(self, error: BaseException) -> None:
        """Stop the run with *error* (for example, from the thread runner)."""
        if self.error is None:
            self._stop(error)

    # -- forced stops ---------------------------------------------------------

    def _inject_into_runnable(self, batch: list[trio.lowlevel.Task]) -> None:
        for task in batch:
            if task in self.labels and isinstance(task._next_send, outcome.Outcome):
                task._next_send = outcome.Error(_ForcedStop("stopped by trioflow.testing"))

    def _inject_into_blocked(self) -> None:
        def raise_stop() -> None:
            raise _ForcedStop("stopped by trioflow.testing")

        for task in list(self.labels):
            if task._abort_func is not None:
                task._attempt_abort(raise_stop)

    # -- deadlock detection -------------------------------------------------

    def _follow_io(self) -> None:
        """While a task waits for real I/O (a subprocess, a socket), let virtual time be real.

        Nothing runnable, and the clock would jump to the next deadline: right
        for sleeps and timeouts, wrong for a subprocess or a server that takes
        real time to answer (a ``move_on_after(5)`` around a 0.3 s subprocess
        would time out at once). So while a task waits for I/O the clock runs
        at the rate of real time, and jumps again once none does.
        """
        waiting = self._io_waiters() > 1  # trio's own wakeup socket is always waited on
        if waiting != self.io_real_time:
            self.io_real_time = waiting
            self.threads.real_time_changed()
            # this iteration's timeout was computed for the other mode: wake it
            trio.lowlevel.current_trio_token().run_sync_soon(_nothing)

    def _io_waiters(self) -> int:
        registered = self.io_registered
        if registered is not None:
            # what epoll's statistics() counts, without building them (asked at every idle point)
            total = 0
            for waiters in registered.values():
                total += (waiters.read_task is not None) + (waiters.write_task is not None)
            return total
        stats = _trio_run.GLOBAL_RUN_CONTEXT.runner.io_manager.statistics()
        names = _IO_COUNTS.get(type(stats))
        if names is None:
            names = _IO_COUNTS[type(stats)] = tuple(
                field.name
                for field in attrs.fields(type(stats))
                if field.name.startswith(("tasks_waiting", "monitors", "completion_key"))
            )
        total = 0
        for name in names:
            value = getattr(stats, name)
            if isinstance(value, int):
                total += value
        return total

    def _looks_idle(self) -> bool:
        if _trio_run.GLOBAL_RUN_CONTEXT.runner.deadlines.next_deadline() != math.inf:
            return False  # the clock will jump to it (checked first: it is cheap)
        stats = trio.lowlevel.current_statistics()
        if stats.tasks_runnable or stats.run_sync_soon_queue_size:
            return False
        if not math.isinf(stats.seconds_to_next_deadline):
            return False
        # trio's own run_sync_soon task always waits on its wakeup socket.
        if self._io_waiters() > 1:
            return False
        # nor is a task that waits for a store's writer thread
        return not any(
            frame.f_code is _THREAD_WAIT
            for task in self.labels
            for frame, _ in task.iter_await_frames()
        )

    def _user_tasks(self) -> Iterator[trio.lowlevel.Task]:
        """User tasks (the main task and its descendants), in spawn order."""
        if self.main_task is None:
            return
        stack = [self.main_task]
        found = []
        while stack:
            task = stack.pop()
            if task in self.labels:
                found.append(task)
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        spawn_order = {task: i for i, task in enumerate(self.labels)}
        yield from sorted(found, key=lambda t: spawn_order.get(t, -1))

    def _deadlock_error(self) -> DeadlockError:
        lines = [
            f"deadlock: every task is blocked and no deadline is pending, at virtual time "
            f"{self.clock.current_time()!r} after {self.steps} task steps "
            f"(nothing happened for {self.grace!r} s of real time)."
        ]
        lines.append("Blocked tasks, and where each one waits:")
        for task in self._user_tasks():
            label = self.labels.get(task, task.name)
            lines.append(f"  - {label}: {_where(list(task.iter_await_frames()))}")
            what = describe_wait(task, self.labels, self.lost_notifies)
            if what is not None:
                lines.append(f"      {what}")
        lines.append(_replay_hint(self.decisions))
        return DeadlockError("\n".join(lines), decisions=tuple(_trim(self.decisions)))

    def _cycle_error(self, cycle: list[Wait]) -> DeadlockError:
        lines = [
            f"deadlock: {len(cycle)} tasks wait for each other in a cycle, at virtual time "
            f"{self.clock.current_time()!r} after {self.steps} task steps; none of them can "
            f"ever go on, whatever the other tasks do."
        ]
        lines.append("The cycle: each task, what it holds, what it waits for, and its await frames:")
        for i, wait in enumerate(cycle):
            label = self.labels.get(wait.task, wait.task.name)
            holder = self.labels.get(wait.holder, wait.holder.name)
            before = cycle[i - 1]
            wanted_by = self.labels.get(before.task, before.task.name)
            frames = list(wait.task.iter_await_frames())
            lines.append(f"  - {label}: {_where(frames)}")
            lines.append(f"      holds a {describe_resource(before.resource)} wanted by {wanted_by}")
            lines.append(f"      waits for a {describe_resource(wait.resource)} held by {holder}")
            lines.extend(f"      await frame: {line}" for line in _await_frames(frames))
        lines.append(_replay_hint(self.decisions))
        return DeadlockError("\n".join(lines), decisions=tuple(_trim(self.decisions)))

    def _budget_error(self, what: str, more: str, now: float) -> BudgetExceededError:
        steps_by_label = Counter(label for _, kind, label, _ in self._trace if kind == "step")
        busiest = ", ".join(f"{label} ({n} steps)" for label, n in steps_by_label.most_common(3))
        last_step: dict[str, tuple[int, float]] = {}
        for index, (time_, kind, label, _) in enumerate(self._trace):
            if kind in ("step", "spawn"):
                last_step[label] = (index, time_)
        waiting = []
        for task in self._user_tasks():
            if task._abort_func is None:
                continue
            label = self.labels.get(task, task.name)
            step, since = last_step.get(label, (0, 0.0))
            waiting.append((step, label, since, task))
        waiting.sort(key=lambda w: w[0])
        longest = "".join(
            f"\n  - {label}: blocked since virtual time {since!r}, at "
            f"{_where(list(task.iter_await_frames()))}"
            + (f"\n      {said}" if (said := describe_wait(task, self.labels, self.lost_notifies)) else "")
            for _, label, since, task in waiting[:3]
        )
        message = (
            f"the run exceeded {what} (at virtual time {now!r} after {self.steps} task steps): "
            f"a livelock, an endless ticker, or simply a longer run than the budget allows. "
            f"Busiest tasks: {busiest}. If the work is legitimately this long, raise the budget, "
            f"e.g. run_deterministic(..., {more})."
            + (f"\nTasks blocked the longest:{longest}" if longest else "")
            + "\n"
            + _replay_hint(self.decisions)
        )
        return BudgetExceededError(message, decisions=tuple(_trim(self.decisions)))


def _nothing() -> None:
    pass


_COUNTER: Final = operator.attrgetter("_counter")


def _descends_from(task: trio.lowlevel.Task, ancestor: trio.Nursery) -> bool:
    """Whether *task* runs in *ancestor*, or in a nursery of a task that does, and so on."""
    nursery = task.parent_nursery
    while nursery is not None:
        if nursery is ancestor:
            return True
        nursery = nursery.parent_task.parent_nursery
    return False


