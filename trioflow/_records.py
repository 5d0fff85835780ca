"""What a store records: run headers, step and item records, and turning them back into results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._codec import Codec
from ._exceptions import StoreError, TrioflowError
from ._public import public_home
from ._results import RunResult, StepResult, StepStatus


class RecordedError(TrioflowError):
    """A step's error as a store recorded it: the exception's type name and message.

    The original exception object is not stored (it may not be serializable);
    :meth:`Store.load() <trioflow.abc.Store.load>` gives this in its place.

    Attributes:
        type: the qualified name of the original exception's type, e.g. ``"builtins.ValueError"``.
        message: ``str()`` of the original exception.
    """

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


@attrs.frozen
class RunHeader:
    """Identifies a run: checked against the store before a run starts or resumes.

    ``inputs`` are the encoded inputs (by ``codec``); ``inputs_digest`` is
    compared, so equal inputs always match whatever their encoding details.
    ``steps`` are the flow's step names in declaration order.
    """

    run_id: str
    flow: str
    fingerprint: str
    inputs: bytes
    inputs_digest: str
    codec: str
    steps: tuple[str, ...] = ()


@attrs.frozen
class StepRecord:
    """A step's final status in one run. ``value`` is encoded by the codec named ``codec``."""

    name: str
    status: StepStatus
    value: bytes | None = None
    codec: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Mapping[str, float] = attrs.field(factory=dict)  # not copied: give a read-only mapping


@attrs.frozen
class ItemRecord:
    """One succeeded item of a map step.

    ``started_at``/``finished_at`` are the times of the attempt that succeeded
    (None in records made before trioflow recorded them). ``fingerprint``
    identifies the item the step was given (a digest of its encoding), so that
    a resumed run matches recorded items to the same items even when the
    iterable's order changed (a ``set`` in another process); None in older
    records, which are matched by index.
    """

    step: str
    index: int
    value: bytes
    codec: str
    attempts: int
    started_at: float | None = None
    finished_at: float | None = None
    fingerprint: str | None = None


@attrs.frozen
class RunInfo:
    """A recorded run, as listed by ``store.runs()``.

    ``status`` is ``"running"`` (started, or the process died), ``"succeeded"``,
    ``"failed"`` or ``"cancelled"``. ``created``/``updated`` are wall-clock
    Unix times; ``started_at``/``finished_at`` come from the async library's
    clock of the latest attempt.
    """

    run_id: str
    flow: str
    fingerprint: str
    status: str
    created: float
    updated: float
    started_at: float | None = None
    finished_at: float | None = None


@attrs.frozen
class RunRecords:
    """Everything recorded for a run: its header, step records, and map items by step."""

    header: RunHeader | None = None
    info: RunInfo | None = None
    steps: Mapping[str, StepRecord] = attrs.field(factory=dict)
    items: Mapping[str, Mapping[int, ItemRecord]] = attrs.field(factory=dict)


def check_header(recorded: RunHeader, new: RunHeader) -> None:
    """Raise :class:`StoreError` unless ``new`` may resume the run ``recorded`` describes."""
    rid = new.run_id
    fix = (
        f"use another run_id, or start over with `await store.forget({rid!r})` "
        f"(which deletes what run {rid!r} recorded)"
    )
    if recorded.flow != new.flow:
        raise StoreError(
            f"run {rid!r} was recorded by flow {recorded.flow!r}, not {new.flow!r}; {fix}"
        )
    if recorded.fingerprint != new.fingerprint:
        raise StoreError(
            f"run {rid!r} was recorded with a different structure of flow {new.flow!r} "
            f"(fingerprint {recorded.fingerprint!r}, now {new.fingerprint!r}): steps, "
            f"dependencies or step functions changed; {fix}"
        )
    if recorded.codec != new.codec:
        known = {"json": " (codec=trioflow.JSONCodec())", "pickle": " (codec=trioflow.PickleCodec())"}
        raise StoreError(
            f"run {rid!r} was recorded with the {recorded.codec!r} codec, and this store uses "
            f"{new.codec!r}; to resume it, open the store with the codec that recorded it"
            f"{known.get(recorded.codec, '')}, or {fix}"
        )
    if recorded.inputs_digest != new.inputs_digest:
        raise StoreError(f"run {rid!r} was recorded with different inputs; {fix}")


def decode_value(codec: Codec, stored_codec: str | None, data: bytes, run_id: str, what: str) -> Any:
    """Decode a stored value, with a :class:`StoreError` that says what went wrong."""
    if stored_codec != codec.name:
        hint = (
            "; opening the store with codec=trioflow.PickleCodec() reads it, but unpickling "
            "runs code from the data: do so only for stores you trust"
            if stored_codec == "pickle"
            else ""
        )
        raise StoreError(
            f"{what} of run {run_id!r} was recorded with the {stored_codec!r} codec, and this "
            f"store uses {codec.name!r}{hint}"
        )
    try:
        return codec.decode(data)
    except Exception as exc:
        raise StoreError(f"cannot decode {what} of run {run_id!r}: {exc}") from exc


def step_result(record: StepRecord, codec: Codec, run_id: str) -> StepResult:
    """A :class:`StepResult` from a record (decoding its value)."""
    value = None
    if record.status is StepStatus.SUCCEEDED and record.value is not None:
        value = decode_value(codec, record.codec, record.value, run_id, f"the value of step {record.name!r}")
    error = None
    if record.error_type is not None:
        error = RecordedError(record.error_type, record.error_message or "")
    return StepResult(
        name=record.name,
        status=record.status,
        value=value,
        error=error,
        attempts=record.attempts,
        started_at=record.started_at,
        finished_at=record.finished_at,
        usage=record.usage,
    )


def run_result(records: RunRecords, codec: Codec, run_id: str) -> RunResult:
    """The :class:`RunResult` a store recorded."""
    info = records.info
    if info is None:
        raise StoreError(f"the store has no run {run_id!r}; `await store.runs()` lists the recorded runs")
    started = info.started_at if info.started_at is not None else 0.0
    finished = info.finished_at if info.finished_at is not None else started
    names = list(records.header.steps) if records.header is not None else []
    names += [n for n in records.steps if n not in set(names)]
    steps = {}
    for name in names:  # declaration order; a step with no record never ended (the process died)
        record = records.steps.get(name)
        steps[name] = (
            step_result(record, codec, run_id)
            if record is not None
            else StepResult(name=name, status=StepStatus.CANCELLED)
        )
        items = records.items.get(name)
        if items:
            steps[name] = attrs.evolve(steps[name], items=item_results(steps[name], items, codec, run_id))
    return RunResult(
        flow=info.flow,
        steps=steps,
        started_at=started,
        finished_at=finished,
        run_id=run_id,
    )


def item_results(
    step: StepResult, items: Mapping[int, ItemRecord], codec: Codec, run_id: str
) -> tuple[StepResult, ...]:
    """The per-item results of a map step from its item records, in item order.

    A succeeded step has one result per element of its value; otherwise the
    items up to the last recorded one, those without a record taking the
    step's status.
    """
    if step.status is StepStatus.SUCCEEDED and isinstance(step.value, list):
        count = len(step.value)
    else:
        count = max(items) + 1
    out = []
    for i in range(count):
        label = f"{step.name}[{i}]"
        r = items.get(i)
        if r is not None:
            value = decode_value(codec, r.codec, r.value, run_id, f"item {i} of step {step.name!r}")
            out.append(StepResult(label, StepStatus.SUCCEEDED, value, None, r.attempts, r.started_at, r.finished_at))
        elif step.status is StepStatus.SUCCEEDED:
            out.append(StepResult(label, StepStatus.SUCCEEDED, step.value[i], attempts=step.attempts))
        else:
            out.append(StepResult(label, step.status))
    return tuple(out)


def type_name(exc: BaseException) -> str:
    """How a record names an exception's type: ``ValueError``, ``package.module.Error``."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


public_home(RecordedError, RunInfo)  # trioflow imports them when first used
