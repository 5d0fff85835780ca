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
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
import attrs
import trio

from ._codec import CodecError
from ._exceptions import FlowError, StoreError
from ._graph import Plan
from ._records import RunHeader, decode_value, step_result
from ._results import RunResult, StepResult, StepStatus
from ._scheduler import Run, RunOptions, current_backend
from ._stores._base import BuiltinStore, recording_hooks
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


def _header(flow: str, plan: Plan, inputs: Mapping[str, Any], codec: Codec, run_id: str) -> RunHeader:
    ordered = {k: inputs[k] for k in sorted(inputs)}
    try:
        data = codec.encode(ordered)
    except Exception as exc:
        raise StoreError(
            f"run {run_id!r} of flow {flow!r}: the store cannot record its inputs: {exc}"
        ) from exc
    canonical = data
    if codec.name == "json":  # equal inputs, equal digest, whatever the order of dict keys
        canonical = json.dumps(json.loads(data), sort_keys=True).encode()
    # the defaults that stand in for inputs not given are inputs too: changing one changes results
    digest = hashlib.sha256(canonical)
    for node in plan.nodes:
        for p in node.inputs:
            if p.has_default and p.name not in inputs:
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
    header = _header(flow, plan, inputs, codec, run_id)
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
    async with store.open_run(header) as session:
        previous = session.previous
        completed: dict[str, StepResult] = {}
        completed_items: dict[str, dict[int, Any]] = {}
        for name, record in previous.steps.items():
            if record.status is StepStatus.SUCCEEDED and name in plan.by_name:
                completed[name] = step_result(record, codec, run_id)
        for name, items in previous.items.items():
            if name in completed or name not in plan.by_name:
                continue
            completed_items[name] = {
                index: decode_value(codec, r.codec, r.value, run_id, f"item {index} of step {name!r}")
                for index, r in items.items()
            }
        errors: list[BaseException] = []
        record_step, record_item = recording_hooks(session, codec, errors)
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
            result = await run.execute()
            status = "succeeded"
        except BaseException as exc:
            if _only_on_event_failed(exc):  # every step succeeded: so did the run
                status = "succeeded"
            elif not _is_cancellation(exc):
                status = "failed"
            if errors:
                exc.add_note(f"trioflow: {_record_failure(run_id, errors)}")
            raise
        finally:
            started = getattr(run, "started_at", 0.0)
            session.finish(status, started, getattr(run, "finished_at", started))
        if errors:
            raise StoreError(_record_failure(run_id, errors)) from errors[0]
    return result


def _only_on_event_failed(exc: BaseException) -> bool:
    """A :class:`FlowError` raised only because the ``on_event`` callback raised."""
    result = getattr(exc, "result", None)
    return isinstance(exc, FlowError) and isinstance(result, RunResult) and result.ok


def _is_cancellation(exc: BaseException) -> bool:
    """``Cancelled``, or a group of nothing else (how a trio nursery passes it on)."""
    cancelled = trio.Cancelled if current_backend().name == "trio" else anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)


def _record_failure(run_id: str, errors: list[BaseException]) -> str:
    return f"run {run_id!r}: {len(errors)} record(s) could not be made; the first: {errors[0]}"
