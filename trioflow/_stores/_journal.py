"""The journal: how the built-in database stores record runs, and the writer thread they share.

A session (:class:`JournalSession`) turns what the scheduler reports into
journal records the moment a step or a map item finishes, and only queues
them; one writer thread per store (:class:`Writer`) commits what every open
session of the store has queued in one transaction every few milliseconds
(group commit). Leaving a session waits until every record of its run is
committed. The event loop never waits for the database while steps run.

A store that records through the journal implements :class:`JournalStore`:
one method that commits a batch of writes (and registers the runs that start)
in one transaction, and one that is told when a session has closed. The
records' format (below) is the same in every such store.
"""

from __future__ import annotations

import base64
import json
import math
import queue
import sys
import threading
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .._codec import Codec
from .._exceptions import StoreError
from .._records import ItemRecord, RunHeader, RunInfo, RunRecords, StepRecord, type_name
from .._results import StepStatus
from .._scheduler import Recorder, current_backend
from ._base import ItemRecorder, _Signal, is_cancellation, shielded

__all__ = [
    "Begin", "Finish", "JournalSession", "JournalStore", "Record", "Write", "Writer", "Writers", "encode_batch",
    "DAMAGE", "damaged", "open_journal_run", "own_error", "replay", "times_blob",
]

encode_batch = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# A queued write: a record, as (run id, its fields as a JSON-ready list,
# started_at, finished_at) with NaN for a missing time, or a Finish. The records
# of one run in one commit are one journal row: the records as one JSON array,
# their times as float64 pairs, little-endian (exact, and much cheaper to write
# than JSON's shortest float text), and the store's codec. One INSERT per run and
# commit keeps the writer thread's share of the GIL small. The records, values as
# text (see _text):
#
#   ["s", step, value, attempts] + [usage]?     succeeded, value by the row's codec
#   ["x", step, status, value, codec, error type, error message, attempts, usage]
#   ["k", step, index, value, attempts, fingerprint]          a map item, value by the row's codec
#   ["l", step, index, value, codec, attempts, fingerprint]
#
# The short forms are what flows write; the long ones carry their own codec. A map
# item's times are those of the attempt that succeeded; its fingerprint
# identifies the item it was given. Journals of format 1 have map items without
# times or fingerprints, which are still read:
#
#   ["i", step, index, value, attempts]
#   ["j", step, index, value, codec, attempts]
Record = tuple[str, list[Any], float, float]
_NAN = math.nan
_BIG_ENDIAN = sys.byteorder == "big"


class Finish:
    """A queued write: the run's end, as ``params`` (status, started_at, finished_at, updated, run_id).

    With ``begin``, the run was cancelled while it was being registered: its
    status becomes ``params[0]`` if that registration succeeded and it is
    still marked running, and its times are left as they are.
    """

    __slots__ = ("begin", "params", "run_id")

    def __init__(self, params: tuple[str, float | None, float | None, float, str], begin: Begin | None = None) -> None:
        self.params = params
        self.run_id = params[-1]
        self.begin = begin


def split_batch(batch: Sequence[Write]) -> tuple[dict[str, list[Record]], list[Finish]]:
    """The records of each run in ``batch`` (in order), and the ends of runs to write.

    An end for a run whose registration was refused is left out.
    """
    runs: dict[str, list[Record]] = {}  # run id -> its records, in order
    finishes: list[Finish] = []
    last = None
    records: list[Record] = []
    for w in batch:
        if type(w) is Finish:
            if w.begin is None or isinstance(w.begin.outcome, RunRecords):
                finishes.append(w)
            continue
        if w[0] != last:  # type: ignore[index]
            last = w[0]  # type: ignore[index]
            records = runs.setdefault(last, [])
        records.append(w)  # type: ignore[arg-type]
    return runs, finishes


Write = Record | Finish


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
) -> Record:
    """A step record in the long ``"x"`` form, queued as a write."""
    return (
        run_id,
        ["x", name, status, value, codec, error_type, error_message, attempts, dict(usage) if usage else None],
        _NAN if started_at is None else started_at,
        _NAN if finished_at is None else finished_at,
    )


def times_blob(records: Sequence[Record]) -> bytes:
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
    """Put on a writer's queue by a closing session: set once what came before is committed.

    ``after`` is then called in the writer's thread (it releases the run's lock),
    also when the session has stopped waiting.
    """

    __slots__ = ("after", "done", "error", "run_id")

    def __init__(self, run_id: str, after: Callable[[], object] | None) -> None:
        self.run_id = run_id
        self.after = after
        self.done = _Signal()
        self.error: BaseException | None = None  # what lost some of the run's records


def own_error(error: BaseException, what: str) -> StoreError:
    """A new :class:`StoreError` for one run, caused by ``error`` (which other runs may share).

    Raising one exception object in several tasks would tangle its traceback.
    """
    own = StoreError(str(error) if isinstance(error, StoreError) else f"{what}: {error}")
    own.__cause__ = error
    return own


class Begin:
    """Put on a writer's queue by a run that starts: set once the run is registered.

    ``outcome`` is then the run's earlier records, or the error that refused it.
    """

    __slots__ = ("done", "header", "outcome")

    def __init__(self, header: RunHeader) -> None:
        self.header = header
        self.done = _Signal()
        self.outcome: RunRecords | BaseException | None = None


class Writer:
    """A worker thread that does the database work of a store's runs.

    Records gather for a moment, then whatever every session queued is committed
    in one transaction (group commit): the runs that start (see :class:`Begin`),
    a journal row per run, and one sync to disk for all the runs that ended in
    it. The thread lives while sessions are open; when the last one closes it
    stops, and a later session starts a new writer (with a queue of its own),
    which commits nothing before the writers stopped earlier have committed
    what they still had queued (``after``): a run cancelled while it was being
    registered leaves its start queued there, and a later run of the same id
    must not be overwritten by it.
    """

    def __init__(self, store: JournalStore, name: str, after: Sequence[Writer] = ()) -> None:
        self._store = store
        self._after = list(after)  # stopped writers that may still be committing
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put: Callable[[Any], None] = self._queue.put
        self.sessions = 0  # open sessions using this writer (under the store's _writer_lock)
        self._wake = threading.Event()  # a run starts or ends: ends the gathering pause
        self._failed: dict[str, BaseException] = {}  # run id -> the error that lost its records
        # run id -> what stops the run when its records are lost (called from this thread)
        self.stoppers: dict[str, Callable[[], object]] = {}
        self._thread = threading.Thread(
            target=self._loop, name=f"trioflow-store-writer[{name}]", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        for earlier in self._after:  # (their commits first, in the order they were queued)
            earlier.join()
        self._after.clear()
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
            begins: list[Begin] = []
            flushes: list[_Flush] = []
            while True:
                if item is _STOP:  # nothing is queued after it
                    stopping = True
                    break
                if type(item) is _Flush:
                    flushes.append(item)
                elif type(item) is Begin:
                    begins.append(item)
                elif (item[0] if type(item) is tuple else item.run_id) not in failed:
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
                        run_id = w[0] if type(w) is tuple else w.run_id
                        if run_id not in failed:
                            failed[run_id] = exc
                            stop = self.stoppers.get(run_id)
                            if stop is not None:  # the run cannot be recorded: stop it now
                                stop()
                    for begin in begins:
                        begin.outcome = exc
            for begin in begins:
                begin.done.set()
            for flush in flushes:
                flush.error = failed.pop(flush.run_id, None)
                self.stoppers.pop(flush.run_id, None)
                if flush.after is not None:  # (before the waiter goes on: the run's lock is free then)
                    try:
                        flush.after()
                    except Exception as exc:
                        flush.error = flush.error or exc
                flush.done.set()

    async def begin(self, header: RunHeader) -> RunRecords:
        """Register a run that starts (or resumes); its earlier records.

        Raises:
            StoreError: the run id was recorded with another flow, structure or
                inputs, or the database is unusable.
        """
        begin = Begin(header)
        self._queue.put(begin)
        self._wake.set()
        try:
            await begin.done.wait()
        except BaseException:
            # cancelled while the run is registered: once it is, mark it cancelled
            self._queue.put(Finish(("cancelled", None, None, time.time(), header.run_id), begin))
            raise
        outcome = begin.outcome
        if isinstance(outcome, BaseException):  # (maybe shared by several runs' begins)
            raise own_error(outcome, f"{self._store!r} could not start run {header.run_id!r}")
        assert outcome is not None
        return outcome

    async def flush(
        self, run_id: str, after: Callable[[], object] | None = None, patience: float | None = None
    ) -> BaseException | None:
        """Wait until every write queued for ``run_id`` is committed; the error that lost any.

        ``after`` is called (in the writer's thread) once they are. Waits at most
        ``patience`` seconds, if given: then the writes go on without a waiter,
        and the result is a :class:`StoreError` saying so.
        """
        flush = _Flush(run_id, after)
        self._queue.put(flush)
        self._wake.set()
        if patience is None:
            await flush.done.wait()
        else:
            be = current_backend()
            with be.cancel_scope(deadline=be.current_time() + patience, shield=True):
                await flush.done.wait()
            if not flush.done.is_set():
                return StoreError(
                    f"run {run_id!r}: the store did not commit the run's last records within "
                    f"{patience:g}s of its cancellation; they are committed later, or their steps run again on resume"
                )
        return flush.error

    def wake(self) -> None:
        """End the gathering pause: something waits."""
        self._wake.set()

    def stop(self) -> None:
        """End the thread once it has committed everything queued."""
        self._queue.put(_STOP)
        self._wake.set()

    def join(self) -> None:
        self._thread.join()

    def running(self) -> bool:
        return self._thread.is_alive()


class JournalSession:
    """A run's session on a journal store: the scheduler's hooks queue journal records.

    With a writer, records go to its queue; without one (``threaded=False``),
    each is committed at once on the calling thread.
    """

    def __init__(
        self, store: JournalStore, run_id: str, previous: RunRecords, writer: Writer | None, writers: Writers
    ) -> None:
        self._store = store
        self._writers = writers
        self._run_id = run_id
        self.previous = previous
        self._writer = writer
        self._put: Callable[[Write], None] = self._write_now if self._writer is None else self._writer.put
        self.error: BaseException | None = None
        self._stop: Callable[[], object] | None = None

    def _write_now(self, write: Write) -> None:
        """Commit one write at once, on this thread (``threaded=False``)."""
        if self.error is None:
            try:
                self._store._write([write])
            except BaseException as exc:  # the scheduler must not see it: raised at close
                self.error = exc
                if self._stop is not None:
                    self._stop()

    def record_step(self, r: StepRecord) -> None:
        value = None if r.value is None or r.codec is None else _text(r.value, r.codec)
        self._put(
            _long_record(
                self._run_id, r.name, r.status, value, r.codec, r.error_type, r.error_message,
                r.attempts, r.started_at, r.finished_at, r.usage,
            )
        )

    def record_item(self, r: ItemRecord) -> None:
        self._put((
            self._run_id, ["l", r.step, r.index, _text(r.value, r.codec), r.codec, r.attempts, r.fingerprint],
            _NAN if r.started_at is None else r.started_at, _NAN if r.finished_at is None else r.finished_at,
        ))

    def hooks(
        self, codec: Codec, errors: list[BaseException], stop: Callable[[], object]
    ) -> tuple[Recorder, ItemRecorder]:
        """The scheduler's recorder hooks, queueing journal rows with no record objects between.

        A failure to record goes to ``errors`` (the scheduler never sees it);
        when records are lost, ``stop()`` is called (from any thread).
        """
        assert codec is self._store.codec  # the short records are in the journal row's codec
        self._stop = stop
        if self._writer is not None:
            self._writer.stoppers[self._run_id] = stop
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
                stop()

        def record_item(
            step: str, index: int, value: Any, data: bytes, attempts: int, started: float, finished: float,
            fingerprint: str | None,
        ) -> None:
            try:
                put((run_id, ["k", step, index, text(data), attempts, fingerprint], started, finished))
            except Exception as exc:
                errors.append(exc)
                stop()

        return record_step, record_item

    def finish(self, status: str, started_at: float, finished_at: float) -> None:
        self._put(Finish((status, started_at, finished_at, time.time(), self._run_id)))

    async def close(self, release: Callable[[], object], patience: float | None = None) -> None:
        """Wait until every record is committed (keeping the error that lost any), then ``release()``.

        Waits at most ``patience`` seconds if given; ``release`` is then called
        when the writes are done, in the writer's thread.
        """
        writer = self._writer
        if writer is None:
            release()
            return
        try:
            self.error = await writer.flush(self._run_id, release, patience)
        finally:
            self._writers.detach(writer)


class Writers:
    """A store's writer thread: started by the first open session, stopped after the last."""

    def __init__(self, store: JournalStore, name: str) -> None:
        self._store = store
        self._name = name
        self._lock = threading.Lock()
        self._writer: Writer | None = None  # while sessions are open
        self._stopped: list[Writer] = []  # writers stopped, maybe still ending

    def attach(self) -> Writer:
        """The writer for a new session (started if none is running)."""
        with self._lock:
            if self._writer is None:
                self._stopped = [w for w in self._stopped if w.running()]
                self._writer = Writer(self._store, self._name, self._stopped)
            self._writer.sessions += 1
            return self._writer

    def detach(self, writer: Writer) -> None:
        """A session has closed: the last one stops the writer."""
        with self._lock:
            writer.sessions -= 1
            if writer.sessions == 0 and self._writer is writer:
                self._writer = None
                self._stopped = [w for w in self._stopped if w.running()]
                self._stopped.append(writer)
                writer.stop()

    def join(self) -> None:
        """Wait for every stopped writer's thread to end (they have nothing left to write)."""
        with self._lock:
            stopped, self._stopped = self._stopped, []
        for writer in stopped:
            writer.join()


# seconds a cancelled run waits for its last records to be committed (a locked
# database may keep them waiting for the 30 s busy timeout)
CANCEL_PATIENCE = 1.0


@asynccontextmanager
async def open_journal_run(
    store: JournalStore,
    header: RunHeader,
    writers: Writers | None,
    lock: Callable[[str], Awaitable[Callable[[], object]]],
) -> AsyncIterator[JournalSession]:
    """A journal store's ``open_run``: register the run, record, and commit everything at the end.

    ``await lock(run_id)`` takes the run's lock across processes (raising
    :class:`StoreError` if another process holds it) and returns what releases
    it: after the run's last records are committed. Entering registers the run
    and reads its records (in the store's writer thread with the other runs'
    writes, or inline when ``writers`` is None); leaving waits, shielded from
    cancellation, until every record is committed: when the run was cancelled,
    for about a second at most. Both are checkpoints.
    """
    release = await lock(header.run_id)
    if writers is not None:
        writer = writers.attach()
        try:
            previous = await writer.begin(header)
        except BaseException:
            try:  # the lock is released once the writer is done with the run's start
                writer.put(_Flush(header.run_id, release))
                writer.wake()
            finally:
                writers.detach(writer)
            raise
        session = JournalSession(store, header.run_id, previous, writer, writers)
    else:
        try:
            previous = store._begin_now(header)
        except BaseException:
            release()
            raise
        session = JournalSession(store, header.run_id, previous, None, Writers(store, ""))
    try:
        yield session
    except BaseException as exc:
        with shielded():
            await session.close(release, CANCEL_PATIENCE if is_cancellation(exc) else None)
        if session.error is not None:
            exc.add_note(f"trioflow: the store also failed to record run {header.run_id!r}: {session.error}")
        raise
    with shielded():
        await session.close(release)
    if session.error is not None:  # (maybe shared by several runs)
        raise own_error(session.error, f"{store!r} could not record run {header.run_id!r}")


class JournalStore(Protocol):
    """A store that records through the journal (SQLite, PostgreSQL)."""

    def _write(self, batch: Sequence[Write], begins: Sequence[Begin] = ()) -> None:
        """Commit ``batch`` (the writes of one or more runs) in one transaction.

        The runs that ``begins`` start are registered first, each getting its
        earlier records, or the :class:`StoreError` that refused it, as its
        ``outcome``. Called from the writer thread (or inline, unthreaded).
        """
        ...

    def _begin_now(self, header: RunHeader) -> RunRecords:
        """Register a run that starts, in a transaction of its own on this thread; its earlier records.

        Raises:
            StoreError: the run id was recorded with another flow, structure or
                inputs, or its records are damaged.
        """
        ...

    @property
    def codec(self) -> Codec:
        ...


# what reading a damaged journal row or run row raises
DAMAGE = (ValueError, TypeError, IndexError, KeyError, AttributeError)


def damaged(where: object, run_id: str, exc: BaseException) -> StoreError:
    """The error for a run whose records are damaged (``where``: the database, as shown)."""
    return StoreError(
        f"{where!r}: the records of run {run_id!r} are damaged ({exc!r}); "
        f"start the run over with `await store.forget({run_id!r})`"
    )


def run_records(
    run_id: str, row: Sequence[Any], journal: Callable[[], Iterable[tuple[str, str, bytes]]]
) -> RunRecords:
    """A run's records, from its row of the runs table and its journal rows (``journal()`` reads them).

    ``row`` holds flow, fingerprint, steps, inputs, inputs digest, codec, status,
    created, updated, started_at and finished_at, as every built-in store keeps them.

    Raises:
        ValueError, TypeError, IndexError, KeyError, AttributeError: the row or a
            journal row is damaged (see :data:`DAMAGE`).
    """
    flow, fingerprint, steps, inputs, digest, codec, status, created, updated, started, finished = row
    names = json.loads(steps)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"the run's steps are {names!r}, not a list of names")
    header = RunHeader(run_id, flow, fingerprint, bytes(inputs), digest, codec, tuple(names))
    info = RunInfo(run_id, flow, fingerprint, status, created, updated, started, finished)
    step_records, items = replay(journal())
    return RunRecords(header=header, info=info, steps=step_records, items=items)


def replay(rows: Iterable[tuple[str, str, bytes]]) -> tuple[dict[str, StepRecord], dict[str, dict[int, ItemRecord]]]:
    """The step and item records in a run's journal rows (codec, records, times), in order.

    Raises:
        ValueError, TypeError, IndexError, KeyError: a row is damaged.
    """
    step_records: dict[str, StepRecord] = {}
    items: dict[str, dict[int, ItemRecord]] = {}
    for row_codec, text, blob in rows:
        batch = json.loads(text)
        if not isinstance(batch, list):
            raise ValueError(f"a journal row holds {type(batch).__name__}, not a list of records")
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
            elif kind == "k":
                items.setdefault(r[1], {})[r[2]] = ItemRecord(
                    r[1], r[2], _bytes(r[3], row_codec), row_codec, r[4], times[2 * k], times[2 * k + 1], r[5]
                )
            elif kind == "l":
                items.setdefault(r[1], {})[r[2]] = ItemRecord(
                    r[1], r[2], _bytes(r[3], r[4]), r[4], r[5], times[2 * k], times[2 * k + 1], r[6]
                )
            elif kind == "i":
                items.setdefault(r[1], {})[r[2]] = ItemRecord(
                    r[1], r[2], _bytes(r[3], row_codec), row_codec, r[4]
                )
            elif kind == "j":
                items.setdefault(r[1], {})[r[2]] = ItemRecord(r[1], r[2], _bytes(r[3], r[4]), r[4], r[5])
            else:
                raise ValueError(f"unknown record kind {kind!r}")
    return step_records, items
