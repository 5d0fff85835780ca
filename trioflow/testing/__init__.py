"""Deterministic testing for trio (and anyio-on-trio) code and trioflow flows.

``run_deterministic`` runs an async function under a controlled, replayable
schedule in virtual time; ``check_deterministic`` runs it under many schedules
and checks the result never changes; ``DeadlockError`` reports a run in which
every task is blocked. Hypothesis strategies live in
``trioflow.testing.strategies`` (imported explicitly, since this package does
not import Hypothesis).
"""

from __future__ import annotations

from ._control import TraceEvent as TraceEvent
from ._errors import BudgetExceededError as BudgetExceededError
from ._errors import DeadlockError as DeadlockError
from ._errors import NonDeterminismError as NonDeterminismError
from ._harness import DeterministicRun as DeterministicRun
from ._harness import check_deterministic as check_deterministic
from ._harness import note as note
from ._harness import run_deterministic as run_deterministic

__all__ = [
    "BudgetExceededError",
    "DeadlockError",
    "DeterministicRun",
    "NonDeterminismError",
    "TraceEvent",
    "check_deterministic",
    "note",
    "run_deterministic",
]
