"""A store in a PostgreSQL database: :class:`PostgresStore`, recorded through the journal.

Same contract as :class:`~trioflow.SQLiteStore` (records queued and committed by
the shared journal writer thread, group commit, resume, ``runs()``, ``load()``,
``forget()``, cache entries, codecs, errors), through psycopg 3 driven from
worker threads, so it works under trio and asyncio alike. psycopg is imported
when a store is first used: ``pip install trioflow[postgres]``.

Across processes and machines a run id runs once at a time: a run holds a
session-level advisory lock (``pg_try_advisory_lock``) on a connection of its
own. The server releases it when that connection ends, also when the process
dies; TCP keepalives on the connection (on both sides) bound how long a machine
that vanished keeps its locks: about a minute.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from .._codec import Codec
from .._exceptions import StoreError
from .._records import RunHeader, RunInfo, RunRecords, check_header, run_result
from .._results import RunResult
from ..abc import RunSession
from ._base import BuiltinStore, check_codec, check_run_id, to_thread
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

__all__ = ["PostgresStore"]

T = TypeVar("T")

_SCHEMA_VERSION = "2"  # the journal format (see _journal): the same as SQLiteStore's

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS trioflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS trioflow_runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        steps TEXT NOT NULL,
        inputs BYTEA NOT NULL,
        inputs_digest TEXT NOT NULL,
        codec TEXT NOT NULL,
        status TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        seq BIGSERIAL
    )""",
    """CREATE TABLE IF NOT EXISTS trioflow_journal (
        id BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL,
        codec TEXT NOT NULL,
        records TEXT NOT NULL,
        times BYTEA NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS trioflow_journal_run ON trioflow_journal (run_id, id)""",
    """CREATE TABLE IF NOT EXISTS trioflow_cache (
        key BYTEA PRIMARY KEY,
        step TEXT NOT NULL,
        value BYTEA NOT NULL,
        codec TEXT NOT NULL,
        stored_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS trioflow_cache_step ON trioflow_cache (step, stored_at)""",
]

_JOURNAL = "INSERT INTO trioflow_journal (run_id, codec, records, times) VALUES (%s, %s, %s, %s)"
_FINISH_RUN = (
    "UPDATE trioflow_runs SET status = %s, started_at = %s, finished_at = %s, updated = %s WHERE run_id = %s"
)
_CANCEL_START = "UPDATE trioflow_runs SET status = %s, updated = %s WHERE run_id = %s AND status = 'running'"

# TCP keepalives on the lock's connection: a peer that vanished is noticed after
# about IDLE + INTERVAL * COUNT seconds (a minute), by the client and by the server
# (which then ends the session and so releases its advisory locks)
_KEEPALIVE_IDLE = 30
_KEEPALIVE_INTERVAL = 10
_KEEPALIVE_COUNT = 3
_LOCK_CLASS = 0x54466C77  # "TFlw": the first half of each run lock's key
_IDLE_LOCK_CONNECTIONS = 8  # lock connections kept for the next runs


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "trioflow.PostgresStore needs psycopg 3: pip install 'trioflow[postgres]'"
        ) from None
    return psycopg


def _text(identity: str) -> str:
    """A cache entry's step identity as PostgreSQL text, which cannot hold NUL (the identity's separator)."""
    return identity.replace("\0", "\x1f")


def _lock_key(run_id: str) -> int:
    """The advisory lock's second key (a signed 32-bit int) for a run id."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big", signed=True)


class PostgresStore(BuiltinStore):
    """Records runs in a PostgreSQL database, for many workers on many machines.

    The same contract as :class:`~trioflow.SQLiteStore`: every step is recorded
    the moment it finishes (queued, then committed by one writer thread per
    store, several runs per transaction), a run resumes by its id, and
    ``flow.run`` returns only once every record of the run is committed. The
    tables (``trioflow_runs``, ``trioflow_journal``, ``trioflow_cache``,
    ``trioflow_meta``) are created on first use. Needs psycopg 3
    (``pip install 'trioflow[postgres]'``); all database work runs in worker
    threads, so the store works under trio and asyncio.

    A run id runs in one process at a time, across machines: a run holds a
    session-level advisory lock on a connection of its own, which the server
    releases when the connection ends (also when the process dies). With TCP
    keepalives on that connection, a machine that vanished keeps its locks for
    about a minute.

    Args:
        dsn: a libpq connection string or URI, e.g.
            ``"postgresql://user@db.example.org/flows"``.
        codec: how values are encoded (default :class:`~trioflow.JSONCodec`).
        fsync: with ``True`` (default), only the commit that ends a run waits
            for the server to flush it to disk; commits during a run use
            ``synchronous_commit = off`` (they survive a crash of the client at
            once, and a crash of the server unless it is within a moment of
            them). ``False`` never waits for the flush.

    Raises:
        StoreError: (on first use) the server cannot be reached, psycopg is not
            installed, or the database holds trioflow tables of a newer format.
    """

    def __init__(self, dsn: str, *, codec: Codec | None = None, fsync: bool = True) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise TypeError(
                f"PostgresStore(dsn) takes a libpq connection string such as "
                f"'postgresql://user@host/dbname' (got {dsn!r})"
            )
        self.dsn: str = dsn
        self._codec = check_codec(codec)
        self.fsync: bool = bool(fsync)
        self.threaded: bool = True  # (always: psycopg is driven from worker threads)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._writers = Writers(self, self._shown())
        self._idle: list[Any] = []  # lock connections of ended runs, for the next runs (under _lock)

    def _shown(self) -> str:
        """The dsn without its password, for messages."""
        try:
            info = _psycopg().conninfo.conninfo_to_dict(self.dsn)
        except Exception:
            return "<dsn>"
        info.pop("password", None)
        return " ".join(f"{k}={v}" for k, v in sorted(info.items()))

    def __repr__(self) -> str:
        return f"<trioflow.PostgresStore {self._shown()!r}>"

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def _where(self) -> object:
        return ("postgres", self._shown())

    # -- database access (under self._lock, in worker threads) ------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        return await to_thread(self._locked, fn)

    def _locked(self, fn: Callable[[], T]) -> T:
        psycopg = _psycopg()
        with self._lock:
            if self._closed:
                raise self._closed_error()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                return fn()
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._conn = None  # reconnect next time
                raise StoreError(f"{self!r} failed: {type(exc).__name__}: {exc}") from exc

    def _connect(self, **options: Any) -> Any:
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, **options)
        except psycopg.Error as exc:
            raise StoreError(f"{self!r} cannot connect to the server: {exc}") from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_CLASS,))  # one creator at a time
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM trioflow_meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO trioflow_meta VALUES ('schema', %s)", (_SCHEMA_VERSION,))
            elif row[0] != _SCHEMA_VERSION:
                raise StoreError(
                    f"{self!r} holds trioflow tables of schema version {row[0]}, and this trioflow "
                    f"reads version {_SCHEMA_VERSION}; use a trioflow version that reads it"
                )

    def _transaction(self, fn: Callable[[Any], T], *, synchronous: bool = True) -> T:
        conn = self._conn
        with conn.transaction():
            if not synchronous:
                conn.execute("SET LOCAL synchronous_commit = off")
            return fn(conn)

    def _closed_error(self) -> StoreError:
        return StoreError(f"{self!r} is closed; make a new trioflow.PostgresStore(dsn) to use the database again")

    # -- the journal (see _journal.JournalStore) -------------------------------------------

    def _write(self, batch: Sequence[Write], begins: Sequence[Begin] = ()) -> None:
        """Commit ``batch``, the writes of one or more runs, in one transaction (runs that start first)."""
        runs, finishes = split_batch(batch)

        def write(conn: Any) -> None:
            for begin in begins:
                try:  # each start on its own (a savepoint): a refused one changes nothing
                    with conn.transaction():
                        begin.outcome = self._begin_in(conn, begin.header)
                except StoreError as exc:
                    begin.outcome = exc
                except DAMAGE as exc:
                    begin.outcome = damaged(self, begin.header.run_id, exc)
            with conn.cursor() as cursor:
                for run_id, records in runs.items():
                    rows = encode_batch([r[1] for r in records])
                    cursor.execute(_JOURNAL, (run_id, self._codec.name, rows, times_blob(records)))
                for finish in finishes:
                    if finish.begin is None:
                        cursor.execute(_FINISH_RUN, finish.params)
                    else:  # cancelled while it was registered
                        status, _, _, updated, run_id = finish.params
                        cursor.execute(_CANCEL_START, (status, updated, run_id))

        # the run's end waits for the flush to disk (fsync=True); so does a start, which
        # other processes must see before the run goes on
        synchronous = (bool(finishes) and self.fsync) or bool(begins)
        self._locked(lambda: self._transaction(write, synchronous=synchronous))

    def _begin_now(self, header: RunHeader) -> RunRecords:
        return self._locked(lambda: self._transaction(lambda conn: self._begin_in(conn, header)))

    def _read(self, conn: Any, run_id: str) -> RunRecords:
        row = conn.execute(
            "SELECT flow, fingerprint, steps, inputs, inputs_digest, codec, status, created, "
            "updated, started_at, finished_at FROM trioflow_runs WHERE run_id = %s",
            (run_id,),
        ).fetchone()
        if row is None:
            return RunRecords()
        try:
            return run_records(run_id, row, lambda: (
                (c, text, bytes(blob)) for c, text, blob in conn.execute(
                    "SELECT codec, records, times FROM trioflow_journal WHERE run_id = %s ORDER BY id", (run_id,)
                ).fetchall()
            ))
        except DAMAGE as exc:
            raise damaged(self, run_id, exc) from None

    def _begin_in(self, conn: Any, header: RunHeader) -> RunRecords:
        records = self._read(conn, header.run_id)
        now = time.time()
        if records.header is None:
            conn.execute(
                "INSERT INTO trioflow_runs (run_id, flow, fingerprint, steps, inputs, inputs_digest, codec, "
                "status, created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, 'running', %s, %s)",
                (
                    header.run_id, header.flow, header.fingerprint, json.dumps(list(header.steps)),
                    header.inputs, header.inputs_digest, header.codec, now, now,
                ),
            )
            return RunRecords()
        check_header(records.header, header)
        conn.execute(
            "UPDATE trioflow_runs SET status = 'running', updated = %s WHERE run_id = %s", (now, header.run_id)
        )
        return records

    # -- runs --------------------------------------------------------------------------

    def open_run(self, header: RunHeader) -> AbstractAsyncContextManager[RunSession]:
        """Start or resume a run (see :meth:`trioflow.abc.Store.open_run`).

        Entering takes the run's advisory lock (on a connection of its own),
        then registers the run and reads its records in the store's writer
        thread; leaving waits, shielded from cancellation (about a second at
        most when the run was cancelled), until every record is committed,
        then releases the lock. Both are checkpoints.

        Raises:
            StoreError: the run id is running in another process, or was
                recorded with another flow, structure or inputs; the database is
                unusable; or records could not be written.
        """
        return open_journal_run(self, header, self._writers, self._lock_run)

    async def _lock_run(self, run_id: str) -> Callable[[], None]:
        if self._closed:
            raise self._closed_error()
        return await to_thread(self._lock_run_now, run_id)

    def _lock_connection(self) -> Any:
        """A connection for a run's lock: an idle one of an ended run, or a new one."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, keepalives=1, keepalives_idle=_KEEPALIVE_IDLE,
                keepalives_interval=_KEEPALIVE_INTERVAL, keepalives_count=_KEEPALIVE_COUNT,
            )
            # the server's side of the keepalives: it notices a client machine that vanished
            # (and so ends the session and releases the lock) after about a minute
            conn.execute(f"SET tcp_keepalives_idle = {_KEEPALIVE_IDLE}")
            conn.execute(f"SET tcp_keepalives_interval = {_KEEPALIVE_INTERVAL}")
            conn.execute(f"SET tcp_keepalives_count = {_KEEPALIVE_COUNT}")
        except psycopg.Error as exc:
            raise StoreError(f"{self!r} cannot connect to the server: {exc}") from exc
        return conn

    def _lock_run_now(self, run_id: str) -> Callable[[], None]:
        psycopg = _psycopg()
        conn = self._lock_connection()
        try:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, _lock_key(run_id))
            ).fetchone()[0]
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"{self!r} cannot lock run {run_id!r}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise StoreError(
                f"run {run_id!r} is already running in another process (recording to {self!r}); "
                f"wait for it to end before resuming it, or give this run another run_id"
            )

        def release() -> None:
            try:  # at once (closing alone frees it only once the server's session has ended)
                unlocked = conn.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, _lock_key(run_id))
                ).fetchone()[0]
            except psycopg.Error:
                unlocked = False  # the connection is gone: so is the lock
            with self._lock:
                if unlocked and not self._closed and len(self._idle) < _IDLE_LOCK_CONNECTIONS:
                    self._idle.append(conn)  # for the next run
                    return
            conn.close()

        return release

    async def runs(self) -> list[RunInfo]:
        """Every recorded run, oldest first. A checkpoint."""

        def runs() -> list[RunInfo]:
            return [
                RunInfo(*row)
                for row in self._conn.execute(
                    "SELECT run_id, flow, fingerprint, status, created, updated, started_at, "
                    "finished_at FROM trioflow_runs ORDER BY created, seq"
                ).fetchall()
            ]

        return await self._call(runs)

    async def load(self, run_id: str) -> RunResult:
        """The recorded :class:`~trioflow.RunResult` of ``run_id``. A checkpoint.

        Raises:
            StoreError: no such run, or a value cannot be decoded.
        """
        check_run_id(run_id)
        records = await self._call(lambda: self._read(self._conn, run_id))
        return run_result(records, self._codec, run_id)

    async def forget(self, run_id: str) -> bool:
        """Delete ``run_id`` and its records, so the id can start over. A checkpoint.

        Returns:
            Whether there was such a run.
        """
        check_run_id(run_id)

        def forget(conn: Any) -> bool:
            conn.execute("DELETE FROM trioflow_journal WHERE run_id = %s", (run_id,))
            return bool(conn.execute("DELETE FROM trioflow_runs WHERE run_id = %s", (run_id,)).rowcount > 0)

        return await self._call(lambda: self._transaction(forget))

    # -- cache entries (for trioflow.Cache) --------------------------------------------

    async def _cache_get(self, key: bytes) -> tuple[bytes, str, float] | None:
        """The entry stored under ``key``: (value, codec name, stored_at), or None."""

        def get() -> tuple[bytes, str, float] | None:
            row = self._conn.execute(
                "SELECT value, codec, stored_at FROM trioflow_cache WHERE key = %s", (key,)
            ).fetchone()
            return None if row is None else (bytes(row[0]), row[1], row[2])

        return await self._call(get)

    async def _cache_put(
        self, key: bytes, step: str, value: bytes, stored_at: float, expired_before: float | None
    ) -> None:
        """Store an entry; also delete the step's entries stored at ``expired_before`` or earlier."""

        def put(conn: Any) -> None:
            if expired_before is not None:
                conn.execute(
                    "DELETE FROM trioflow_cache WHERE step = %s AND stored_at <= %s", (_text(step), expired_before)
                )
            conn.execute(
                "INSERT INTO trioflow_cache VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "step = EXCLUDED.step, value = EXCLUDED.value, codec = EXCLUDED.codec, "
                "stored_at = EXCLUDED.stored_at",
                (key, _text(step), value, self._codec.name, stored_at),
            )

        await self._call(lambda: self._transaction(put))

    async def _cache_delete(self, steps: Sequence[str]) -> int:
        """Delete the entries of ``steps``; return how many there were."""

        def delete(conn: Any) -> int:
            return sum(
                conn.execute("DELETE FROM trioflow_cache WHERE step = %s", (_text(step),)).rowcount for step in steps
            )

        return await self._call(lambda: self._transaction(delete))

    # -- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the store without blocking the event loop: :meth:`close` in a worker thread.

        A checkpoint. Using the store afterwards is a :exc:`StoreError`.
        Closing twice is fine.
        """
        await to_thread(self.close)

    async def __aenter__(self) -> PostgresStore:
        """``async with PostgresStore(dsn) as store:``; entering does nothing and does not block."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Leaving closes the store (:meth:`aclose`)."""
        await self.aclose()

    def close(self) -> None:
        """Close the database connection. Call it after the runs using the store have ended.

        Blocks while the writer threads end: in async code, use :meth:`aclose`
        (or ``async with``).
        """
        self._writers.join()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
