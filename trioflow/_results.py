"""Results of a run: :class:`StepStatus`, :class:`StepResult`, :class:`RunResult`."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._timeline import Timeline


class StepStatus(enum.StrEnum):
    """How a step ended."""

    SUCCEEDED = "succeeded"
    """It returned a value."""
    FAILED = "failed"
    """Its last attempt raised (a timeout counts as a failure)."""
    SKIPPED = "skipped"
    """A step it depends on failed (``error_handling="continue"``)."""
    CANCELLED = "cancelled"
    """The run was cancelled before it finished (fail-fast or outside cancellation)."""


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if type(value) is MappingProxyType or type(value) is LazySteps:
        return value
    if not value:
        return _EMPTY
    return MappingProxyType(dict(value))


@attrs.frozen
class StepResult:
    """What happened to one step of a run.

    Times come from the async library's clock (virtual and exact under
    ``trio.testing.MockClock``); they are ``None`` for a step that never started.
    ``attempts`` is the number of attempts made (for a map step, the largest
    over its items). ``usage`` sums what the step reported through
    :func:`trioflow.current_step`.
    """

    name: str
    status: StepStatus
    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen_mapping)

    @property
    def duration(self) -> float | None:
        """``finished_at - started_at``, or ``None`` if the step did not run to an end."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.SUCCEEDED


class LazySteps(Mapping[str, "StepResult"]):
    """A run's step results by name, each made the first time it is looked up.

    Making a :class:`StepResult` costs about as much as scheduling a quick step,
    and most callers look at a few of thousands. Read-only, like a
    ``MappingProxyType``; ``index`` gives the order (declaration order) and
    ``make(i)`` makes the result of step ``i``.
    """

    __slots__ = ("_index", "_made", "_make")

    def __init__(self, index: Mapping[str, int], make: Callable[[int], StepResult]) -> None:
        self._index = index
        self._make = make
        self._made: dict[str, StepResult] = {}

    def __getitem__(self, name: str) -> StepResult:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = self._make(self._index[name])
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return repr(dict(self))


@attrs.frozen(eq=False)
class RunTrace:
    """What a run knew beyond its step results, kept for :meth:`RunResult.timeline`.

    ``plan`` is the compiled plan (dependencies and limiters of each step);
    ``limiters`` maps each limiter name (and ``"max_concurrent (run)"`` when the run
    had one) to its capacity; ``restored`` names the steps a store restored;
    ``retries`` lists each retried attempt as ``[step, item, attempt,
    started, failed_at, wait, resumed_at]`` (``resumed_at`` is None when the
    wait was cut short), filled on the retry path only; ``items`` lists each
    attempt of a map item as ``[step, item, attempt, started, ended, status]``
    (``ended`` and ``status`` are None for an attempt cut short by
    cancellation; ``status`` is ``"succeeded"``, ``"failed"`` or
    ``"retried"``).
    """

    plan: Any
    limiters: Mapping[str, float]
    restored: frozenset[str]
    retries: list[list[Any]]
    items: list[list[Any]]


@attrs.frozen
class RunResult(Mapping[str, Any]):
    """The result of :meth:`Flow.run`.

    Indexing by step name gives that step's output; a step that did not succeed
    raises :class:`KeyError` naming its status. ``steps`` and ``outputs`` are
    in declaration order.
    """

    flow: str
    steps: Mapping[str, StepResult] = attrs.field(converter=_frozen_mapping)
    started_at: float
    finished_at: float
    run_id: str | None = None
    # what the timeline needs beyond the steps (None for a result loaded from a store)
    _trace: RunTrace | None = attrs.field(default=None, eq=False, repr=False, kw_only=True, alias="_trace")

    def timeline(self) -> Timeline:
        """A :class:`~trioflow.Timeline` picture of this run: what ran when, side by side.

        A run's own result draws every attempt, retry wait, the critical path
        and a track per limiter; a result loaded from a store draws each step's
        (and map item's) recorded times.
        """
        from ._timeline import Timeline

        return Timeline.from_result(self)

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Outputs of the steps that succeeded, in declaration order."""
        return MappingProxyType(
            {name: s.value for name, s in self.steps.items() if s.status is StepStatus.SUCCEEDED}
        )

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return all(s.status is StepStatus.SUCCEEDED for s in self.steps.values())

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.status is StepStatus.FAILED]

    @property
    def skipped(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.status is StepStatus.SKIPPED]

    @property
    def cancelled(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.status is StepStatus.CANCELLED]

    @property
    def usage(self) -> Mapping[str, float]:
        """Usage counts summed over every step."""
        total: dict[str, float] = {}
        for s in self.steps.values():
            for key, count in s.usage.items():
                total[key] = total.get(key, 0) + count
        return MappingProxyType(total)

    def __getitem__(self, name: str) -> Any:
        try:
            step = self.steps[name]
        except KeyError:
            raise KeyError(f"flow {self.flow!r} has no step named {name!r}") from None
        if step.status is not StepStatus.SUCCEEDED:
            raise KeyError(f"step {name!r} has no output: its status is {step.status.value!r}")
        return step.value

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def __contains__(self, name: object) -> bool:
        step = self.steps.get(name) if isinstance(name, str) else None
        return step is not None and step.status is StepStatus.SUCCEEDED
