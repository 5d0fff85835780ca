"""What a deterministic run did: its trace, its replay hint, and where its tasks wait."""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Final, overload

import attrs

__all__ = ["Trace", "TraceEvent"]

#: Paths whose frames are library plumbing, skipped when saying where a task waits.
_LIBRARY_MARKERS: Final = (
    "/trio/",
    "/anyio/",
    "/outcome/",
    "/trioflow/testing/",
    "\\trio\\",
    "\\anyio\\",
)
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")


@attrs.frozen
class TraceEvent:
    """One event of a deterministic run's trace.

    Attributes:
        time: Virtual time (seconds of :class:`trio.testing.MockClock`) of the event.
        kind: ``"spawn"`` (task created), ``"step"`` (task resumed by the
            scheduler), ``"exit"`` (task finished), ``"thread"`` (a
            worker-thread call run, as one step) or ``"note"`` (recorded with
            :func:`~trioflow.testing.note`).
        task: A deterministic label for the task: its trio name and its spawn
            index within the run, such as ``"mymodule.worker#3"`` (for a
            thread call, ``"thread:<function>#<index>"``).
        detail: For a ``"note"``, the text noted; else ``""``.
    """

    time: float
    kind: str
    task: str
    detail: str = ""


class Trace(Sequence[TraceEvent]):
    """A run's trace: a read-only sequence of :class:`TraceEvent`, each made when looked at.

    Equal to another trace (or a tuple or list of events) with the same events.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Sequence[tuple[float, str, str, str]]) -> None:
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> TraceEvent: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[TraceEvent, ...]: ...

    def __getitem__(self, index: int | slice) -> TraceEvent | tuple[TraceEvent, ...]:
        if isinstance(index, slice):
            return tuple(TraceEvent(*event) for event in self._raw[index])
        return TraceEvent(*self._raw[index])

    def __iter__(self) -> Iterator[TraceEvent]:
        for event in self._raw:
            yield TraceEvent(*event)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return list(self._raw) == list(other._raw)
        if isinstance(other, (tuple, list)):
            return len(other) == len(self._raw) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._raw))

    def __repr__(self) -> str:
        return f"Trace({list(self)!r})"


def _is_library(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return any(marker in filename for marker in _LIBRARY_MARKERS)


def _where(frames: list[tuple[FrameType, int]]) -> str:
    """Describe where a task waits: its innermost frame of user code, and what it awaits there."""
    if not frames:
        return "<not started>"
    index = len(frames) - 1
    for i in range(len(frames) - 1, -1, -1):
        if not _is_library(frames[i][0]):
            index = i
            break
    frame, lineno = frames[index]
    text = f"{frame.f_code.co_filename}:{lineno} in {frame.f_code.co_qualname}"
    if index + 1 < len(frames):
        inner = frames[index + 1][0].f_code
        if inner.co_qualname in ("NurseryManager.__aexit__", "Nursery._nested_child_finished"):
            text += " (waiting for its child tasks)"
        else:
            text += f" (awaiting {inner.co_qualname})"
    return text


def _await_frames(frames: list[tuple[FrameType, int]]) -> list[str]:
    """The task's await frames of user code, outermost first, as ``file:line in function``."""
    return [
        f"{frame.f_code.co_filename}:{lineno} in {frame.f_code.co_qualname}"
        for frame, lineno in frames
        if not _is_library(frame)
    ]


def cohort_done(trace: Sequence[tuple[float, str, str, str]], cohort: tuple[int, frozenset[str]]) -> bool:
    """Whether every task of a fail-fast *cohort* (where the trace stood, the tasks'
    labels) has run a step since, or ended: the cancellation may land then."""
    start, waiting = cohort
    return waiting <= {label for _, kind, label, _ in trace[start:] if kind in ("step", "exit")}


def _trim(decisions: Sequence[int]) -> list[int]:
    """Drop trailing zeros: an exhausted schedule continues with 0 (FIFO) anyway."""
    if not decisions or decisions[-1]:
        return list(decisions)
    # (the zeros at the end counted in C: a run past a bounded search's prefix has many)
    zeros = len(list(itertools.takewhile(operator.not_, reversed(decisions))))
    return list(decisions[: len(decisions) - zeros])


def _replay_hint(decisions: Sequence[int]) -> str:
    return f"Replay it exactly with run_deterministic(..., schedule={_trim(decisions)!r})."
