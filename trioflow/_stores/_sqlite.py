"""The embedded default store: :class:`SQLiteStore`, a database file recorded through the journal."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from .._codec import Codec
from .._exceptions import StoreError
from .._records import RunHeader, RunInfo, RunRecords, check_header, run_result
from .._results import RunResult
from ..abc import RunSession
from ._base import BuiltinStore, check_codec, check_run_id, checkpoint, to_thread
from ._journal import (
    DAMAGE,
    Begin,
    Write,
    Writers,
    damaged,
    encode_batch,
    open_journal_run,
    run_records,
    split_batch,
    times_blob,
)
from ._runlock import lock_run

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_APPLICATION_ID = 0x54466C77  # "TFlw", in the database header: marks a trioflow store
# 2: map items carry their times and a fingerprint of their item (journal records
# "k"/"l"). A store of version 1 is migrated on first use: its tables are the
# same, and its journal rows are still read (items without times or fingerprints).
_SCHEMA_VERSION = 2

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
_CANCEL_START = "UPDATE runs SET status = ?, updated = ? WHERE run_id = ? AND status = 'running'"
FINISH_RUN = "UPDATE runs SET status = ?, started_at = ?, finished_at = ?, updated = ? WHERE run_id = ?"


class SQLiteStore(BuiltinStore):
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
        self.path: str = os.fspath(path)
        self._realpath = os.path.realpath(self.path)  # what identifies the database file
        self._codec = check_codec(codec)
        self.threaded: bool = bool(threaded)
        self.fsync: bool = bool(fsync)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._writers = Writers(self, self.path)
        self._cache_ready = False  # the cache table exists (made on first use)

    def __repr__(self) -> str:
        return f"<trioflow.SQLiteStore {self.path!r}>"

    @property
    def _where(self) -> object:
        return self._realpath

    @property
    def codec(self) -> Codec:
        return self._codec

    # -- database access (always under self._lock; in a worker thread when threaded) --

    async def _call(self, fn: Callable[[], T]) -> T:
        if self.threaded:
            return await to_thread(self._locked, fn)
        await checkpoint()
        return self._locked(fn)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._closed:
                raise self._closed_error()
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

    def _check_path(self) -> None:
        """Raise :class:`StoreError` if the path cannot be a database file."""
        path = self.path
        if path == ":memory:":
            return
        if os.path.isdir(path):
            raise StoreError(
                f"SQLiteStore path {path!r} is a directory; give the path of a database file, "
                f"e.g. SQLiteStore({os.path.join(path, 'runs.db')!r})"
            )
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StoreError(
                f"SQLiteStore path {path!r} is in a folder that does not exist ({folder!r}); "
                f"create it first (os.makedirs({folder!r}, exist_ok=True)) or give another path"
            )

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        self._check_path()
        try:  # a new database (and so its WAL and SHM files) is readable by its owner only
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create the SQLite store {path!r}: {exc}") from exc
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            head = b""
        except OSError as exc:
            raise StoreError(f"cannot read the SQLite store {path!r}: {exc}") from exc
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
        if version == 1:  # migrate: mark it version 2 (older trioflows then refuse it clearly)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._identity(conn)[1] == 1:
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = self._identity(conn)[1]
        if version != _SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} is a trioflow store of schema version {version}, and this trioflow "
                f"reads versions 1 and {_SCHEMA_VERSION}; use a trioflow version that reads it"
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

    def _write(self, batch: Sequence[Write], begins: Sequence[Begin] = ()) -> None:
        """Commit ``batch``, the writes of one or more runs, in one transaction.

        The runs that ``begins`` start are registered first (a begin that is
        refused gets its error as its outcome, and changes nothing).
        """
        runs, finishes = split_batch(batch)

        def write(conn: sqlite3.Connection) -> None:
            for begin in begins:
                # each start on its own: one refused (or damaged) run changes nothing,
                # and the other runs' starts and records in this commit go on
                conn.execute("SAVEPOINT begin")
                try:
                    begin.outcome = self._begin_in(conn, begin.header)
                except StoreError as exc:  # refused, or its records are damaged
                    conn.execute("ROLLBACK TO begin")
                    begin.outcome = exc
                conn.execute("RELEASE begin")
            for run_id, records in runs.items():
                rows = encode_batch([r[1] for r in records])
                conn.execute(_JOURNAL, (run_id, self._codec.name, rows, times_blob(records)))
            for finish in finishes:
                if finish.begin is None:
                    conn.execute(FINISH_RUN, finish.params)
                else:  # cancelled while it was registered
                    status, _, _, updated, run_id = finish.params
                    conn.execute(_CANCEL_START, (status, updated, run_id))

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
        try:
            return run_records(run_id, row, lambda: conn.execute(
                "SELECT codec, records, times FROM journal WHERE run_id = ? ORDER BY id", (run_id,)
            ))
        except DAMAGE as exc:
            raise damaged(self.path, run_id, exc) from None

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

    def open_run(self, header: RunHeader) -> AbstractAsyncContextManager[RunSession]:
        """Start or resume a run (see :meth:`trioflow.abc.Store.open_run`).

        Entering registers the run and reads its records (in the store's
        writer thread, with the other runs' writes, unless ``threaded=False``);
        leaving waits, shielded from cancellation, until every record is
        committed. Both are checkpoints.

        Raises:
            StoreError: the run id was recorded with another flow, structure or
                inputs; the database is unusable; or records could not be written.
        """
        return open_journal_run(self, header, self._writers if self.threaded else None, self._lock_run)

    async def _lock_run(self, run_id: str) -> Callable[[], None]:
        await checkpoint()  # (the lock is a quick system call: no thread)
        if self._closed:
            raise self._closed_error()
        if self._conn is None:  # (once connected, the path is known to be good)
            self._check_path()
        if self.path == ":memory:":
            return _nothing
        return lock_run(self._realpath, run_id)

    def _begin_now(self, header: RunHeader) -> RunRecords:
        return self._locked(lambda: self._transaction(lambda conn: self._begin_in(conn, header)))

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
        check_run_id(run_id)
        records = await self._call(lambda: self._read(self._conn, run_id))  # type: ignore[arg-type]
        return run_result(records, self._codec, run_id)

    async def forget(self, run_id: str) -> bool:
        """Delete ``run_id`` and its records, so the id can start over. A checkpoint.

        Returns:
            Whether there was such a run.
        """
        check_run_id(run_id)

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

    def _closed_error(self) -> StoreError:
        return StoreError(
            f"{self!r} is closed; make a new trioflow.SQLiteStore({self.path!r}) to use the database again"
        )

    async def aclose(self) -> None:
        """Close the store without blocking the event loop: :meth:`close` in a worker thread.

        Waits for the store's writer threads to end and closes the database
        connection. A checkpoint. Using the store afterwards is a
        :exc:`StoreError`. Closing twice is fine.
        """
        if self.threaded:
            await to_thread(self.close)
        else:
            await checkpoint()
            self.close()

    async def __aenter__(self) -> SQLiteStore:
        """``async with SQLiteStore(path) as store:``; entering does nothing and does not block."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Leaving closes the store (:meth:`aclose`): it waits for the writer threads, in a worker thread."""
        await self.aclose()

    def close(self) -> None:
        """Close the database connection. Call it after the runs using the store have ended.

        Blocks while the writer threads end: in async code, use :meth:`aclose`
        (or ``async with``).

        (A run still going on fails to record, with a :exc:`StoreError`.)
        """
        self._writers.join()  # let stopped writers' threads end: they have nothing left to write
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _nothing() -> None:
    return None
