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

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Self, TypeVar

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


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, which never loses ``exc``.

    An exception whose class makes :meth:`~BaseException.add_note` fail (for
    example ``__notes__ = ()`` on the class) gets the note as an instance
    attribute instead, or arrives without it: never replaced by the error
    ``add_note`` raised.
    """
    try:
        exc.add_note(note)
        return
    except Exception:
        pass
    try:
        notes = getattr(exc, "__notes__", None)
        kept = list(notes) if isinstance(notes, list | tuple) else []
        exc.__notes__ = [*kept, note]
    except Exception:  # the class forbids it: the exception arrives as it is, without the note
        pass


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if (isinstance(exc, BaseExceptionGroup) and not isinstance(exc, ExceptionGroup)) or (isinstance(exc, ExceptionGroup) and type(exc).__module__ in ("builtins", "exceptiongroup")):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def split_escaped(
    group: BaseExceptionGroup[BaseException], cancelled: type[BaseException]
) -> tuple[BaseException | None, list[Exception]]:
    """Sort out what escaped one of trioflow's own task groups (which wrap everything in a group).

    Returns ``(raise_as_is, errors)``: ``raise_as_is`` is the one exception to
    raise as it is, chosen as :class:`KeyboardInterrupt`, then
    :class:`SystemExit`, then any other :class:`BaseException` that is not an
    :class:`Exception`, then (if nothing else escaped) the first
    cancellation; ``errors`` are the plain exceptions, which the caller turns
    into a failure (they never leave as a bare group).
    """
    if group.split(cancelled)[1] is None:
        # (the common case, a cancelled task group, at C speed: its first cancellation)
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return first, []
    leaves = _leaves(group)
    errors = [e for e in leaves if isinstance(e, Exception)]
    others = [e for e in leaves if not isinstance(e, Exception)]
    for kind in (KeyboardInterrupt, SystemExit):
        for exc in others:
            if isinstance(exc, kind):
                return exc, errors
    for exc in others:
        if not isinstance(exc, cancelled):
            return exc, errors
    if others and not errors:
        return others[0], errors
    return None, errors


_T = TypeVar("_T")


@asynccontextmanager
async def unwrapped(
    task_group: AbstractAsyncContextManager[_T], cancelled: type[BaseException], label: str
) -> AsyncIterator[_T]:
    """``async with task_group``, letting nothing out as a bare group (see :func:`split_escaped`).

    Plain exceptions that escaped (the engine's own errors) leave as a
    :class:`FlowError` whose message starts with ``label``.
    """
    try:
        async with task_group as tg:
            yield tg
    except BaseExceptionGroup as group:
        escaped, errors = split_escaped(group, cancelled)
        if escaped is not None:
            raise escaped from None
        raise FlowError(f"{label}: {len(errors)} internal error(s)", errors) from None
