"""Deterministic testing for trio (and anyio) code and trioflow flows.

``run_deterministic`` runs an async function under a controlled, replayable
schedule in virtual time; ``check_deterministic`` runs it under many schedules
chosen by a :class:`Strategy` (a portfolio of random walk, PCT and bounded
search by default) and checks the result never changes; ``DeadlockError``
reports tasks that can never go on. Hypothesis strategies live in
``trioflow.testing.strategies`` (imported explicitly, since this package does
not import Hypothesis).
"""

from __future__ import annotations

from ._errors import BudgetExceededError as BudgetExceededError
from ._errors import DeadlockError as DeadlockError
from ._errors import FailingSchedule as FailingSchedule
from ._errors import NonDeterminismError as NonDeterminismError
from ._errors import failing_schedule as failing_schedule
from ._harness import DeterministicRun as DeterministicRun
from ._harness import check_deterministic as check_deterministic
from ._harness import note as note
from ._harness import run_deterministic as run_deterministic
from ._strategy import PCT as PCT
from ._strategy import Bounded as Bounded
from ._strategy import DecisionPoint as DecisionPoint
from ._strategy import Portfolio as Portfolio
from ._strategy import RandomWalk as RandomWalk
from ._strategy import Strategy as Strategy
from ._trace import TraceEvent as TraceEvent

__all__ = [
    "Bounded",
    "BudgetExceededError",
    "DeadlockError",
    "DecisionPoint",
    "DeterministicRun",
    "FailingSchedule",
    "NonDeterminismError",
    "PCT",
    "Portfolio",
    "RandomWalk",
    "Strategy",
    "TraceEvent",
    "check_deterministic",
    "failing_schedule",
    "note",
    "run_deterministic",
]
