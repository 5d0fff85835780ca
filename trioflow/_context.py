"""``trioflow.current_step()``: what the running step knows about itself."""

from __future__ import annotations

import contextvars
import math
import threading
from typing import Protocol

import attrs


@attrs.define(eq=False)
class StepContext:
    """The running step (or map item) as seen from inside it.

    Attributes:
        name: the step's name (for :func:`trioflow.map` and :func:`trioflow.gather`
            used outside a flow, the function's name).
        attempt: the attempt number, starting at 1.
        item: the map item index, or ``None`` for a plain step.
        run_id: the run's id (``None`` when the run was given none).
    """

    name: str
    attempt: int
    item: int | None
    run_id: str | None
    _usage: dict[str, float] = attrs.field(alias="usage")

    def add_usage(self, **counts: float) -> None:
        """Add counts (tokens, calls, dollars…) to this step's usage.

        Counts sum per step (:attr:`StepResult.usage`) and per run
        (:attr:`RunResult.usage`), whatever the concurrency, also from several
        threads at once (``runner="thread"`` map items). Not a checkpoint.

        Raises:
            TypeError: a count is not a number.
            ValueError: a count is negative, NaN or infinite.
        """
        for key, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int | float):
                raise TypeError(f"add_usage({key}=...) takes a number (got {count!r})")
            if not math.isfinite(count) or count < 0:
                raise ValueError(f"add_usage({key}={count!r}): counts must be finite and >= 0")
        usage = self._usage
        with _usage_lock:  # read-add-write: threads of one map step share the dict
            for key, count in counts.items():
                usage[key] = usage.get(key, 0) + count


# one lock for every step's usage: taken for a few dict operations, never contended long
_usage_lock = threading.Lock()


class _Running(Protocol):
    """What the scheduler puts in :data:`_current` for a running unit: its
    context is made only when asked (most steps never ask)."""

    def step_context(self) -> StepContext: ...


# The running step: a StepContext, or a unit of the scheduler's that makes one (None: none)
_current: contextvars.ContextVar[StepContext | _Running | None] = contextvars.ContextVar("trioflow_current_step")


def current_or_none() -> StepContext | None:
    """The running step's context, or None outside any step."""
    here = _current.get(None)
    if here is None or isinstance(here, StepContext):
        return here
    return here.step_context()


def current_step() -> StepContext:
    """The step that is running in this task.

    Raises:
        RuntimeError: called outside any step.
    """
    here = _current.get(None)
    if here is None:
        raise RuntimeError(
            "trioflow.current_step() was called outside a step; call it from inside a "
            "function that a flow, trioflow.map or trioflow.gather is running"
        )
    if isinstance(here, StepContext):
        return here
    return here.step_context()


def label(step: str, item: int | None) -> str:
    """How messages and events name a step, or one item of a map step: ``step[item]``."""
    return step if item is None else f"{step}[{item}]"
