"""The in-memory store: :class:`MemoryStore`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._codec import Codec
from .._records import (
    ItemRecord,
    RunHeader,
    RunInfo,
    RunRecords,
    StepRecord,
    check_header,
    run_result,
)
from .._results import RunResult
from ..abc import RunSession
from ._base import BuiltinStore, check_codec, check_run_id, checkpoint

__all__ = ["MemoryStore"]


class _MemoryRun:
    __slots__ = ("header", "info", "items", "steps")

    def __init__(self, header: RunHeader, info: RunInfo) -> None:
        self.header = header
        self.info = info
        self.steps: dict[str, StepRecord] = {}
        self.items: dict[str, dict[int, ItemRecord]] = {}

    def snapshot(self) -> RunRecords:
        return RunRecords(
            header=self.header,
            info=self.info,
            steps=dict(self.steps),
            items={k: dict(v) for k, v in self.items.items()},
        )


class _MemorySession:
    def __init__(self, run: _MemoryRun, previous: RunRecords) -> None:
        self._run = run
        self.previous = previous

    def record_step(self, record: StepRecord) -> None:
        self._run.steps[record.name] = record

    def record_item(self, record: ItemRecord) -> None:
        self._run.items.setdefault(record.step, {})[record.index] = record

    def finish(self, status: str, started_at: float, finished_at: float) -> None:
        info = self._run.info
        self._run.info = RunInfo(
            info.run_id, info.flow, info.fingerprint, status, info.created, time.time(),
            started_at, finished_at,
        )


class MemoryStore(BuiltinStore):
    """Records runs in memory: for tests, and for resuming within one process.

    Values go through the codec like in every store (so what works here works
    with :class:`SQLiteStore`), and loading gives decoded copies.

    Args:
        codec: how values are encoded (default :class:`~trioflow.JSONCodec`).

    Example:
        >>> import trio, trioflow
        >>> store = trioflow.MemoryStore()
        >>> flow = trioflow.Flow("hello")
        >>> @flow.step
        ... async def greet(name: str) -> str:
        ...     return f"hello {name}"
        >>> trio.run(lambda: flow.run({"name": "ada"}, store=store, run_id="r1"))["greet"]
        'hello ada'
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self._codec = check_codec(codec)
        self._runs: dict[str, _MemoryRun] = {}

    def __repr__(self) -> str:
        return f"<trioflow.MemoryStore with {len(self._runs)} runs>"

    @property
    def codec(self) -> Codec:
        return self._codec

    @asynccontextmanager
    async def open_run(self, header: RunHeader) -> AsyncIterator[RunSession]:
        """Start or resume a run (see :meth:`trioflow.abc.Store.open_run`). Entering is a checkpoint."""
        await checkpoint()
        run = self._runs.get(header.run_id)
        now = time.time()
        if run is None:
            run = self._runs[header.run_id] = _MemoryRun(
                header, RunInfo(header.run_id, header.flow, header.fingerprint, "running", now, now)
            )
            previous = RunRecords()
        else:
            check_header(run.header, header)
            previous = run.snapshot()
            i = run.info
            run.info = RunInfo(i.run_id, i.flow, i.fingerprint, "running", i.created, now, i.started_at, i.finished_at)
        yield _MemorySession(run, previous)

    async def runs(self) -> list[RunInfo]:
        """Every recorded run, oldest first. A checkpoint."""
        await checkpoint()
        return [r.info for r in self._runs.values()]

    async def load(self, run_id: str) -> RunResult:
        """The recorded :class:`~trioflow.RunResult` of ``run_id``. A checkpoint.

        Raises:
            StoreError: no such run, or a value cannot be decoded.
        """
        await checkpoint()
        run = self._runs.get(check_run_id(run_id))
        return run_result(run.snapshot() if run else RunRecords(), self._codec, run_id)

    async def forget(self, run_id: str) -> bool:
        """Delete ``run_id`` and its records, so the id can start over. A checkpoint.

        Returns:
            Whether there was such a run.
        """
        await checkpoint()
        return self._runs.pop(check_run_id(run_id), None) is not None
