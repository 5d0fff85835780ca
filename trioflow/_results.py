"""Results of a run: :class:`StepStatus`, :class:`StepResult`, :class:`RunResult`."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

if TYPE_CHECKING:
    from ._timeline import Timeline

T = TypeVar("T")


class StepStatus(enum.StrEnum):
    """How a step ended."""

    SUCCEEDED = "succeeded"
    """It returned a value."""
    FAILED = "failed"
    """Its last attempt raised (a timeout counts as a failure)."""
    SKIPPED = "skipped"
    """Its ``when=`` condition was false, or a step it depends on failed
    (``error_handling="continue"``) or was skipped; see
    :attr:`StepResult.skip_reason`."""
    CANCELLED = "cancelled"
    """The run was cancelled before it finished (fail-fast or outside cancellation)."""


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if type(value) is MappingProxyType or type(value) is LazySteps:
        return value
    if not value:
        return _EMPTY
    return MappingProxyType(dict(value))


def _results_tuple(value: Iterable[StepResult]) -> tuple[StepResult, ...]:
    return value if type(value) is tuple else tuple(value)


@attrs.frozen
class StepResult:
    """What happened to one step of a run.

    Times come from the async library's clock (virtual and exact under
    ``trio.testing.MockClock``); they are ``None`` for a step that never started.
    ``attempts`` is the number of attempts made (for a map step, the largest
    over its items). ``usage`` sums what the step reported through
    :func:`trioflow.current_step`. ``skip_reason`` is ``"condition"`` for a
    step skipped because its ``when=`` condition was false, ``"dependency"``
    for one skipped because a step it depends on failed or was skipped, and
    ``None`` for a step that was not skipped.

    For a map step, ``items`` holds one :class:`StepResult` per item, in item
    order, named ``"step[i]"`` (status, value, error, attempts and times), also
    when the step failed or was cancelled, so the values of the items that
    succeeded are never lost. It is empty for a plain step, and for a map step
    that never took its items.
    """

    name: str
    status: StepStatus
    value: Any = None
    error: BaseException | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen_mapping)
    skip_reason: str | None = None
    items: tuple[StepResult, ...] = attrs.field(default=(), converter=_results_tuple, repr=False)

    @property
    def duration(self) -> float | None:
        """``finished_at - started_at``, or ``None`` if the step did not run to an end."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.SUCCEEDED


class StepFunctions:
    """Which step(s) each function was declared as, so results can be indexed by it."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        # id(fn) -> (fn, step names); the flow keeps every fn alive, so ids are stable
        self._by_id: dict[int, tuple[object, list[str]]] = {}

    def add(self, fn: object, name: str) -> None:
        entry = self._by_id.get(id(fn))
        if entry is None or entry[0] is not fn:
            self._by_id[id(fn)] = (fn, [name])
        else:
            entry[1].append(name)

    def name_of(self, fn: object) -> str:
        """The step ``fn`` was declared as.

        Raises:
            KeyError: ``fn`` is no step's function, or it is several steps' function.
        """
        entry = self._by_id.get(id(fn))
        label = getattr(fn, "__qualname__", None) or repr(fn)
        if entry is None or entry[0] is not fn:
            raise KeyError(f"{label} is not the function of any step of this flow; index by step name")
        names = entry[1]
        if len(names) > 1:
            raise KeyError(
                f"{label} is the function of several steps ({', '.join(repr(n) for n in names)}); "
                f"index by step name"
            )
        return names[0]


_NO_FUNCTIONS = StepFunctions()


class LazySteps(Mapping[str, "StepResult"]):
    """A run's step results by name, each made the first time it is looked up.

    Making a :class:`StepResult` costs about as much as scheduling a quick step,
    and most callers look at a few of thousands. Read-only, like a
    ``MappingProxyType``; ``index`` gives the order (declaration order) and
    ``make(i)`` makes the result of step ``i``. A step's own function (what
    ``@flow.step`` returned) works as a key too.

    ``fields(i)``, if given, is what step ``i``'s result compares equal by (its
    fields, as ``make(i)`` would set them, a map step's items as their fields
    too): two runs' steps then compare without making their results
    (``trioflow.testing.check_deterministic`` compares every run with the
    first).
    """

    __slots__ = ("_fields", "_functions", "_index", "_key", "_made", "_make")

    def __init__(
        self,
        index: Mapping[str, int],
        make: Callable[[int], StepResult],
        functions: StepFunctions | None = None,
        fields: Callable[[int], tuple[Any, ...]] | None = None,
    ) -> None:
        self._index = index
        self._make = make
        self._made: dict[str, StepResult] = {}
        self._functions = _NO_FUNCTIONS if functions is None else functions
        self._fields = fields
        self._key: dict[str, tuple[Any, ...]] | None = None

    def __eq__(self, other: object) -> bool:
        if type(other) is LazySteps and self._fields is not None and other._fields is not None:
            return self._compared() == other._compared()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # (a mapping: unhashable, as a dict)

    def _compared(self) -> dict[str, tuple[Any, ...]]:
        key = self._key
        if key is None:
            fields = self._fields
            assert fields is not None
            key = self._key = {name: fields(i) for name, i in self._index.items()}
        return key

    @classmethod
    def of(cls, steps: Mapping[str, StepResult]) -> LazySteps:
        """Already made results, in the mapping's order."""
        results = list(steps.values())
        return cls({name: i for i, name in enumerate(steps)}, results.__getitem__)

    def name_of(self, key: object) -> str:
        """The step name for ``key``: a name, or a step's function.

        Raises:
            KeyError: ``key`` is neither.
        """
        if isinstance(key, str):
            return key
        return self._functions.name_of(key)

    def __getitem__(self, name: str | Callable[..., Any]) -> StepResult:
        made = self._made.get(name) if type(name) is str else None
        if made is None:
            name = self.name_of(name)
            made = self._made.get(name)
            if made is None:
                made = self._made[name] = self._make(self._index[name])
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            try:
                name = self._functions.name_of(name)
            except KeyError:
                return False
        return name in self._index

    def __repr__(self) -> str:
        return repr(dict(self))


def _steps_mapping(value: Mapping[str, StepResult]) -> LazySteps:
    if type(value) is LazySteps:
        return value
    return LazySteps.of(value)


@attrs.frozen(eq=False)
class RunTrace:
    """What a run knew beyond its step results, kept for :meth:`RunResult.timeline`.

    ``plan`` is the compiled plan (dependencies and limiters of each step);
    ``limiters`` maps each limiter name (and ``"max_concurrent (run)"`` when the run
    had one) to its capacity; ``restored`` names the steps a store restored;
    ``retries`` lists each retried attempt as ``[step, item, attempt,
    started, failed_at, wait, resumed_at]`` (``resumed_at`` is None when the
    wait was cut short), filled on the retry path only. (Map items' times are
    in :attr:`StepResult.items`.)
    """

    plan: Any
    limiters: Mapping[str, float]
    restored: frozenset[str]
    retries: list[list[Any]]


# a RunResult's repr lists its steps up to this many
_REPR_STEPS = 20


@attrs.frozen(repr=False)
class RunResult(Mapping[str, Any]):
    """The result of :meth:`Flow.run`.

    Indexing by step name gives that step's output; a step that did not succeed
    raises :class:`KeyError` naming its status. ``steps`` and ``outputs`` are
    in declaration order.
    """

    flow: str
    steps: LazySteps = attrs.field(converter=_steps_mapping)
    started_at: float
    finished_at: float
    run_id: str | None = None
    # what the timeline needs beyond the steps (None for a result loaded from a store)
    _trace: RunTrace | None = attrs.field(default=None, eq=False, repr=False, kw_only=True, alias="_trace")

    def __repr__(self) -> str:
        # every step for a small run; a count for a big one, so a repr stays cheap
        # (asyncio.run() makes one of its result when it restores the SIGINT handler)
        steps = repr(self.steps) if len(self.steps) <= _REPR_STEPS else f"<{len(self.steps)} steps>"
        return (
            f"RunResult(flow={self.flow!r}, steps={steps}, started_at={self.started_at!r}, "
            f"finished_at={self.finished_at!r}, run_id={self.run_id!r})"
        )

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

    @overload
    def __getitem__(self, name: str) -> Any: ...

    @overload
    def __getitem__(self, name: Callable[..., Awaitable[T]]) -> T: ...

    def __getitem__(self, name: str | Callable[..., Awaitable[Any]]) -> Any:
        """The output of step ``name``: a step name, or the step's own function.

        Indexed by the function (what ``@flow.step`` returned), a type checker
        infers the value's type from the function's return annotation.

        Raises:
            KeyError: no such step, or the step did not succeed (its status is named).
        """
        if not isinstance(name, str):
            name = self.steps.name_of(name)
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
        if name not in self.steps:
            return False
        return self.steps[name].status is StepStatus.SUCCEEDED  # type: ignore[index]
