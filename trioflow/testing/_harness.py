"""``run_deterministic`` and ``check_deterministic``: run async code under a controlled schedule."""

from __future__ import annotations

import inspect
import math
import random
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio
import trio.lowlevel
import trio.testing

from .._scheduler import quiescent_scheduling
from ._canary import check_trio
from ._control import Controller, ScheduleRandom, TraceEvent, _trim, active, install, restore
from ._errors import NonDeterminismError

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
        trace: Every task event of the run, in order (see :class:`TraceEvent`).
            Tasks are named by their trio name and spawn index, never by
            ``id()``, so the trace is identical whenever the schedule is.
        steps: The number of task steps the scheduler ran.
    """

    value: T
    virtual_time: float
    decisions: tuple[int, ...]
    trace: tuple[TraceEvent, ...]
    steps: int


async def _main(
    controller: Controller, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> tuple[outcome.Outcome[Any], float]:
    try:
        async with trio.open_nursery() as nursery:
            controller.watchdog_cancel = nursery.cancel_scope
            await nursery.start(controller.watchdog_task)
            result = await outcome.acapture(fn, *args)
            end = trio.current_time()
            nursery.cancel_scope.cancel()
    except BaseException:
        # Only a forced stop (injected into the harness's own task too) gets here.
        if controller.error is None:
            raise
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
        seed: Draw the decisions pseudo-randomly from this seed. ``None`` (with
            no ``schedule``) means FIFO: every batch of runnable tasks runs
            oldest task first.
        schedule: Explicit decisions, one per point where two or more tasks are
            runnable: ``0`` runs the whole batch oldest first, ``k >= 1`` runs
            only the ``(k - 1) % n``-th task of the batch of ``n`` and holds the
            rest back. When the list runs out, the rest of the run is drawn from
            ``seed`` if given, else FIFO. ``[]`` is FIFO.
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
        Exception: Whatever ``fn`` raised, as it is (not wrapped in a group).

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
    if not (isinstance(grace, (int, float)) and grace >= 0 and math.isfinite(grace)):
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    if not (isinstance(max_virtual_time, (int, float)) and max_virtual_time > 0):
        raise ValueError(f"max_virtual_time must be a positive number, got {max_virtual_time!r}")
    result, end, controller = _run(
        fn, args, explicit, seed, float(grace), max_steps, float(max_virtual_time)
    )
    decisions = tuple(_trim(controller.decisions))
    if isinstance(result, outcome.Error):
        error = result.error
        if isinstance(error, BaseException) and not isinstance(error, trio.Cancelled):
            error.add_note(
                f"(raised under trioflow.testing.run_deterministic; replay this run with "
                f"schedule={list(decisions)!r})"
            )
    value = result.unwrap()
    return DeterministicRun(
        value=value,
        virtual_time=end,
        decisions=decisions,
        trace=tuple(controller.trace),
        steps=controller.steps,
    )


def _run(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    schedule: list[int],
    seed: int | None,
    grace: float,
    max_steps: int,
    max_virtual_time: float,
) -> tuple[outcome.Outcome[T], float, Controller]:
    check_trio()  # the canary: refuse clearly if trio's private scheduler changed
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        pass
    else:
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
            seed=seed,
            grace=grace,
            max_steps=max_steps,
            max_virtual_time=max_virtual_time,
            main_code=_main.__code__,
            main_name=_task_name(fn),
            clock=clock,
        )
        install(ScheduleRandom(controller))
        # the engine settles each virtual instant before it hands out slots
        quiescent = quiescent_scheduling.set(True)
        try:
            result, end = trio.run(
                _main, controller, fn, args, clock=clock, instruments=[controller]
            )
        except trio.TrioInternalError as exc:
            if controller.error is not None and exc.__cause__ is controller.error:
                raise controller.error from None
            raise
        finally:
            quiescent_scheduling.reset(quiescent)
            restore()
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
    grace: float = 0.05,
    max_steps: int = 100_000,
    max_virtual_time: float = 1e9,
) -> T:
    """Run ``fn(*args)`` under many schedules and check that the result never changes.

    The first run is FIFO (``schedule=[]``); then ``runs - 1`` runs use
    pseudo-random schedules from distinct seeds derived from ``seed``. Each
    run's return value and virtual end time are compared with the FIFO run's.

    Args:
        fn: An async function, for example ``flow.run``.
        *args: Positional arguments for ``fn``.
        runs: How many runs in all, FIFO included.
        seed: Derives the seeds of the random schedules, so a check is reproducible.
        grace: As for :func:`run_deterministic`.
        max_steps: As for :func:`run_deterministic`.
        max_virtual_time: As for :func:`run_deterministic`.

    Returns:
        The common return value.

    Raises:
        NonDeterminismError: A schedule gave a different value or end time, or
            raised where FIFO did not; the message shows the first differing
            value and both schedules, replayable with ``run_deterministic``.
        DeadlockError: A schedule deadlocked (its ``decisions`` replay it).
        BudgetExceededError: A schedule exceeded a budget.
        Exception: Whatever ``fn`` raised under the FIFO schedule, as it is.
    """
    if not (isinstance(runs, int) and runs >= 1):
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    base = run_deterministic(
        fn, *args, schedule=[], grace=grace, max_steps=max_steps, max_virtual_time=max_virtual_time
    )
    fifo = f"  schedule=[] (FIFO): value={base.value!r}, virtual_time={base.virtual_time!r}\n"
    for run_seed in random.Random(seed).sample(range(2**32), runs - 1):
        result, end, controller = _run(
            fn, args, [], run_seed, float(grace), max_steps, float(max_virtual_time)
        )
        decisions = tuple(_trim(controller.decisions))
        replay = (
            f"Replay with trioflow.testing.run_deterministic(fn, *args, "
            f"schedule={list(decisions)!r})."
        )
        if isinstance(result, outcome.Error):
            exc = result.error
            if not isinstance(exc, Exception):
                raise exc
            raise NonDeterminismError(
                f"{_name(fn)} returned under the FIFO schedule but raised under another:\n"
                f"{fifo}  schedule={list(decisions)!r} (seed={run_seed}): raised {exc!r}\n"
                f"{replay}",
                expected=base.value,
                got=exc,
                expected_schedule=base.decisions,
                schedule=decisions,
                seed=run_seed,
            ) from exc
        value = result.unwrap()
        if value != base.value or end != base.virtual_time:
            if value != base.value:
                first = _first_difference(base.value, value)
            else:
                first = f"the virtual end time: {base.virtual_time!r} vs {end!r}"
            raise NonDeterminismError(
                f"{_name(fn)} is not deterministic; the first difference is {first}\n"
                f"{fifo}  schedule={list(decisions)!r} (seed={run_seed}): value={value!r}, "
                f"virtual_time={end!r}\n{replay}",
                expected=base.value,
                got=value,
                expected_schedule=base.decisions,
                schedule=decisions,
                seed=run_seed,
            )
    return base.value


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
