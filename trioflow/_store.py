"""Stores: :class:`MemoryStore` and :class:`SQLiteStore`, where durable runs are recorded.

A store gives each run a *session* (:meth:`open_run`). The scheduler calls the
session's ``record_step``/``record_item`` synchronously the moment a step or a
map item finishes, so those only queue the record; :class:`SQLiteStore` writes
the queues of all its open sessions from one worker thread, one transaction
per batch (group commit), and leaving the session waits until every record of
its run is committed. The event loop
never waits for the disk while steps run.

Both stores encode values with a codec (JSON by default), so a value that
:class:`MemoryStore` accepts is one that :class:`SQLiteStore` accepts too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import queue
import sqlite3
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio.to_thread
import trio
import trio.lowlevel

from ._codec import JSONCodec
from ._exceptions import StoreError
from ._records import (
    ItemRecord,
    RunHeader,
    RunInfo,
    RunRecords,
    StepRecord,
    check_header,
    run_result,
    type_name,
)
from ._results import RunResult, StepStatus
from ._scheduler import Recorder, current_backend
from .abc import Codec, RunSession

__all__ = ["MemoryStore", "SQLiteStore"]

T = TypeVar("T")


# trio's own primitives under trio (cheaper, and anyio's trio backend is not
# imported on first use), anyio's elsewhere


async def _checkpoint() -> None:
    await current_backend().checkpoint()


async def _to_thread(fn: Callable[..., T], *args: Any) -> T:
    if current_backend().name == "trio":
        return await trio.to_thread.run_sync(fn, *args)
    return await anyio.to_thread.run_sync(fn, *args)


class _Signal:
    """An event that another thread sets, waking the event loop's task that waits on it.

    Cheaper than a worker thread blocked on a :class:`threading.Event`, and it
    ties up no thread of the loop's pool while it waits.
    """

    __slots__ = ("_call", "_event")

    def __init__(self) -> None:
        if current_backend().name == "trio":
            self._event: trio.Event | anyio.Event = trio.Event()
            self._call: Callable[[Callable[[], object]], object] = (
                trio.lowlevel.current_trio_token().run_sync_soon
            )
        else:  # anyio on asyncio
            self._event = anyio.Event()
            self._call = asyncio.get_running_loop().call_soon_threadsafe

    def set(self) -> None:
        """Wake the waiter (from any thread)."""
        try:
            self._call(self._event.set)
        except (trio.RunFinishedError, RuntimeError):
            pass  # the event loop has ended: no one is waiting any more

    async def wait(self) -> None:
        await self._event.wait()


def _shielded() -> Any:
    return current_backend().cancel_scope(shield=True)


def _check_codec(codec: object) -> Codec:
    if codec is None:
        return JSONCodec()
    if not isinstance(codec, Codec):
        raise TypeError(
            f"codec= takes a codec such as trioflow.JSONCodec() or trioflow.PickleCodec() "
            f"(got {codec!r} that is a {type(codec).__name__})"
        )
    return codec


def _check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string (got {run_id!r})")
    return run_id


# -- MemoryStore -------------------------------------------------------------------------


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


class MemoryStore:
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
        self._codec = _check_codec(codec)
        self._runs: dict[str, _MemoryRun] = {}

    def __repr__(self) -> str:
        return f"<trioflow.MemoryStore with {len(self._runs)} runs>"

    @property
    def codec(self) -> Codec:
        return self._codec

    @asynccontextmanager
    async def open_run(self, header: RunHeader) -> AsyncIterator[RunSession]:
        """Start or resume a run (see :meth:`trioflow.abc.Store.open_run`). Entering is a checkpoint."""
        await _checkpoint()
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
        await _checkpoint()
        return [r.info for r in self._runs.values()]

    async def load(self, run_id: str) -> RunResult:
        """The recorded :class:`~trioflow.RunResult` of ``run_id``. A checkpoint.

        Raises:
            StoreError: no such run, or a value cannot be decoded.
        """
        await _checkpoint()
        run = self._runs.get(_check_run_id(run_id))
        return run_result(run.snapshot() if run else RunRecords(), self._codec, run_id)

    async def forget(self, run_id: str) -> bool:
        """Delete ``run_id`` and its records, so the id can start over. A checkpoint.

        Returns:
            Whether there was such a run.
        """
        await _checkpoint()
        return self._runs.pop(_check_run_id(run_id), None) is not None


# -- SQLiteStore -------------------------------------------------------------------------

_APPLICATION_ID = 0x54466C77  # "TFlw", in the database header: marks a trioflow store
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    steps TEXT NOT NULL,
    inputs BLOB NOT NULL,
    inputs_digest TEXT NOT NULL,
    codec TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    codec TEXT NOT NULL,
    records TEXT NOT NULL,
    times BLOB NOT NULL
);
CREATE INDEX journal_run ON journal (run_id, id);
"""

# Cache entries (trioflow.Cache(store=...)): made on first use in a store of any age
_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key BLOB PRIMARY KEY,
    step TEXT NOT NULL,
    value BLOB NOT NULL,
    codec TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_step ON cache (step, stored_at);
"""

_JOURNAL = "INSERT INTO journal (run_id, codec, records, times) VALUES (?, ?, ?, ?)"
_FINISH_RUN = "UPDATE runs SET status = ?, started_at = ?, finished_at = ?, updated = ? WHERE run_id = ?"
_ENCODE_BATCH = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# A queued write: a record, as (run id, its fields as a JSON-ready list,
# started_at, finished_at) with NaN for a missing time, or a _Finish. The records
# of one run in one commit are one journal row: the records as one JSON array,
# their times as float64 pairs, little-endian (exact, and much cheaper to write
# than JSON's shortest float text), and the store's codec. One INSERT per run and
# commit keeps the writer thread's share of the GIL small. The records, values as
# text (see _text):
#
#   ["s", step, value, attempts] + [usage]?     succeeded, value by the row's codec
#   ["x", step, status, value, codec, error type, error message, attempts, usage]
#   ["i", step, index, value, attempts]          a map item, value by the row's codec
#   ["j", step, index, value, codec, attempts]
#
# The short forms are what flows write; the long ones carry their own codec.
_Record = tuple[str, list[Any], float, float]
_NAN = math.nan
_BIG_ENDIAN = sys.byteorder == "big"


class _Finish:
    """A queued write: the run's end (the parameters of ``_FINISH_RUN``)."""

    __slots__ = ("params", "run_id")

    def __init__(self, params: tuple[str, float, float, float, str]) -> None:
        self.params = params
        self.run_id = params[-1]


_Write = _Record | _Finish


def _long_record(
    run_id: str,
    name: str,
    status: StepStatus,
    value: str | None,
    codec: str | None,
    error_type: str | None,
    error_message: str | None,
    attempts: int,
    started_at: float | None,
    finished_at: float | None,
    usage: Mapping[str, float],
) -> _Record:
    """A step record in the long ``"x"`` form, queued as a write."""
    return (
        run_id,
        ["x", name, status, value, codec, error_type, error_message, attempts, dict(usage) if usage else None],
        _NAN if started_at is None else started_at,
        _NAN if finished_at is None else finished_at,
    )


def _times(records: Sequence[_Record]) -> bytes:
    times = array("d")
    append = times.append
    for _, _, started, finished in records:
        append(started)
        append(finished)
    if _BIG_ENDIAN:
        times.byteswap()
    return times.tobytes()


def _read_times(blob: bytes, count: int) -> list[float | None]:
    times = array("d")
    times.frombytes(blob)
    if _BIG_ENDIAN:
        times.byteswap()
    if len(times) != 2 * count:
        raise ValueError(f"{len(times)} times for {count} records")
    return [None if t != t else t for t in times]  # NaN: no time


def _text(value: bytes, codec: str) -> str:
    """A value's bytes as JSON text: as they are for the JSON codec, else base64."""
    if codec == "json":
        return value.decode()
    return base64.b64encode(value).decode("ascii")


def _bytes(text: str, codec: str) -> bytes:
    if codec == "json":
        return text.encode()
    return base64.b64decode(text)


_GATHER = 0.01  # seconds: how long records gather before a commit


_STOP = object()  # put on a writer's queue when its last session has closed


class _Flush:
    """Put on a writer's queue by a closing session: set once what came before is committed."""

    __slots__ = ("done", "error", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.done = _Signal()
        self.error: BaseException | None = None  # what lost some of the run's records


def _own_error(error: BaseException, what: str) -> StoreError:
    """A new :class:`StoreError` for one run, caused by ``error`` (which other runs may share).

    Raising one exception object in several tasks would tangle its traceback.
    """
    own = StoreError(str(error) if isinstance(error, StoreError) else f"{what}: {error}")
    own.__cause__ = error
    return own


class _Begin:
    """Put on a writer's queue by a run that starts: set once the run is registered.

    ``outcome`` is then the run's earlier records, or the error that refused it.
    """

    __slots__ = ("done", "header", "outcome")

    def __init__(self, header: RunHeader) -> None:
        self.header = header
        self.done = _Signal()
        self.outcome: RunRecords | BaseException | None = None


class _Writer:
    """A worker thread that does the database work of a store's runs.

    Records gather for a moment, then whatever every session queued is committed
    in one transaction (group commit): the runs that start (see :class:`_Begin`),
    a journal row per run, and one sync to disk for all the runs that ended in
    it. The thread lives while sessions are open; when the last one closes it
    stops, and a later session starts a new writer (with a queue of its own).
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put: Callable[[Any], None] = self._queue.put
        self.sessions = 0  # open sessions using this writer (under the store's _writer_lock)
        self._wake = threading.Event()  # a run starts or ends: ends the gathering pause
        self._failed: dict[str, BaseException] = {}  # run id -> the error that lost its records
        self._thread = threading.Thread(
            target=self._loop, name=f"trioflow-store-writer[{store.path}]", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        failed = self._failed
        stopping = False
        while not stopping:
            item = get()
            if type(item) is tuple:
                # let records gather for a moment: fewer, larger commits, and fewer
                # wake-ups of this thread competing with the event loop for the GIL
                # (cut short when a run starts or ends)
                self._wake.wait(_GATHER)
            self._wake.clear()
            batch: list[Any] = []
            begins: list[_Begin] = []
            flushes: list[_Flush] = []
            while True:
                if item is _STOP:  # nothing is queued after it
                    stopping = True
                    break
                if type(item) is _Flush:
                    flushes.append(item)
                elif type(item) is _Begin:
                    begins.append(item)
                elif (item.run_id if type(item) is _Finish else item[0]) not in failed:
                    batch.append(item)  # (after a lost write, nothing more of that run is written)
                if len(batch) >= 10_000:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if batch or begins:
                try:
                    self._store._write(batch, begins)
                except BaseException as exc:  # given to the sessions when they close
                    for w in batch:
                        failed.setdefault(w.run_id if type(w) is _Finish else w[0], exc)
                    for begin in begins:
                        begin.outcome = exc
            for begin in begins:
                begin.done.set()
            for flush in flushes:
                flush.error = failed.pop(flush.run_id, None)
                flush.done.set()

    async def begin(self, header: RunHeader) -> RunRecords:
        """Register a run that starts (or resumes); its earlier records.

        Raises:
            StoreError: the run id was recorded with another flow, structure or
                inputs, or the database is unusable.
        """
        begin = _Begin(header)
        self._queue.put(begin)
        self._wake.set()
        await begin.done.wait()
        outcome = begin.outcome
        if isinstance(outcome, BaseException):  # (maybe shared by several runs' begins)
            raise _own_error(outcome, f"{self._store!r} could not start run {header.run_id!r}")
        assert outcome is not None
        return outcome

    async def flush(self, run_id: str) -> BaseException | None:
        """Wait until every write queued for ``run_id`` is committed; the error that lost any."""
        flush = _Flush(run_id)
        self._queue.put(flush)
        self._wake.set()
        await flush.done.wait()
        return flush.error

    def stop(self) -> None:
        """End the thread once it has committed everything queued."""
        self._queue.put(_STOP)
        self._wake.set()

    def join(self) -> None:
        self._thread.join()

    def running(self) -> bool:
        return self._thread.is_alive()


class _SQLiteSession:
    def __init__(self, store: SQLiteStore, run_id: str, previous: RunRecords, writer: _Writer | None) -> None:
        self._store = store
        self._run_id = run_id
        self.previous = previous
        self._writer = writer
        self._put: Callable[[_Write], None] = self._write_now if self._writer is None else self._writer.put
        self.error: BaseException | None = None

    def _write_now(self, write: _Write) -> None:
        """Commit one write at once, on this thread (``threaded=False``)."""
        if self.error is None:
            try:
                self._store._write([write])
            except BaseException as exc:  # the scheduler must not see it: raised at close
                self.error = exc

    def record_step(self, r: StepRecord) -> None:
        value = None if r.value is None or r.codec is None else _text(r.value, r.codec)
        self._put(
            _long_record(
                self._run_id, r.name, r.status, value, r.codec, r.error_type, r.error_message,
                r.attempts, r.started_at, r.finished_at, r.usage,
            )
        )

    def record_item(self, r: ItemRecord) -> None:
        self._put((self._run_id, ["j", r.step, r.index, _text(r.value, r.codec), r.codec, r.attempts], _NAN, _NAN))

    def hooks(
        self, codec: Codec, errors: list[BaseException]
    ) -> tuple[Recorder, Callable[[str, int, Any, bytes, int], None]]:
        """The scheduler's recorder hooks, queueing journal rows with no record objects between.

        A failure to record goes to ``errors`` (the scheduler never sees it).
        """
        assert codec is self._store.codec  # the short records are in the journal row's codec
        put = self._put
        run_id = self._run_id
        encode = codec.encode
        name_ = codec.name
        text = bytes.decode if name_ == "json" else (lambda data: _text(data, name_))
        succeeded = StepStatus.SUCCEEDED

        def record_step(
            name: str,
            status: StepStatus,
            value: Any,
            data: bytes | None,
            error: BaseException | None,
            attempts: int,
            started_at: float | None,
            finished_at: float | None,
            usage: dict[str, float],
        ) -> None:
            try:
                if status is succeeded:
                    if data is None:  # a map step's list (its items were encoded one by one)
                        data = encode(value)
                    row = ["s", name, text(data), attempts]
                    if usage:
                        row.append(dict(usage))
                    put((
                        run_id, row, _NAN if started_at is None else started_at,
                        _NAN if finished_at is None else finished_at,
                    ))
                else:
                    put(
                        _long_record(
                            run_id, name, status, None, None, None if error is None else type_name(error),
                            None if error is None else str(error), attempts, started_at, finished_at, usage,
                        )
                    )
            except Exception as exc:
                errors.append(exc)

        def record_item(step: str, index: int, value: Any, data: bytes, attempts: int) -> None:
            try:
                put((run_id, ["i", step, index, text(data), attempts], _NAN, _NAN))
            except Exception as exc:
                errors.append(exc)

        return record_step, record_item

    def finish(self, status: str, started_at: float, finished_at: float) -> None:
        self._put(_Finish((status, started_at, finished_at, time.time(), self._run_id)))

    async def close(self) -> None:
        """Wait until every record is committed (keeping the error that lost any)."""
        writer = self._writer
        if writer is not None:
            try:
                self.error = await writer.flush(self._run_id)
            finally:
                self._store._detach(writer)


class SQLiteStore:
    """Records runs in an SQLite database file: the embedded default store.

    Uses the standard library's :mod:`sqlite3` in WAL mode. By default every
    database call runs in a worker thread, so the event loop never waits for the
    disk: records are queued the moment a step finishes, and one writer thread
    per store commits what every run going on has queued in one transaction
    every few milliseconds (group commit). ``flow.run`` returns (or raises) only
    after every record of the run is committed, so a step reported as succeeded
    in its result is durable; after a crash (even ``SIGKILL``), a committed
    record is never lost and a half-written batch is never seen.

    Several runs, tasks and processes can share a database file.

    Args:
        path: the database file; created (with its tables) if it does not exist.
        codec: how values are encoded (default :class:`~trioflow.JSONCodec`;
            pass :class:`~trioflow.PickleCodec` to opt in to pickle).
        threaded: ``True`` (default) does database work in worker threads.
            ``False`` does it inline on the event loop's thread, committing each
            record as it is made: it blocks the loop for each write, but involves
            no thread, which is what tests in virtual time need (a thread's work
            is invisible to ``MockClock``'s autojump, so a run's virtual
            timeline would depend on the disk).
        fsync: every commit survives a crash of the process at once. With
            ``True`` (default) the commit that ends a run is also synced to disk
            (``PRAGMA synchronous=FULL`` in WAL mode, which syncs every earlier
            commit with it), so when :meth:`Flow.run <trioflow.Flow.run>`
            returns, its records survive power loss too; a power loss *during*
            a run may undo its latest records, whose steps then run again on
            resume. ``False`` never syncs (``NORMAL``): a power loss may undo
            the latest records of finished runs too.

    Raises:
        StoreError: (on first use) the file is not an SQLite database, is
            corrupt, or is a database that trioflow did not create.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        threaded: bool = True,
        fsync: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"SQLiteStore(path) takes a file path (got {path!r})")
        self.path = os.fspath(path)
        self._realpath = os.path.realpath(self.path)  # what identifies the database file
        self._codec = _check_codec(codec)
        self.threaded = bool(threaded)
        self.fsync = bool(fsync)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._writer: _Writer | None = None  # while sessions are open (threaded only)
        self._stopped: list[_Writer] = []  # writers stopped, maybe still ending
        self._writer_lock = threading.Lock()
        self._cache_ready = False  # the cache table exists (made on first use)

    def __repr__(self) -> str:
        return f"<trioflow.SQLiteStore {self.path!r}>"

    @property
    def codec(self) -> Codec:
        return self._codec

    # -- database access (always under self._lock; in a worker thread when threaded) --

    async def _call(self, fn: Callable[[], T]) -> T:
        if self.threaded:
            return await _to_thread(self._locked, fn)
        await _checkpoint()
        return self._locked(fn)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return fn()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return StoreError(
                f"{self.path!r} is not a usable trioflow store: {text}; the file is corrupt or is "
                f"not an SQLite database (move it away to start a new store there)"
            )
        return StoreError(f"SQLite store {self.path!r} failed: {type(exc).__name__}: {text}")

    def _connect(self) -> sqlite3.Connection:
        try:
            with open(self.path, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            head = b""
        if head and head != b"SQLite format 3\x00":
            raise StoreError(
                f"{self.path!r} is not an SQLite database (it starts with {head!r}); "
                f"point SQLiteStore at a new file or at a store trioflow created"
            )
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout = 30000")
        app_id, version, tables = self._identity(conn)
        if app_id == 0 and not tables:
            conn.execute("BEGIN IMMEDIATE")  # serializes creation with other processes
            try:
                app_id, version, tables = self._identity(conn)
                if app_id == 0 and not tables:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                    app_id, version = _APPLICATION_ID, _SCHEMA_VERSION
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if app_id != _APPLICATION_ID:
            shown = ", ".join(repr(t) for t in tables[:5])
            raise StoreError(
                f"{self.path!r} is an SQLite database that trioflow did not create (tables {shown}); "
                f"point SQLiteStore at a new file or at a store trioflow created"
            )
        if version != _SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} is a trioflow store of schema version {version}, and this trioflow "
                f"reads version {_SCHEMA_VERSION}; use a matching trioflow version"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put {self.path!r} in WAL mode (journal_mode is {mode!r})")
        # Commits during a run survive a process crash at once; with fsync=True the
        # commit that ends a run is FULL, which syncs the WAL and so every earlier
        # commit with it (see _write)
        conn.execute("PRAGMA synchronous = NORMAL")

    @staticmethod
    def _identity(conn: sqlite3.Connection) -> tuple[int, int, list[str]]:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return int(app_id), int(version), tables

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _write(self, batch: Sequence[_Write], begins: Sequence[_Begin] = ()) -> None:
        """Commit ``batch``, the writes of one or more runs, in one transaction.

        The runs that ``begins`` start are registered first (a begin that is
        refused gets its error as its outcome, and changes nothing).
        """
        runs: dict[str, list[_Record]] = {}  # run id -> its records, in order
        finishes = []
        last = None
        records: list[_Record] = []
        for w in batch:
            if isinstance(w, _Finish):
                finishes.append(w.params)
                continue
            if w[0] != last:
                last = w[0]
                records = runs.setdefault(last, [])
            records.append(w)

        def write(conn: sqlite3.Connection) -> None:
            for begin in begins:
                try:
                    begin.outcome = self._begin_in(conn, begin.header)
                except StoreError as exc:
                    begin.outcome = exc
            for run_id, records in runs.items():
                rows = _ENCODE_BATCH([r[1] for r in records])
                conn.execute(_JOURNAL, (run_id, self._codec.name, rows, _times(records)))
            for params in finishes:
                conn.execute(_FINISH_RUN, params)

        def commit() -> None:
            if not (finishes and self.fsync):
                self._transaction(write)
                return
            conn = self._conn
            assert conn is not None
            conn.execute("PRAGMA synchronous = FULL")  # the run's end: sync it all to disk
            try:
                self._transaction(write)
            finally:
                conn.execute("PRAGMA synchronous = NORMAL")

        self._locked(commit)

    # -- runs ------------------------------------------------------------------------

    def _read(self, conn: sqlite3.Connection, run_id: str) -> RunRecords:
        row = conn.execute(
            "SELECT flow, fingerprint, steps, inputs, inputs_digest, codec, status, created, "
            "updated, started_at, finished_at FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return RunRecords()
        flow, fingerprint, steps, inputs, digest, codec, status, created, updated, started, finished = row
        header = RunHeader(run_id, flow, fingerprint, bytes(inputs), digest, codec, tuple(json.loads(steps)))
        info = RunInfo(run_id, flow, fingerprint, status, created, updated, started, finished)
        step_records: dict[str, StepRecord] = {}
        items: dict[str, dict[int, ItemRecord]] = {}
        journal = conn.execute(
            "SELECT codec, records, times FROM journal WHERE run_id = ? ORDER BY id", (run_id,)
        )
        for row_codec, text, blob in journal:
            try:
                batch = json.loads(text)
                times = _read_times(blob, len(batch))
                for k, r in enumerate(batch):  # replayed in order: the latest record of a step wins
                    kind = r[0]
                    if kind == "s":
                        step_records[r[1]] = StepRecord(
                            r[1], StepStatus.SUCCEEDED, _bytes(r[2], row_codec), row_codec, None, None,
                            r[3], times[2 * k], times[2 * k + 1], r[4] if len(r) > 4 else {},
                        )
                    elif kind == "x":
                        step_records[r[1]] = StepRecord(
                            r[1], StepStatus(r[2]), None if r[3] is None else _bytes(r[3], r[4]), r[4],
                            r[5], r[6], r[7], times[2 * k], times[2 * k + 1], r[8] or {},
                        )
                    elif kind == "i":
                        items.setdefault(r[1], {})[r[2]] = ItemRecord(
                            r[1], r[2], _bytes(r[3], row_codec), row_codec, r[4]
                        )
                    elif kind == "j":
                        items.setdefault(r[1], {})[r[2]] = ItemRecord(r[1], r[2], _bytes(r[3], r[4]), r[4], r[5])
                    else:
                        raise ValueError(f"unknown record kind {kind!r}")
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise StoreError(
                    f"{self.path!r}: the records of run {run_id!r} are damaged ({exc!r}); "
                    f"start the run over with `await store.forget({run_id!r})`"
                ) from None
        return RunRecords(header=header, info=info, steps=step_records, items=items)

    def _begin_in(self, conn: sqlite3.Connection, header: RunHeader) -> RunRecords:
        """Register a run that starts, in the transaction going on; its earlier records.

        Raises:
            StoreError: (before writing anything) the run id was recorded with
                another flow, structure or inputs, or its records are damaged.
        """
        records = self._read(conn, header.run_id)
        now = time.time()
        if records.header is None:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, NULL, NULL)",
                (
                    header.run_id, header.flow, header.fingerprint, json.dumps(list(header.steps)),
                    header.inputs, header.inputs_digest, header.codec, now, now,
                ),
            )
            return RunRecords()
        check_header(records.header, header)
        conn.execute("UPDATE runs SET status = 'running', updated = ? WHERE run_id = ?", (now, header.run_id))
        return records

    @asynccontextmanager
    async def open_run(self, header: RunHeader) -> AsyncIterator[RunSession]:
        """Start or resume a run (see :meth:`trioflow.abc.Store.open_run`).

        Entering registers the run and reads its records (in the store's
        writer thread, with the other runs' writes, unless ``threaded=False``);
        leaving waits, shielded from cancellation, until every record is
        committed. Both are checkpoints.

        Raises:
            StoreError: the run id was recorded with another flow, structure or
                inputs; the database is unusable; or records could not be written.
        """
        if self.threaded:
            writer = self._attach()
            try:
                previous = await writer.begin(header)
            except BaseException:
                self._detach(writer)
                raise
            session = _SQLiteSession(self, header.run_id, previous, writer)
        else:
            await _checkpoint()
            previous = self._locked(lambda: self._transaction(lambda conn: self._begin_in(conn, header)))
            session = _SQLiteSession(self, header.run_id, previous, None)
        try:
            yield session
        except BaseException as exc:
            with _shielded():
                await session.close()
            if session.error is not None:
                exc.add_note(f"trioflow: the store also failed to record run {header.run_id!r}: {session.error}")
            raise
        with _shielded():
            await session.close()
        if session.error is not None:  # (maybe shared by several runs)
            raise _own_error(session.error, f"{self!r} could not record run {header.run_id!r}")

    async def runs(self) -> list[RunInfo]:
        """Every recorded run, oldest first. A checkpoint."""

        def runs() -> list[RunInfo]:
            assert self._conn is not None
            return [
                RunInfo(*row)
                for row in self._conn.execute(
                    "SELECT run_id, flow, fingerprint, status, created, updated, started_at, "
                    "finished_at FROM runs ORDER BY created, rowid"
                )
            ]

        return await self._call(runs)

    async def load(self, run_id: str) -> RunResult:
        """The recorded :class:`~trioflow.RunResult` of ``run_id``. A checkpoint.

        Raises:
            StoreError: no such run, or a value cannot be decoded.
        """
        _check_run_id(run_id)
        records = await self._call(lambda: self._read(self._conn, run_id))  # type: ignore[arg-type]
        return run_result(records, self._codec, run_id)

    async def forget(self, run_id: str) -> bool:
        """Delete ``run_id`` and its records, so the id can start over. A checkpoint.

        Returns:
            Whether there was such a run.
        """
        _check_run_id(run_id)

        def forget(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM journal WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

        return await self._call(lambda: self._transaction(forget))

    # -- cache entries (for trioflow.Cache) --------------------------------------------

    async def _cache_get(self, key: bytes) -> tuple[bytes, str, float] | None:
        """The entry stored under ``key``: (value, codec name, stored_at), or None."""

        def get() -> tuple[bytes, str, float] | None:
            conn = self._cache_conn()
            row = conn.execute("SELECT value, codec, stored_at FROM cache WHERE key = ?", (key,)).fetchone()
            return None if row is None else (bytes(row[0]), row[1], row[2])

        return await self._call(get)

    async def _cache_put(
        self, key: bytes, step: str, value: bytes, stored_at: float, expired_before: float | None
    ) -> None:
        """Store an entry; also delete the step's entries stored at ``expired_before`` or earlier."""

        def put(conn: sqlite3.Connection) -> None:
            if expired_before is not None:
                conn.execute("DELETE FROM cache WHERE step = ? AND stored_at <= ?", (step, expired_before))
            conn.execute(
                "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)",
                (key, step, value, self._codec.name, stored_at),
            )

        await self._cache_write(put)

    async def _cache_delete(self, steps: Sequence[str]) -> int:
        """Delete the entries of ``steps``; return how many there were."""

        def delete(conn: sqlite3.Connection) -> int:
            return sum(conn.execute("DELETE FROM cache WHERE step = ?", (step,)).rowcount for step in steps)

        return await self._cache_write(delete)

    async def _cache_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a transaction, with the cache table made if need be."""

        def write() -> T:
            self._cache_conn()
            return self._transaction(fn)

        return await self._call(write)

    def _cache_conn(self) -> sqlite3.Connection:
        conn = self._conn
        assert conn is not None
        if not self._cache_ready:
            conn.executescript(_CACHE_SCHEMA)
            self._cache_ready = True
        return conn

    def _attach(self) -> _Writer:
        """The writer for a new session (started if none is running)."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = _Writer(self)
            self._writer.sessions += 1
            return self._writer

    def _detach(self, writer: _Writer) -> None:
        """A session has closed: the last one stops the writer."""
        with self._writer_lock:
            writer.sessions -= 1
            if writer.sessions == 0 and self._writer is writer:
                self._writer = None
                self._stopped = [w for w in self._stopped if w.running()]
                self._stopped.append(writer)
                writer.stop()

    def close(self) -> None:
        """Close the database connection. Call it after the runs using the store have ended.

        (A run still going on fails to record, with a :exc:`StoreError`.)
        """
        with self._writer_lock:
            stopped, self._stopped = self._stopped, []
        for writer in stopped:  # let their threads end: they have nothing left to write
            writer.join()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
