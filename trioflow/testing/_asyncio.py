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

What is not covered on asyncio (see :doc:`testing`): wait-for cycles
(asyncio's locks have no owner), the engine's hand-over decisions (the engine
hands slots over at once on asyncio, as in production), and threads started
by other means (``anyio.to_thread`` runs its own worker threads there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs
import outcome

from ._errors import BudgetExceededError, DeadlockError
from ._strategy import DecisionPoint, Strategy
from ._trace import _LIBRARY_MARKERS, Trace, _trim

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

    @property
    def trace(self) -> Trace:
        return Trace(self._trace)

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

    def time(self) -> float:
        return self._virtual

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        ctl = self._ctl
        if self._cleanup:
            return task
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
        label = self._ctl.labels.pop(task, None)
        if label is not None:
            self._ctl._trace.append((self._virtual, "exit", label, ""))

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
        timeout = 0.0 if ready or stopping or scheduled or self._cleanup else ctl.grace
        event_list = self._selector.select(timeout)  # type: ignore[attr-defined]
        self._process_events(event_list)  # type: ignore[attr-defined]
        if not ready and not stopping and not event_list and not self._cleanup:
            if scheduled:
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
        jobs = ctl.threads.pending
        if len(batch) + len(jobs) >= 2 and ctl.error is None and not self._cleanup:
            choices = [self._label(h) for h in batch] + [job.label for job in jobs]
            decision = ctl.next_decision("batch", choices)
            if decision > len(batch):
                self._executor.run(jobs[decision - len(batch) - 1])
            elif decision:
                chosen = batch.pop(decision - 1)
                ready.extend(batch)
                batch = [chosen]
        for handle in batch:
            self._step(handle)

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
        handle._run()

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
        loop.finish()
