"""``run_deterministic`` and ``check_deterministic``: run async code under a controlled schedule."""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio
import trio.lowlevel
import trio.testing
from trio._core import _run as _trio_run

from .._scheduler import quiescent_scheduling, settle_decision
from ._canary import check_trio
from ._control import Controller, EngineHooks
from ._errors import (
    BudgetExceededError,
    DeadlockError,
    FailingSchedule,
    NonDeterminismError,
    attach,
)
from ._install import ScheduleRandom, active, install, install_instruments, release, restore
from ._strategy import Bounded, Strategy, make_strategy, strategy_name
from ._threads import serial_alternatives
from ._trace import TraceEvent, _trim

__all__ = ["DeterministicRun", "check_deterministic", "note", "run_deterministic"]

T = TypeVar("T")

_lock = threading.Lock()


@attrs.frozen
class DeterministicRun(Generic[T]):
    """What :func:`run_deterministic` observed.

    Attributes:
        value: What the function returned.
        virtual_time: The virtual time (seconds, starting from 0) at which it returned.
        decisions: The schedule actually taken, with trailing zeros removed;
            passing it as ``schedule=`` replays the run exactly.
        trace: Every task event of the run, in order (a read-only sequence of
            :class:`TraceEvent`, made as they are looked at). The steps of a
            scheduling batch are recorded when the batch is chosen, so they
            come before what those steps did (spawns, exits, notes).
            Tasks are named by their trio name and spawn index, never by
            ``id()``, so the trace is identical whenever the schedule is.
        steps: The number of task steps the scheduler ran until the function
            returned (trio's own tasks included; its shutdown afterwards is
            not the run's).
    """

    value: T
    virtual_time: float
    decisions: tuple[int, ...]
    trace: Sequence[TraceEvent]
    steps: int


async def _main(
    controller: Controller, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> tuple[outcome.Outcome[Any], float]:
    try:
        # The controller stops the run by cancelling the scope of the nursery that
        # trio runs this task in, which holds this task alone: the function's
        # cancellation ends in acapture's outcome, and no checkpoint follows it here.
        nursery = trio.lowlevel.current_task().parent_nursery
        assert nursery is not None
        controller.cancel_scope = nursery.cancel_scope
        controller.token = trio.lowlevel.current_trio_token()
        install_instruments(controller)
        if controller.error is not None:
            controller.cancel_scope.cancel()
        result = await outcome.acapture(fn, *args)
        end = trio.current_time()
    except BaseException:
        # Only a forced stop (injected into the harness's own task too) gets here.
        if controller.error is None:
            raise
    finally:
        # the rest is trio's own shutdown, in its own order, with its own table
        release(controller)
    if controller.error is not None:
        # The function was cancelled (or stopped) by the harness: its outcome
        # is an artefact of that, the harness's error is the news.
        raise controller.error
    return result, end


def _check_schedule(schedule: Sequence[int] | None) -> list[int]:
    if schedule is None:
        return []
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise TypeError(
            f"schedule must be a sequence of non-negative ints such as [0, 2, 1], "
            f"got {schedule!r} (a {type(schedule).__name__})"
        )
    for item in schedule:
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ValueError(
                f"schedule entries must be non-negative ints, got {item!r} in {list(schedule)!r}; "
                f"use the .decisions of an earlier run or a list drawn by "
                f"trioflow.testing.strategies.schedules()"
            )
    return list(schedule)


def run_deterministic(
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    seed: int | None = None,
    schedule: Sequence[int] | None = None,
    strategy: str | Strategy | None = None,
    backend: str = "trio",
    grace: float = 0.05,
    max_steps: int = 100_000,
    max_virtual_time: float = 1e9,
) -> DeterministicRun[T]:
    """Run ``fn(*args)`` under trio with virtual time and a controlled schedule.

    The run uses :class:`trio.testing.MockClock` with ``autojump_threshold=0``,
    so sleeps and timeouts take no real time and end exactly, and replaces
    trio's scheduler randomness so that every choice of which runnable task goes
    next is a recorded *decision*. The same ``seed`` or ``schedule`` gives the
    same value, virtual timeline, decisions and trace, every time.

    This is a synchronous function that calls :func:`trio.run`; call it from
    plain (non-async) code, such as a test function or a Hypothesis ``@given``
    test. anyio code works unchanged (anyio runs on its trio backend here).

    Args:
        fn: An async function, for example ``flow.run``.
        *args: Positional arguments for ``fn``. Use :func:`functools.partial`
            for keyword arguments.
        seed: Seeds the strategy; with no ``strategy``, a seed means
            ``strategy="random"``. ``None`` with no ``strategy`` and no
            ``schedule`` means FIFO: every batch of runnable tasks runs oldest
            task first.
        schedule: Explicit decisions, one per decision point (see
            :class:`DecisionPoint`): at a batch, ``0`` runs the whole batch
            oldest first, ``k >= 1`` takes only the ``(k - 1) % n``-th of the
            ``n`` choices (tasks oldest first, then waiting thread calls) and
            holds the rest back; at a flow's hand-over of a freed slot, ``0``
            settles first and ``1`` hands over at once. When the list runs
            out, the rest of the run is chosen by the strategy if one is
            given, else FIFO. ``[]`` is FIFO.
        strategy: Who chooses the decisions after ``schedule``: ``"random"``,
            ``"pct"``, ``"bounded"``, ``"portfolio"`` (built from ``seed``,
            0 if ``None``), or any :class:`Strategy` object.
        backend: ``"trio"`` (the default) or ``"asyncio"``: run ``fn`` on an
            asyncio event loop whose ready queue follows the same decisions
            and whose clock is virtual (see :doc:`testing` for what differs).
        grace: Seconds of real time that every task must stay blocked, with no
            deadline pending, before the run is declared deadlocked.
        max_steps: Budget of task steps; exceeding it raises
            :class:`BudgetExceededError` (a livelock or endless loop).
        max_virtual_time: Budget of virtual seconds; exceeding it raises
            :class:`BudgetExceededError` (an endless ticker).

    Returns:
        A :class:`DeterministicRun` with ``value``, ``virtual_time``,
        ``decisions`` and ``trace``.

    Raises:
        DeadlockError: Every task is blocked and nothing can wake any of them.
            The message lists each blocked task and the line it waits at.
        BudgetExceededError: ``max_steps`` or ``max_virtual_time`` was exceeded.
        RuntimeError: Called while another ``run_deterministic`` is running (in
            this or another thread), or from inside a running trio loop.
        Exception: Whatever ``fn`` raised, as it is (not wrapped in a group);
            :func:`failing_schedule` reads its replay.

    Example::

        result = run_deterministic(flow.run, {"topic": "cats"}, seed=3)
        again = run_deterministic(flow.run, {"topic": "cats"}, schedule=result.decisions)
        assert again == result
    """
    if inspect.iscoroutine(fn):
        fn.close()
        raise TypeError(
            f"run_deterministic() needs an async function and its arguments, got the coroutine "
            f"object {fn!r}; pass the function itself, e.g. run_deterministic(flow.run, inputs) "
            f"rather than run_deterministic(flow.run(inputs))"
        )
    if not callable(fn):
        raise TypeError(f"run_deterministic() needs an async function, got {fn!r}")
    explicit = _check_schedule(schedule)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    _check_options(backend, grace, max_steps, max_virtual_time)
    chooser: Strategy | None = None
    if strategy is not None:
        chooser = make_strategy(strategy, seed)
    elif seed is not None:
        chooser = make_strategy("random", seed)
    if chooser is not None:
        chooser.start_run(0)
    name = strategy_name(chooser) if chooser is not None else "schedule" if explicit else "fifo"
    result, end, controller = _run_or_attach(
        fn, args, explicit, chooser, seed, name, 0, backend, float(grace), max_steps,
        float(max_virtual_time),
    )
    decisions = tuple(_trim(controller.decisions))
    if chooser is not None:
        chooser.end_run(decisions, controller.steps)
    if isinstance(result, outcome.Error):
        error = result.error
        if isinstance(error, BaseException) and not isinstance(error, trio.Cancelled):
            replay = _replay(controller, seed, name, 0, backend)
            attach(error, replay)
            error.add_note(
                f"(raised under trioflow.testing.run_deterministic; replay this run with "
                f"schedule={list(decisions)!r}{_backend_hint(backend)}){_thread_warning(controller)}"
            )
    value = result.unwrap()
    return DeterministicRun(
        value=value,
        virtual_time=end,
        decisions=decisions,
        trace=controller.take_trace(),
        steps=controller.steps,
    )


def _check_options(backend: str, grace: float, max_steps: int, max_virtual_time: float) -> None:
    if backend not in ("trio", "asyncio"):
        raise ValueError(
            f"backend must be 'trio' or 'asyncio', got {backend!r}; anyio code runs on either"
        )
    if not (isinstance(grace, (int, float)) and grace >= 0 and math.isfinite(grace)):
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    if not (isinstance(max_virtual_time, (int, float)) and max_virtual_time > 0):
        raise ValueError(f"max_virtual_time must be a positive number, got {max_virtual_time!r}")


def _replay(controller: Any, seed: int | None, name: str, run: int, backend: str) -> FailingSchedule:
    return FailingSchedule(
        schedule=tuple(_trim(controller.decisions)),
        seed=seed,
        strategy=name,
        run=run,
        backend=backend,
        threads=controller.threads.started,
    )


def _backend_hint(backend: str) -> str:
    return ", backend='asyncio'" if backend == "asyncio" else ""


def _thread_warning(controller: Any) -> str:
    threads = controller.threads
    n, parallel = threads.uncontrolled, getattr(threads, "parallel", 0)
    text = ""
    if n:
        text += (
            f"\n(this run made {n} worker-thread call(s) that called back into the event loop "
            f"or waited for another thread; they ran uncontrolled, in parallel with the tasks, "
            f"so a replay may not be exact)"
        )
    if parallel:
        text += (
            f"\n(this run ran several worker-thread calls at once, in parallel, {parallel} "
            f"time(s); a replay runs them at the same point, but how they interleave inside is "
            f"up to the operating system, so it may not reproduce a race between them)"
        )
    return text


def _run_or_attach(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    schedule: list[int],
    strategy: Strategy | None,
    seed: int | None,
    name: str,
    run: int,
    backend: str,
    grace: float,
    max_steps: int,
    max_virtual_time: float,
) -> tuple[outcome.Outcome[T], float, Any]:
    """Run once; a harness error (deadlock, budget) gets its replay attached."""
    holder: list[Any] = []
    _real_time[0] = False
    try:
        if backend == "asyncio":
            from ._asyncio import run_asyncio

            return run_asyncio(
                fn, args, schedule, strategy, grace, max_steps, max_virtual_time, holder,
                _task_name(fn),
            )
        ran = _run(fn, args, schedule, strategy, grace, max_steps, max_virtual_time, holder)
        _real_time[0] = _followed_real_time(ran[2])
        return ran
    except (DeadlockError, BudgetExceededError) as exc:
        if holder:
            attach(exc, _replay(holder[0], seed, name, run, backend))
            if run:
                exc.add_note(
                    f"(run {run} of trioflow.testing.check_deterministic, strategy {name!r}, "
                    f"seed {seed!r}){_thread_warning(holder[0])}"
                )
        raise


def _run(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    schedule: list[int],
    strategy: Strategy | None,
    grace: float,
    max_steps: int,
    max_virtual_time: float,
    holder: list[Any],
) -> tuple[outcome.Outcome[T], float, Controller]:
    check_trio()  # the canary: refuse clearly if trio's private scheduler changed
    if hasattr(_trio_run.GLOBAL_RUN_CONTEXT, "runner"):  # (what current_trio_token() reads)
        raise RuntimeError(
            "run_deterministic() was called from inside a running trio loop; it starts its own "
            "trio.run, so call it from synchronous code (a plain, non-async test function)"
        )
    if not _lock.acquire(blocking=False):
        raise RuntimeError(
            "run_deterministic() is already running: it replaces trio's process-wide scheduler "
            "randomness, so runs cannot be nested or run in parallel threads; run them one "
            "after another"
        )
    try:
        clock = trio.testing.MockClock(autojump_threshold=0)
        controller = Controller(
            schedule=schedule,
            strategy=strategy,
            grace=grace,
            max_steps=max_steps,
            max_virtual_time=max_virtual_time,
            main_code=_main.__code__,
            main_name=_task_name(fn),
            clock=clock,
        )
        holder.append(controller)
        install(ScheduleRandom(controller))
        # the engine settles each virtual instant before it hands out slots,
        # unless the schedule says to hand a freed slot over at once
        quiescent = quiescent_scheduling.set(True)
        hooks = EngineHooks(controller)
        settle = settle_decision.set(hooks)
        try:
            result, end = trio.run(_main, controller, fn, args, clock=clock)
        except trio.TrioInternalError as exc:
            if controller.error is not None and exc.__cause__ is controller.error:
                raise controller.error from None
            raise
        finally:
            settle_decision.reset(settle)
            quiescent_scheduling.reset(quiescent)
            restore()
            hooks.close()
            controller.threads.close()
    finally:
        _lock.release()
    return result, end, controller


def note(event: object) -> None:
    """Add ``str(event)`` to the trace of the :func:`run_deterministic` run in progress.

    Pass it as a flow's event callback to see step events in the trace:
    ``flow.run(inputs, on_event=note)``. Outside a deterministic run, or
    outside trio, it does nothing. Not a checkpoint.

    Args:
        event: Anything; its ``str()`` becomes the ``detail`` of a
            :class:`TraceEvent` of kind ``"note"``, labelled with the current task.
    """
    if not active:
        return
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return
    active[-1].note(str(event))


def _first_difference(a: object, b: object, path: str = "value", depth: int = 0) -> str:
    """Describe the first place where *a* and *b* differ, descending into containers."""
    if depth < 8 and isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return (
                    f"{path}[{key!r}] is {a.get(key, '<missing>')!r} vs {b.get(key, '<missing>')!r}"
                )
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}[{key!r}]", depth + 1)
    elif (
        depth < 8
        and isinstance(a, Sequence)
        and isinstance(b, Sequence)
        and not isinstance(a, (str, bytes))
        and not isinstance(b, (str, bytes))
    ):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]", depth + 1)
        if len(a) != len(b):
            return f"len({path}) is {len(a)} vs {len(b)}"
    return f"{path} is {a!r} vs {b!r}"


def check_deterministic(
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    runs: int = 100,
    seed: int = 0,
    strategy: str | Strategy = "portfolio",
    backend: str = "trio",
    grace: float = 0.05,
    max_steps: int = 100_000,
    max_virtual_time: float = 1e9,
) -> T:
    """Run ``fn(*args)`` under many schedules and check that the result never changes.

    Run 0 is FIFO (``schedule=[]``); then ``runs - 1`` runs take the
    decisions of ``strategy``. Each run's return value and virtual end time
    are compared with the FIFO run's; the first run that differs is reported
    with its number, its strategy, both values and both schedules.

    Args:
        fn: An async function, for example ``flow.run``.
        *args: Positional arguments for ``fn``.
        runs: How many runs in all, FIFO included. A ``"bounded"`` search
            that runs out of schedules stops early.
        seed: Seeds the strategy, so a check is reproducible.
        strategy: ``"portfolio"`` (the default: random walk, PCT and bounded
            search in turn), ``"random"``, ``"pct"``, ``"bounded"``, or any
            :class:`Strategy` object.
        backend: ``"trio"`` or ``"asyncio"``, as for :func:`run_deterministic`.
        grace: As for :func:`run_deterministic`.
        max_steps: As for :func:`run_deterministic`.
        max_virtual_time: As for :func:`run_deterministic`.

    Returns:
        The common return value.

    Raises:
        NonDeterminismError: A run gave a different value or end time, or
            raised where FIFO did not; the message shows the first differing
            value, both values and both schedules, replayable with
            ``run_deterministic``; its ``run``, ``strategy``, ``seed`` and
            ``schedule`` say which run it was.
        DeadlockError: A run deadlocked (its ``schedule`` replays it).
        BudgetExceededError: A run exceeded a budget.
        Exception: Whatever ``fn`` raised under the FIFO schedule, as it is.
    """
    if not (isinstance(runs, int) and runs >= 1):
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    chooser = make_strategy(strategy, seed)
    _check_options(backend, grace, max_steps, max_virtual_time)
    base = run_deterministic(
        fn,
        *args,
        schedule=[],
        backend=backend,
        grace=grace,
        max_steps=max_steps,
        max_virtual_time=max_virtual_time,
    )
    # a run whose clock followed real time while a task waited for real I/O (a
    # subprocess, a socket) ends at a time that includes real durations: its end
    # time says nothing about the schedule, so only values are compared
    base_real_time = _real_time[0]
    for run in range(1, runs):
        if isinstance(chooser, Bounded) and not chooser.queue:
            break  # the bounded search has tried every schedule within its bound
        chooser.start_run(run)
        name = strategy_name(chooser)
        result, end, controller = _run_or_attach(
            fn, args, [], chooser, seed, name, run, backend, float(grace), max_steps,
            float(max_virtual_time),
        )
        # (not compared: dropped now, rather than with an asyncio run's controller, which
        # waits for the cycle collector with its loop)
        controller.take_trace()
        decisions = tuple(_trim(controller.decisions))
        chooser.end_run(decisions, controller.steps)
        serial = ""
        if getattr(controller.threads, "parallel", 0) and _differs(result, end, base):
            options = (seed, name, run, backend, grace, max_steps, max_virtual_time)
            exact = _serial_replay(fn, args, result, end, controller, options)
            if exact is not None:
                result, end, controller = exact
                decisions = tuple(_trim(controller.decisions))
                serial = (
                    "\n(the run that failed ran worker-thread calls in parallel, which cannot "
                    "replay exactly; this schedule runs them one after another and fails the "
                    "same way, every time)"
                )
        if isinstance(result, outcome.Value):
            value = result.value
            timed = not (base_real_time or _followed_real_time(controller))
            if not (value != base.value or (timed and end != base.virtual_time)):
                continue  # the common case: nothing to report
        replay = (
            f"Replay with trioflow.testing.run_deterministic(fn, *args, "
            f"schedule={list(decisions)!r}{_backend_hint(backend)})."
            + (serial or _thread_warning(controller))
        )
        which = f"run {run} (strategy {name!r}, seed {seed!r})"
        info = _replay(controller, seed, name, run, backend)
        if isinstance(result, outcome.Error):
            exc = result.error
            if not isinstance(exc, Exception):
                raise exc
            attach(exc, info)
            error = NonDeterminismError(
                f"{_name(fn)} returned under the FIFO schedule but raised under {which}:\n"
                f"{_fifo_line(base)}  {which}, schedule={list(decisions)!r}: raised {exc!r}\n{replay}",
                expected=base.value,
                got=exc,
                expected_schedule=base.decisions,
                schedule=decisions,
                seed=seed,
                strategy=name,
                run=run,
            )
            attach(error, info)
            raise error from exc
        value = result.unwrap()
        timed = not (base_real_time or _followed_real_time(controller))
        if value != base.value or (timed and end != base.virtual_time):
            if value != base.value:
                first = _first_difference(base.value, value)
            else:
                first = f"the virtual end time: {base.virtual_time!r} vs {end!r}"
            error = NonDeterminismError(
                f"{_name(fn)} is not deterministic: {which} differs from run 0 (FIFO); "
                f"the first difference is {first}\n"
                f"{_fifo_line(base)}  {which}, schedule={list(decisions)!r}: value={value!r}, "
                f"virtual_time={end!r}\n{replay}",
                expected=base.value,
                got=value,
                expected_schedule=base.decisions,
                schedule=decisions,
                seed=seed,
                strategy=name,
                run=run,
            )
            attach(error, info)
            raise error
    return base.value


def _fifo_line(base: DeterministicRun[Any]) -> str:
    """The FIFO run's line of a :class:`NonDeterminismError` (made only for one: the
    ``repr`` of a flow's result makes all its step results)."""
    return f"  run 0, schedule=[] (FIFO): value={base.value!r}, virtual_time={base.virtual_time!r}\n"


# whether the last run's virtual time followed real time for a while (see _follow_io)
_real_time: list[bool] = [False]


def _followed_real_time(controller: Any) -> bool:
    return bool(getattr(getattr(controller, "threads", None), "followed_real_time", False))


def _differs(result: outcome.Outcome[Any], end: float, base: DeterministicRun[Any]) -> bool:
    if isinstance(result, outcome.Error):
        return True
    assert isinstance(result, outcome.Value)
    return bool(result.value != base.value) or end != base.virtual_time


def _signature(result: outcome.Outcome[Any], end: float) -> tuple[Any, ...]:
    """How a run failed, to compare runs by: what it raised, or what it returned and when."""
    if isinstance(result, outcome.Error):
        return ("raised", type(result.error))
    assert isinstance(result, outcome.Value)
    return ("returned", repr(result.value), end)


def _serial_replay(
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    result: outcome.Outcome[Any],
    end: float,
    controller: Any,
    options: tuple[Any, ...],
) -> tuple[outcome.Outcome[Any], float, Any] | None:
    """For a failing run that ran thread calls in parallel: a run of a schedule that runs them
    one after another and fails the same way three times in a row, or ``None``."""
    seed, name, run, backend, grace, max_steps, max_virtual_time = options
    wanted = _signature(result, end)
    points = controller.threads.parallel_points
    for candidate in serial_alternatives(controller.decisions, points):
        found = None
        for _ in range(3):
            try:
                again = _run_or_attach(
                    fn, args, list(candidate), None, seed, name, run, backend, float(grace),
                    max_steps, float(max_virtual_time),
                )
            except (DeadlockError, BudgetExceededError):
                found = None
                break
            if getattr(again[2].threads, "parallel", 0) or _signature(again[0], again[1]) != wanted:
                found = None
                break
            found = again
        if found is not None:
            return found
    return None


def _task_name(fn: object) -> str:
    """Name the main task the way trio names tasks: ``module.qualname`` of the function."""
    inner = getattr(fn, "func", fn)  # functools.partial
    module = getattr(inner, "__module__", None)
    qualname = getattr(inner, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(inner)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
