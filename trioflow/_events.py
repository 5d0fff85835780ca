"""Events a run reports to its ``on_event`` callback.

Every event is a frozen attrs object with the run's clock reading ``time``.
``on_event`` is a plain synchronous callable; it runs inline in the scheduler
and must not block. ``item`` is the map item index, or ``None`` for a plain step.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class StepStarted:
    """An attempt of a step (or map item) began."""

    step: str
    attempt: int
    time: float
    item: int | None = None

    def __str__(self) -> str:
        return f"[{self.time:8.3f}] start    {_label(self.step, self.item)} (attempt {self.attempt})"


@attrs.frozen
class StepSucceeded:
    """A step (or map item) returned a value."""

    step: str
    attempt: int
    time: float
    duration: float
    item: int | None = None

    def __str__(self) -> str:
        return (
            f"[{self.time:8.3f}] done     {_label(self.step, self.item)} "
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

    def __str__(self) -> str:
        return (
            f"[{self.time:8.3f}] FAILED   {_label(self.step, self.item)} "
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

    def __str__(self) -> str:
        return (
            f"[{self.time:8.3f}] retry    {_label(self.step, self.item)} after attempt "
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

    def __str__(self) -> str:
        if self.reason == "condition":
            return f"[{self.time:8.3f}] skipped  {self.step} (its condition is false)"
        return f"[{self.time:8.3f}] skipped  {self.step} (because {self.cause!r} did not succeed)"


@attrs.frozen
class StepCancelled:
    """A step was cancelled before it finished (fail-fast or outside cancellation)."""

    step: str
    time: float
    started: bool

    def __str__(self) -> str:
        when = "while running" if self.started else "before it started"
        return f"[{self.time:8.3f}] cancel   {self.step} ({when})"


@attrs.frozen
class BatchStarted:
    """Several steps became ready at the same moment and start together."""

    steps: tuple[str, ...]
    time: float

    def __str__(self) -> str:
        return f"[{self.time:8.3f}] Executing {len(self.steps)} steps in parallel: {', '.join(self.steps)}"


@attrs.frozen
class RunFinished:
    """The run ended (whatever the outcome); ``failed`` names the failed steps."""

    flow: str
    time: float
    duration: float
    ok: bool
    failed: tuple[str, ...] = ()

    def __str__(self) -> str:
        outcome = "ok" if self.ok else f"failed: {', '.join(self.failed) or 'cancelled'}"
        return f"[{self.time:8.3f}] finished {self.flow} in {self.duration:.3f}s ({outcome})"


Event = (
    StepStarted
    | StepSucceeded
    | StepFailed
    | StepRetrying
    | StepSkipped
    | StepCancelled
    | BatchStarted
    | RunFinished
)


def _label(step: str, item: int | None) -> str:
    return step if item is None else f"{step}[{item}]"
