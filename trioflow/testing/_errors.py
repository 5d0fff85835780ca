"""Exceptions raised by the deterministic harness, and the replay they carry.

The hierarchy::

    TrioflowError
     +-- DeadlockError                          every task blocked, or a wait-for cycle
     +-- BudgetExceededError                    max_steps / max_virtual_time exceeded
     +-- NonDeterminismError (AssertionError)   two schedules gave different results

Each carries the schedule that led to it (and the seed, strategy and run
number that produced the schedule), so the run replays exactly. The program's
own exceptions carry the same, read with :func:`failing_schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .._exceptions import TrioflowError

__all__ = [
    "BudgetExceededError",
    "DeadlockError",
    "FailingSchedule",
    "NonDeterminismError",
    "failing_schedule",
]

_ATTRIBUTE = "__trioflow_failing_schedule__"


@attrs.frozen
class FailingSchedule:
    """How to replay the run in which an exception was raised.

    Attributes:
        schedule: The decisions of the run, replayable as
            ``run_deterministic(fn, *args, schedule=schedule)`` (with the same
            ``backend=``).
        seed: The seed the strategy was built from (``None`` for an explicit
            schedule or FIFO).
        strategy: The name of the strategy that chose the decisions
            (``"fifo"`` for FIFO, ``"schedule"`` for an explicit schedule).
        run: The run's number within :func:`check_deterministic` (0 is the FIFO
            run); 0 for a single :func:`run_deterministic`.
        backend: ``"trio"`` or ``"asyncio"``.
        threads: How many worker-thread calls the run made. Each call runs as
            one atomic step at a decision point, so a run whose threads only
            race with tasks replays exactly; races *between* two threads'
            bodies are not explored (see :doc:`testing`).
    """

    schedule: tuple[int, ...]
    seed: int | None = None
    strategy: str = "schedule"
    run: int = 0
    backend: str = "trio"
    threads: int = 0


def failing_schedule(exc: BaseException) -> FailingSchedule | None:
    """The replay of the deterministic run that raised *exc*, or ``None``.

    Works for the program's own exceptions raised through
    :func:`~trioflow.testing.run_deterministic` and for the harness's errors
    (:class:`DeadlockError`, :class:`BudgetExceededError`,
    :class:`NonDeterminismError`), which also have the fields as attributes.

    Example::

        try:
            check_deterministic(main, runs=1000)
        except Exception as exc:
            replay = failing_schedule(exc)
            run_deterministic(main, schedule=replay.schedule)
    """
    found = getattr(exc, _ATTRIBUTE, None)
    return found if isinstance(found, FailingSchedule) else None


def attach(exc: BaseException, replay: FailingSchedule) -> None:
    """Remember *replay* on *exc* (and, for the harness's errors, set its attributes)."""
    try:
        setattr(exc, _ATTRIBUTE, replay)
    except (AttributeError, TypeError):  # an exception type with __slots__
        return
    if isinstance(exc, _Replayable):
        exc.schedule = replay.schedule
        exc.seed = replay.seed
        exc.strategy = replay.strategy
        exc.run = replay.run


class _Replayable(TrioflowError):
    schedule: tuple[int, ...]
    seed: int | None
    strategy: str
    run: int

    def __init__(self, message: str, *, decisions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.decisions: tuple[int, ...] = tuple(decisions)
        self.schedule = self.decisions
        self.seed = None
        self.strategy = "schedule"
        self.run = 0


class DeadlockError(_Replayable):
    """Tasks of a deterministic run can never go on.

    Either every task is blocked and no deadline is pending, or some tasks
    wait for each other in a cycle of locks (a *partial* deadlock, reported as
    soon as the cycle forms, whatever the other tasks do). The message lists
    each blocked task, what it holds, what it waits for, and where.

    Attributes:
        decisions: The schedule taken up to the deadlock; pass it as
            ``schedule=`` to :func:`~trioflow.testing.run_deterministic` to
            replay the run. ``schedule`` is the same.
        seed: The seed of the strategy that chose it, or ``None``.
        strategy: The strategy's name.
        run: The run's number within :func:`check_deterministic`.
    """


class BudgetExceededError(_Replayable):
    """A deterministic run took more task steps or more virtual time than allowed.

    This turns livelocks and endless tickers into an error instead of a hang.
    The message names the busiest tasks and those blocked the longest.

    Attributes:
        decisions: The schedule taken so far, replayable as ``schedule=``;
            ``schedule`` is the same.
        seed: The seed of the strategy that chose it, or ``None``.
        strategy: The strategy's name.
        run: The run's number within :func:`check_deterministic`.
    """


class NonDeterminismError(TrioflowError, AssertionError):
    """Two schedules of the same function gave different results.

    Raised by :func:`~trioflow.testing.check_deterministic`.

    Attributes:
        expected: What the function returned under the first (FIFO) schedule.
        got: What it returned (or the exception it raised) under ``schedule``.
        expected_schedule: The schedule that gave ``expected`` (``()`` = FIFO).
        schedule: The schedule that gave ``got``, replayable as ``schedule=``.
        seed: The seed of the strategy that generated ``schedule``.
        strategy: The name of that strategy.
        run: The number of the run that differed (the FIFO run is 0).
    """

    def __init__(
        self,
        message: str,
        *,
        expected: object,
        got: object,
        expected_schedule: Sequence[int],
        schedule: Sequence[int],
        seed: int | None,
        strategy: str = "random",
        run: int = 0,
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
        self.expected_schedule: tuple[int, ...] = tuple(expected_schedule)
        self.schedule: tuple[int, ...] = tuple(schedule)
        self.seed = seed
        self.strategy = strategy
        self.run = run
