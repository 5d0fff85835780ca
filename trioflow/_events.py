"""Events a run reports to its ``on_event`` callback.

Every event is a frozen attrs object with the run's clock reading ``time``
and ``elapsed``, the seconds since the run started (``time`` minus the run's
start). ``on_event`` is a plain synchronous callable; it runs inline in the
scheduler and must not block. ``item`` is the map item index, or ``None`` for a
plain step. A run sends :class:`RunStarted` first and :class:`RunFinished`
last, whatever its outcome.

``elapsed`` is a keyword-only field that takes no part in equality: it is
derived from ``time`` and the run's start, and leaving it out of comparisons
lets an event be written as ``StepStarted("a", 1, 0.0)`` in a test.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._context import label as _label
from ._public import public_home


@attrs.frozen
class RunStarted:
    """A run began: sent before any step starts.

    ``steps`` names every step in declaration order; ``restored`` the steps
    whose success a store already had (they do not run again), in declaration
    order, empty without a store. ``limiters`` describes the run's named
    limiters, for displays: name -> (capacity, the steps that take it); like
    ``elapsed`` it is keyword-only and not part of equality.
    """

    flow: str
    run_id: str | None
    time: float
    steps: tuple[str, ...]
    restored: tuple[str, ...] = ()
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)
    limiters: Mapping[str, tuple[float, tuple[str, ...]]] = attrs.field(
        factory=dict, kw_only=True, eq=False
    )

    def __str__(self) -> str:
        restored = f", {len(self.restored)} restored" if self.restored else ""
        run = "" if self.run_id is None else f" (run {self.run_id!r})"
        return f"{_at(self.elapsed)} started  {self.flow}{run}: {len(self.steps)} steps{restored}"


@attrs.frozen
class StepStarted:
    """An attempt of a step (or map item) began."""

    step: str
    attempt: int
    time: float
    item: int | None = None
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        return f"{_at(self.elapsed)} start    {_label(self.step, self.item)} (attempt {self.attempt})"


@attrs.frozen
class MapStarted:
    """A map step's items are known: ``items`` in all, ``restored`` of them recorded by a store.

    Sent when the map step becomes ready, before its first item starts.
    """

    step: str
    time: float
    items: int
    restored: int = 0
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        restored = f" ({self.restored} restored)" if self.restored else ""
        return f"{_at(self.elapsed)} map      {self.step}: {self.items} items{restored}"


@attrs.frozen
class StepSucceeded:
    """A step (or map item) returned a value."""

    step: str
    attempt: int
    time: float
    duration: float
    item: int | None = None
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        return (
            f"{_at(self.elapsed)} done     {_label(self.step, self.item)} "
            f"in {self.duration:.3f}s (attempt {self.attempt})"
        )


@attrs.frozen
class StepFailed:
    """An attempt raised and will not be retried; the step (or item) failed."""

    step: str
    attempt: int
    time: float
    error: BaseException
    item: int | None = None
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        return (
            f"{_at(self.elapsed)} FAILED   {_label(self.step, self.item)} "
            f"(attempt {self.attempt}): {self.error!r}"
        )


@attrs.frozen
class StepRetrying:
    """An attempt raised; the next attempt starts after ``wait`` seconds."""

    step: str
    attempt: int
    time: float
    error: BaseException
    wait: float
    item: int | None = None
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        return (
            f"{_at(self.elapsed)} retry    {_label(self.step, self.item)} after attempt "
            f"{self.attempt} failed ({self.error!r}); next in {self.wait:.3f}s"
        )


@attrs.frozen
class StepSkipped:
    """A step will not run: a step it depends on failed or was skipped, or its
    ``when=`` condition was false (``reason="condition"``, ``cause`` is the step itself)."""

    step: str
    time: float
    cause: str
    reason: str = "dependency"
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        if self.reason == "condition":
            return f"{_at(self.elapsed)} skipped  {self.step} (its condition is false)"
        return f"{_at(self.elapsed)} skipped  {self.step} (because {self.cause!r} did not succeed)"


@attrs.frozen
class StepCancelled:
    """A step was cancelled before it finished (fail-fast or outside cancellation)."""

    step: str
    time: float
    started: bool
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        when = "while running" if self.started else "before it started"
        return f"{_at(self.elapsed)} cancel   {self.step} ({when})"


@attrs.frozen
class BatchStarted:
    """Several steps became ready at the same moment and start together.

    ``steps`` lists exactly those that get a slot at once (capacity, named
    limiters and a shared limiter allowing), in declaration order; the others
    start later, one by one as slots free. Not sent when fewer than two start
    (for example always under ``max_concurrent=1``).
    """

    steps: tuple[str, ...]
    time: float
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        return f"{_at(self.elapsed)} Executing {len(self.steps)} steps in parallel: {', '.join(self.steps)}"


def _status(event: RunFinished) -> str:
    return "succeeded" if event.ok else "failed"


@attrs.frozen
class RunFinished:
    """The run ended; sent on every outcome, outside cancellation included.

    ``status`` is ``"succeeded"``, ``"failed"`` (a step failed: the run raises
    :class:`~trioflow.FlowError`) or ``"cancelled"`` (cancelled from outside:
    the cancellation propagates); it defaults to what ``ok`` says. ``failed``
    names the failed steps.
    """

    flow: str
    time: float
    duration: float
    ok: bool
    failed: tuple[str, ...] = ()
    status: str = attrs.field(default=attrs.Factory(_status, takes_self=True))
    elapsed: float = attrs.field(default=0.0, kw_only=True, eq=False)

    def __str__(self) -> str:
        if self.ok:
            outcome = "ok"
        elif self.failed:
            outcome = f"failed: {', '.join(self.failed)}"
            if self.status == "cancelled":
                outcome += "; then cancelled"
        else:
            outcome = "cancelled"
        return f"{_at(self.elapsed)} finished {self.flow} in {self.duration:.3f}s ({outcome})"


Event = (
    RunStarted
    | MapStarted
    | StepStarted
    | StepSucceeded
    | StepFailed
    | StepRetrying
    | StepSkipped
    | StepCancelled
    | BatchStarted
    | RunFinished
)


def _at(elapsed: float) -> str:
    return f"[+{elapsed:8.3f}s]"


public_home(  # trioflow imports them when first used
    RunStarted, MapStarted, StepStarted, StepSucceeded, StepFailed, StepRetrying, StepSkipped,
    StepCancelled, BatchStarted, RunFinished,
)
