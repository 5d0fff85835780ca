"""trioflow's exceptions.

The hierarchy::

    Exception
     +-- TrioflowError                      root of everything trioflow raises
          +-- GraphError (ValueError)       a flow definition or run arguments are invalid
          +-- StoreError (ValueError)       a store cannot record or resume a run
          +-- FlowError (ExceptionGroup)    one or more steps failed; ``.result`` is the
                                            partial RunResult

Argument errors also subclass :class:`ValueError` (or are a plain
:class:`TypeError` where the type is wrong), so callers can catch either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ._results import RunResult


class TrioflowError(Exception):
    """Root of every exception trioflow defines."""


class GraphError(TrioflowError, ValueError):
    """A flow definition or a run's arguments are invalid.

    Raised before any step runs: cycles, unknown names, duplicate steps,
    missing inputs, bad option values.
    """


class StoreError(TrioflowError, ValueError):
    """A store cannot record or resume a run (for example, a reused ``run_id``
    whose inputs or flow structure differ).

    ``.result`` is the run's (partial) :class:`~trioflow.RunResult` when the
    store failed while the run went on: every output computed is there, also
    those the store could not record. ``None`` when no step ran.
    """

    result: RunResult | None = None


class FlowError(ExceptionGroup[Exception], TrioflowError):
    """One or more steps failed.

    An :class:`ExceptionGroup`, so ``except*`` works: it holds each failed
    step's original exception, with a note naming the step and the attempt.
    ``.result`` is the partial :class:`~trioflow.RunResult` of the run.

    ``split()``, ``subgroup()`` and ``except*`` keep the type and ``.result``.
    """

    result: RunResult

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], result: RunResult | None = None
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], result: RunResult | None = None
    ) -> None:
        super().__init__(message, exceptions)
        if result is not None:
            self.result = result

    def derive(self, excs: Sequence[Exception]) -> FlowError:  # type: ignore[override]
        derived = FlowError(self.message, list(excs), getattr(self, "result", None))
        return derived

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, list(self.exceptions), getattr(self, "result", None)))
