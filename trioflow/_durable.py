"""Durable runs: ``flow.run(..., store=..., run_id=...)``.

:func:`run_with_store` opens a session on the store, which checks the run id
against what is recorded (same flow, structure and inputs, or
:class:`StoreError`) before any step runs, and hands the scheduler the
recorded successes so that they are not run again. The scheduler then calls
the recorder hooks the moment each step or map item finishes.

A step's value is encoded *inside its attempt*, right after the step function
returns (the scheduler's ``on_value`` hook), so a value the codec cannot encode
fails that very step, through the scheduler's ordinary failure path (retries,
``fail_fast``/``continue``, ``FlowError``), and every other record stays
intact. The encoded bytes wait for the recorder, so nothing is encoded twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

import attrs
import trio

from ._codec import _TAG, CodecError, JSONCodec
from ._exceptions import FlowError, StoreError
from ._graph import Plan
from ._records import RunHeader, decode_value, step_result
from ._results import RunResult, StepResult, StepStatus
from ._scheduler import Run, RunOptions, current_backend
from ._stores._base import (
    BuiltinStore,
    ItemRecorder,
    is_cancellation,
    recording_hooks,
    threadsafe_call,
)
from .abc import Codec, Store


def _value_hook(codec: Codec) -> Callable[[str, int | None, Any], bytes]:
    """The scheduler's ``on_value`` hook: encode each value the moment it is returned.

    The scheduler hands the bytes to the recorder hooks.
    """
    encode = codec.encode

    def on_value(name: str, item: int | None, value: Any) -> bytes:
        try:
            return encode(value)
        except Exception as exc:
            label = name if item is None else f"{name}[{item}]"
            raise CodecError(
                f"step {label!r} returned a value of type {type(value).__qualname__} that the "
                f"store's {codec.name!r} codec cannot encode: {exc}"
            ) from exc

    return on_value


_JSON = JSONCodec()


def _canonical(value: Any) -> Any:
    """Parsed JSON codec output in a form that does not depend on dict order.

    String-keyed dicts are sorted by ``json.dumps(sort_keys=True)``; the codec's
    tagged dicts with other keys (int keys, tuple keys …) hold a list of pairs,
    sorted here by each key's canonical text.
    """
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        if value.get(_TAG) == "dict" and isinstance(value.get("items"), list):
            pairs = [[_canonical(k), _canonical(v)] for k, v in value["items"]]
            pairs.sort(key=lambda kv: json.dumps(kv[0], sort_keys=True))
            return {**value, "items": pairs}
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _header(
    flow: str, plan: Plan, inputs: Mapping[str, Any], codec: Codec, run_id: str,
    resources: Mapping[str, Any] = MappingProxyType({}),
) -> RunHeader:
    ordered = {k: inputs[k] for k in sorted(inputs)}
    try:
        data = codec.encode(ordered)
    except Exception as exc:
        raise StoreError(
            f"run {run_id!r} of flow {flow!r}: the store cannot record its inputs: {exc}"
        ) from exc
    # The digest does not depend on the store's codec (a store reopened with another
    # codec gets the codec's own error, not "different inputs"), nor on the order
    # of dict keys: equal inputs, equal digest. Inputs JSON cannot say are
    # compared by the codec's bytes.
    try:
        canonical = json.dumps(_canonical(json.loads(_JSON.encode(ordered))), sort_keys=True).encode()
    except (TypeError, ValueError):
        canonical = data
    # the defaults that stand in for inputs not given are inputs too: changing one changes results
    digest = hashlib.sha256(canonical)
    for node in plan.nodes:
        for p in node.inputs:
            if p.has_default and p.key not in inputs and p.key not in resources:
                try:
                    default = codec.encode(p.default)
                except Exception:  # not encodable: its type is the best we can compare
                    default = type(p.default).__qualname__.encode()
                digest.update(f"\0{node.spec.name}.{p.name}=".encode() + default)
    return RunHeader(
        run_id=run_id,
        flow=flow,
        fingerprint=plan.fingerprint,
        inputs=data,
        inputs_digest=digest.hexdigest(),
        codec=codec.name,
        steps=tuple(n.spec.name for n in plan.nodes),
    )


async def run_with_store(
    flow: str, plan: Plan, inputs: Mapping[str, Any], options: RunOptions, store: Any
) -> RunResult:
    """Run ``plan`` of the flow named ``flow``, recording to ``store`` and resuming what
    ``options.run_id`` recorded.

    Raises:
        StoreError: the run id was recorded with another flow, structure or
            inputs, or is running already in this process (before any step
            runs), a recorded value cannot be decoded, or the store failed to
            record.
        FlowError: as :meth:`Flow.run`.
    """
    if isinstance(store, type):
        raise TypeError(
            f"flow.run(store=...) got the class {store.__module__}.{store.__qualname__}, not a store; "
            f"make one and pass it, e.g. store=trioflow.SQLiteStore('runs.db') or "
            f"store=trioflow.MemoryStore()"
        )
    # (the built-in stores first: a check against a runtime Protocol is slow)
    if not isinstance(store, BuiltinStore) and not isinstance(store, Store):
        raise TypeError(
            f"flow.run(store=...) takes a store such as trioflow.SQLiteStore('runs.db') or "
            f"trioflow.MemoryStore() (got {store!r} that is a {type(store).__name__})"
        )
    return await _run_checked(flow, plan, inputs, options, cast(Store, store))


async def _run_checked(
    flow: str, plan: Plan, inputs: Mapping[str, Any], options: RunOptions, store: Store
) -> RunResult:
    run_id = options.run_id if options.run_id is not None else uuid.uuid4().hex
    options = attrs.evolve(options, run_id=run_id)
    codec = store.codec
    header = _header(flow, plan, inputs, codec, run_id, options.resources)  # resources: never recorded
    key = (_where(store), run_id)
    if key in _running:
        raise StoreError(
            f"run {run_id!r} is already running in this process (recording to {store!r}); wait "
            f"for it to end before resuming it, or give this run another run_id"
        )
    _running.add(key)
    try:
        return await _run(flow, plan, inputs, options, store, header)
    finally:
        _running.discard(key)


# (where a store keeps its runs, run id) of the runs going on in this process
_running: set[tuple[object, str]] = set()


def _where(store: Store) -> object:
    """What identifies the runs a store holds: its database for the built-in stores, else the store itself."""
    if isinstance(store, BuiltinStore):
        return store._where
    return id(store)


async def _run(
    flow: str, plan: Plan, inputs: Mapping[str, Any], options: RunOptions, store: Store, header: RunHeader
) -> RunResult:
    run_id = header.run_id
    codec = store.codec
    made: RunResult | None = None
    try:
        async with store.open_run(header) as session:
            previous = session.previous
            completed: dict[str, StepResult] = {}
            completed_items: dict[str, Callable[[list[Any]], dict[int, Any]]] = {}
            for name, record in previous.steps.items():
                if record.status is StepStatus.SUCCEEDED and name in plan.by_name:
                    completed[name] = step_result(record, codec, run_id)
            fingerprints: dict[str, list[str]] = {}  # map step -> its items' fingerprints
            for node in plan.nodes:
                name = node.spec.name
                if node.spec.map_over is None or name in completed:
                    continue
                recorded = {
                    index: (
                        decode_value(codec, r.codec, r.value, run_id, f"item {index} of step {name!r}"),
                        r.fingerprint,
                    )
                    for index, r in previous.items.get(name, {}).items()
                }
                completed_items[name] = _matcher(recorded, fingerprints.setdefault(name, []))
            errors: list[BaseException] = []
            # when the store can no longer record the run, the run stops (as at a failure
            # under fail_fast): nothing more is paid for that would be run again on resume
            scope = current_backend().cancel_scope()
            record_step, record_item = recording_hooks(session, codec, errors, _stopper(scope))
            record_item = _with_fingerprints(record_item, fingerprints)
            run = Run(
                flow,
                plan,
                inputs,
                options,
                completed=completed,
                recorder=record_step,
                completed_items=completed_items,
                item_recorder=record_item,
                on_value=_value_hook(codec),
            )
            status = "cancelled"
            try:
                with scope:
                    made = await run.execute()
                    status = "succeeded"
            except BaseException as exc:
                if _only_on_event_failed(exc):  # every step succeeded: so did the run
                    status = "succeeded"
                elif not is_cancellation(exc):
                    status = "failed"
                if errors:
                    exc.add_note(f"trioflow: {_record_failure(run_id, errors)}")
                raise
            finally:
                if scope.cancelled_caught:
                    status = "failed"
                started = getattr(run, "started_at", 0.0)
                session.finish(status, started, getattr(run, "finished_at", started))
            if made is None:  # stopped: the result so far (the store's error comes as the session ends)
                made = run.result()
        if errors:
            raise StoreError(_record_failure(run_id, errors)) from errors[0]
        if scope.cancelled_caught:
            raise StoreError(f"run {run_id!r} was stopped: {store!r} could not record it")
    except StoreError as exc:
        if exc.result is None and made is not None:
            exc.result = made  # every output computed, also those not recorded
        raise
    return made


def _fingerprint(item: Any) -> str:
    """What identifies a map item across processes: a digest of its canonical encoding.

    Equal items (sets and dicts whatever their order) get equal fingerprints;
    an item JSON cannot say is identified by its ``repr`` (which may hold an
    address: such an item is then never matched, and runs again on resume).
    """
    try:
        text = json.dumps(_canonical(json.loads(_JSON.encode(item))), sort_keys=True)
    except (TypeError, ValueError):
        try:
            text = f"repr:{type(item).__module__}.{type(item).__qualname__}:{item!r}"
        except Exception:
            text = f"id:{id(item)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _matcher(
    recorded: dict[int, tuple[Any, str | None]], fingerprints: list[str]
) -> Callable[[list[Any]], dict[int, Any]]:
    """What the scheduler calls with a map step's items: index -> recorded value, for the items recorded.

    A recorded item is matched to an item with the same fingerprint (equal
    items in recorded order), not to the same index: an iterable without a
    stable order (a ``set``, whose order depends on the process's hash seed)
    gives the same result as an uninterrupted run. Records without a
    fingerprint (from trioflow versions before them) are matched by index.
    Fills ``fingerprints`` (by item index) for the item recorder.
    """

    def match(items: list[Any]) -> dict[int, Any]:
        fingerprints[:] = [_fingerprint(item) for item in items]
        if not recorded:
            return {}
        by_fingerprint: dict[str, deque[Any]] = {}
        for index in sorted(recorded):
            value, fingerprint = recorded[index]
            if fingerprint is not None:
                by_fingerprint.setdefault(fingerprint, deque()).append(value)
        done: dict[int, Any] = {}
        for i, fingerprint in enumerate(fingerprints):
            waiting = by_fingerprint.get(fingerprint)
            if waiting:
                done[i] = waiting.popleft()
        for index, (value, fingerprint) in recorded.items():
            if fingerprint is None and 0 <= index < len(items) and index not in done:
                done[index] = value
        return done

    return match


def _with_fingerprints(record_item: ItemRecorder, fingerprints: dict[str, list[str]]) -> Any:
    """The scheduler's item hook: the session's, given each item's fingerprint."""

    def record(step: str, index: int, value: Any, data: bytes, attempts: int, started: float, finished: float) -> None:
        known = fingerprints.get(step)
        record_item(step, index, value, data, attempts, started, finished, known[index] if known else None)

    return record


def _stopper(scope: Any) -> Callable[[], object]:
    """What cancels ``scope`` from any thread (once; harmless once the run has ended)."""
    call = threadsafe_call()
    called = False

    def stop() -> None:
        nonlocal called
        if called:
            return
        called = True
        try:
            call(scope.cancel)
        except (trio.RunFinishedError, RuntimeError):
            pass  # the event loop has ended: so has the run

    return stop


def _only_on_event_failed(exc: BaseException) -> bool:
    """A :class:`FlowError` raised only because the ``on_event`` callback raised."""
    result = getattr(exc, "result", None)
    return isinstance(exc, FlowError) and isinstance(result, RunResult) and result.ok


def _record_failure(run_id: str, errors: list[BaseException]) -> str:
    return f"run {run_id!r}: {len(errors)} record(s) could not be made; the first: {errors[0]}"
