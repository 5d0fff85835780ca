"""Exceptions raised by the deterministic harness.

The hierarchy::

    TrioflowError
     +-- DeadlockError                          every task blocked, nothing pending
     +-- BudgetExceededError                    max_steps / max_virtual_time exceeded
     +-- NonDeterminismError (AssertionError)   two schedules gave different results

Each carries the schedule that led to it, so the run replays exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import TrioflowError

__all__ = ["BudgetExceededError", "DeadlockError", "NonDeterminismError"]


class DeadlockError(TrioflowError):
    """Every task of a deterministic run is blocked and no deadline is pending.

    The message lists each blocked task and the line it waits at.

    Attributes:
        decisions: The schedule taken up to the deadlock; pass it as
            ``schedule=`` to :func:`~trioflow.testing.run_deterministic` to
            replay the run.
    """

    def __init__(self, message: str, *, decisions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.decisions: tuple[int, ...] = tuple(decisions)


class BudgetExceededError(TrioflowError):
    """A deterministic run took more task steps or more virtual time than allowed.

    This turns livelocks and endless tickers into an error instead of a hang.

    Attributes:
        decisions: The schedule taken so far, replayable as ``schedule=``.
    """

    def __init__(self, message: str, *, decisions: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.decisions: tuple[int, ...] = tuple(decisions)


class NonDeterminismError(TrioflowError, AssertionError):
    """Two schedules of the same function gave different results.

    Raised by :func:`~trioflow.testing.check_deterministic`.

    Attributes:
        expected: What the function returned under the first (FIFO) schedule.
        got: What it returned (or the exception it raised) under ``schedule``.
        expected_schedule: The schedule that gave ``expected`` (``()`` = FIFO).
        schedule: The schedule that gave ``got``, replayable as ``schedule=``.
        seed: The seed that generated ``schedule``.
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
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
        self.expected_schedule: tuple[int, ...] = tuple(expected_schedule)
        self.schedule: tuple[int, ...] = tuple(schedule)
        self.seed = seed
