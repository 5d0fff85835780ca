"""Durable runs under faults and bad input (issue 9 items 10 to 15 and the store parts of 19).

These use stores with worker threads and real clocks (a worker thread's work is
invisible to trio's MockClock), on trio and on asyncio. Bounds such as
``fail_after(10)`` only stop a test that hangs; nothing asserts a duration.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import trio

import trioflow
from trioflow import StepStatus, StoreError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import store_holder

pytestmark = pytest.mark.anyio

HOLDER = Path(__file__).resolve().parent / "store_holder.py"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """trio and asyncio with their real clocks (the stores here use worker threads)."""
    return request.param


# -- item 10: a store that can no longer record stops the run ------------------------------


class FullDisk(trioflow.SQLiteStore):
    """Starts of runs commit; every commit of records fails, as with a full disk."""

    def _write(self, batch: Any, begins: Any = ()) -> None:
        if batch:
            raise StoreError("database or disk is full")
        super()._write(batch, begins)


@pytest.mark.parametrize("threaded", [True, False])
async def test_issue9_item10_a_store_that_cannot_record_stops_the_run_and_keeps_every_output(
    tmp_path: Path, threaded: bool
) -> None:
    calls: list[str] = []
    gate = anyio.Event()
    flow = trioflow.Flow("full")

    @flow.step
    async def first() -> int:
        calls.append("first")
        return 1

    @flow.step
    async def slow(first: int) -> int:
        calls.append("slow")
        await gate.wait()  # (never set during the failing run)
        return first + 1

    @flow.step
    async def last(slow: int) -> int:
        calls.append("last")
        return slow * 10

    store = FullDisk(tmp_path / "runs.db", threaded=threaded)
    with anyio.fail_after(20), pytest.raises(StoreError, match=r"^database or disk is full$") as info:
        await flow.run(store=store, run_id="full")
    result = info.value.result
    assert result is not None  # every output computed, though not recorded
    assert result["first"] == 1
    assert result.steps["slow"].status is StepStatus.CANCELLED
    assert result.steps["last"].status is StepStatus.CANCELLED
    assert calls == ["first", "slow"]
    store.close()
    # what was committed before (the run's start) is intact, and the run resumes
    healthy = trioflow.SQLiteStore(tmp_path / "runs.db")
    # (the run's end could not be written either)
    assert [info.status for info in await healthy.runs()] == ["running"]
    gate.set()
    calls.clear()
    assert (await flow.run(store=healthy, run_id="full"))["last"] == 20
    assert calls == ["first", "slow", "last"]
    healthy.close()


# -- item 11: a damaged run never costs another run its records -------------------------------


class Gated(trioflow.SQLiteStore):
    """Its first commit of records waits (in the writer thread) until four more writes are queued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blocked = threading.Event()
        self.held = False

    def _write(self, batch: Any, begins: Any = ()) -> None:
        if batch and not self.held:
            self.held = True
            self.blocked.set()
            writer = self._writers._writer
            assert writer is not None
            deadline = time.monotonic() + 20
            while writer._queue.qsize() < 4 and time.monotonic() < deadline:
                time.sleep(0.005)
        super()._write(batch, begins)


async def test_issue9_item11_a_damaged_run_and_a_healthy_one_in_one_commit(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    damaged_flow = trioflow.Flow("damaged")

    @damaged_flow.step
    async def only() -> int:
        return 1

    plain = trioflow.SQLiteStore(db)
    await damaged_flow.run(store=plain, run_id="damaged")
    plain.close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET steps = 'not json' WHERE run_id = 'damaged'")
    conn.close()

    release = anyio.Event()
    healthy = trioflow.Flow("healthy")

    @healthy.step
    async def a() -> int:
        return 1

    @healthy.step
    async def b(a: int) -> int:
        await release.wait()
        return a + 1

    store = Gated(db, fsync=False)
    outcomes: dict[str, Any] = {}

    async def run(flow: trioflow.Flow, run_id: str) -> None:
        try:
            outcomes[run_id] = await flow.run(store=store, run_id=run_id)
        except Exception as exc:
            outcomes[run_id] = exc

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, healthy, "healthy")
            await anyio.to_thread.run_sync(store.blocked.wait)  # the writer holds a's record
            # b's record, the healthy run's end and flush and the damaged run's start queue
            # up behind the held commit, and so share the next one
            release.set()
            tg.start_soon(run, damaged_flow, "damaged")
    assert isinstance(outcomes["damaged"], StoreError)
    assert str(outcomes["damaged"]) == (
        f"{str(db)!r}: the records of run 'damaged' are damaged "
        "(JSONDecodeError('Expecting value: line 1 column 1 (char 0)')); "
        "start the run over with `await store.forget('damaged')`"
    )
    assert outcomes["healthy"]["b"] == 2
    loaded = await store.load("healthy")
    assert (loaded["a"], loaded["b"]) == (1, 2)
    assert {i.run_id: i.status for i in await store.runs()} == {"damaged": "succeeded", "healthy": "succeeded"}
    store.close()


# -- item 12: one run id runs in one process at a time ----------------------------------------


def test_issue9_item12_a_run_going_on_in_another_process_cannot_start_here(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    env = {**os.environ, "TRIOFLOW_TEST_HOLD": "1", "PYTHONPATH": str(ROOT)}
    flow = store_holder.build()

    async def start(run_id: str) -> Any:
        store = trioflow.SQLiteStore(db)
        try:
            return await flow.run(store=store, run_id=run_id)
        finally:
            store.close()

    for ending in ("finishes", "is killed"):
        holder = subprocess.Popen(
            [sys.executable, str(HOLDER), str(db), "shared"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdin is not None
            assert holder.stdout.readline() == "started\n"
            with pytest.raises(StoreError, match=(
                r"^run 'shared' is already running in another process \(recording to '.*runs\.db'\); "
                r"wait for it to end before resuming it, or give this run another run_id$"
            )):
                trio.run(start, "shared")
            assert trio.run(start, "other")["hold"] == "held"  # other run ids are free
            if ending == "finishes":
                holder.stdin.write("go\n")
                holder.stdin.flush()
                assert holder.stdout.readline() == "done held\n"
            else:
                holder.kill()  # the operating system drops its lock: no stale lock is left
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
            if holder.stdin is not None:
                holder.stdin.close()
        trioflow_result = trio.run(start, "shared")  # resumes (or re-runs) here
        assert trioflow_result["hold"] == "held"
        trio.run(_forget, db, "shared")


async def _forget(db: Path, run_id: str) -> None:
    store = trioflow.SQLiteStore(db)
    await store.forget(run_id)
    store.close()


# -- item 13: cancellation is prompt whatever the database does ------------------------------


def _lock_database(db: Path) -> sqlite3.Connection:
    """Another connection that holds the database's write lock until it rolls back."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_issue9_item13_cancelling_a_run_returns_promptly_while_the_database_is_locked(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    store = trioflow.SQLiteStore(db, fsync=False)
    await store.runs()  # the database exists
    started = anyio.Event()
    flow = trioflow.Flow("locked")

    @flow.step
    async def done() -> int:
        return 1

    @flow.step
    async def forever(done: int) -> int:
        started.set()
        await anyio.sleep_forever()
        return done

    ended = anyio.Event()
    scopes: list[anyio.CancelScope] = []

    async def run() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await flow.run(store=store, run_id="locked")
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        conn = _lock_database(db)  # (after the run has registered)
        try:
            scopes[0].cancel()
            with anyio.fail_after(10):  # the busy timeout is 30 s
                await ended.wait()
        finally:
            conn.rollback()
            conn.close()
    store.close()  # waits for the writer, which commits once the lock is gone
    reopened = trioflow.SQLiteStore(db)
    assert [i.status for i in await reopened.runs()] == ["cancelled"]
    loaded = await reopened.load("locked")
    assert loaded.steps["forever"].status is StepStatus.CANCELLED
    reopened.close()


async def test_issue9_item13_a_run_cancelled_while_it_registers_is_recorded_as_cancelled(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    store = trioflow.SQLiteStore(db, fsync=False)
    await store.runs()
    ran: list[str] = []
    flow = trioflow.Flow("registering")

    @flow.step
    async def step() -> int:
        ran.append("step")
        return 1

    conn = _lock_database(db)
    try:
        with anyio.fail_after(10):
            with anyio.move_on_after(0.2):  # while the writer waits for the lock
                await flow.run(store=store, run_id="registering")
    finally:
        conn.rollback()
        conn.close()
    assert ran == []
    store.close()  # the writer registers the run, then marks it cancelled
    reopened = trioflow.SQLiteStore(db)
    assert [(i.run_id, i.status) for i in await reopened.runs()] == [("registering", "cancelled")]
    assert (await flow.run(store=reopened, run_id="registering"))["step"] == 1
    reopened.close()


# -- item 14: the database holds inputs: owner only ------------------------------------------


async def test_issue9_item14_the_database_and_its_files_are_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "runs.db"
        store = trioflow.SQLiteStore(db)
        flow = trioflow.Flow("secret")

        @flow.step
        async def use(api_key: str) -> int:
            return len(api_key)

        await flow.run({"api_key": "sk-123"}, store=store, run_id="r")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-runs.lock")]
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
        store.close()
    finally:
        os.umask(old)


# -- item 15: stored data never makes the codec import anything -----------------------------


def test_issue9_item15_decoding_never_runs_a_lazy_module_attribute_loader() -> None:
    code = (
        "import sys, anyio, trioflow\n"
        "assert 'anyio.to_process' not in sys.modules\n"
        "data = b'{\"__trioflow__\": \"attrs\", \"type\": \"anyio:to_process.X\", \"fields\": {}}'\n"
        "try:\n"
        "    trioflow.JSONCodec().decode(data)\n"
        "except trioflow.CodecError as exc:\n"
        "    print(exc)\n"
        "print('anyio.to_process' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out == (
        "cannot decode a value of type 'anyio:to_process.X': 'anyio' has no 'to_process.X' "
        "(among what it has defined or imported so far)\nFalse\n"
    )


# -- item 19: clear errors before any step runs ----------------------------------------------


def _counting_flow(calls: list[str]) -> trioflow.Flow:
    flow = trioflow.Flow("counting")

    @flow.step
    async def size(data: dict[int, int]) -> int:
        calls.append("size")
        return len(data)

    return flow


@pytest.mark.parametrize("cls", [trioflow.SQLiteStore, trioflow.MemoryStore])
async def test_issue9_item19_a_store_class_instead_of_a_store(cls: type) -> None:
    calls: list[str] = []
    with pytest.raises(TypeError, match=(
        rf"^flow.run\(store=...\) got the class trioflow\.{cls.__name__}, not a store; make one and "
        r"pass it, e.g. store=trioflow.SQLiteStore\('runs.db'\) or store=trioflow.MemoryStore\(\)$"
    )):
        await _counting_flow(calls).run({"data": {}}, store=cls, run_id="r")
    assert calls == []


@pytest.mark.parametrize("threaded", [True, False])
async def test_issue9_item19_an_sqlite_path_in_a_missing_folder_or_that_is_a_folder(
    tmp_path: Path, threaded: bool
) -> None:
    calls: list[str] = []
    flow = _counting_flow(calls)
    missing = tmp_path / "nowhere" / "runs.db"
    with pytest.raises(StoreError) as info:
        await flow.run({"data": {}}, store=trioflow.SQLiteStore(missing, threaded=threaded), run_id="r")
    folder = str(tmp_path / "nowhere")
    assert str(info.value) == (
        f"SQLiteStore path {str(missing)!r} is in a folder that does not exist ({folder!r}); "
        f"create it first (os.makedirs({folder!r}, exist_ok=True)) or give another path"
    )
    with pytest.raises(StoreError) as info:
        await flow.run({"data": {}}, store=trioflow.SQLiteStore(tmp_path, threaded=threaded), run_id="r")
    assert str(info.value) == (
        f"SQLiteStore path {str(tmp_path)!r} is a directory; give the path of a database file, "
        f"e.g. SQLiteStore({str(tmp_path / 'runs.db')!r})"
    )
    assert calls == []
    assert not (tmp_path / "nowhere").exists()


async def test_issue9_item19_resuming_with_another_codec_says_so(tmp_path: Path) -> None:
    calls: list[str] = []
    flow = _counting_flow(calls)
    store = trioflow.SQLiteStore(tmp_path / "runs.db")
    await flow.run({"data": {1: 1}}, store=store, run_id="r")
    store.close()
    pickled = trioflow.SQLiteStore(tmp_path / "runs.db", codec=trioflow.PickleCodec())
    with pytest.raises(StoreError, match=(
        r"^run 'r' was recorded with the 'json' codec, and this store uses 'pickle'; to resume it, "
        r"open the store with the codec that recorded it \(codec=trioflow.JSONCodec\(\)\), or use "
        r"another run_id, or start over with `await store.forget\('r'\)` \(which deletes what run "
        r"'r' recorded\)$"
    )):
        await flow.run({"data": {1: 1}}, store=pickled, run_id="r")
    pickled.close()
    assert calls == ["size"]


async def test_issue9_item19_equal_dicts_whose_int_keys_come_in_another_order_resume(tmp_path: Path) -> None:
    calls: list[str] = []
    flow = _counting_flow(calls)
    store = trioflow.SQLiteStore(tmp_path / "runs.db")
    assert (await flow.run({"data": {1: 10, 2: 20}}, store=store, run_id="r"))["size"] == 2
    assert (await flow.run({"data": {2: 20, 1: 10}}, store=store, run_id="r"))["size"] == 2
    assert calls == ["size"]  # resumed: nothing ran again
    with pytest.raises(StoreError, match=r"^run 'r' was recorded with different inputs; "):
        await flow.run({"data": {2: 20, 1: 11}}, store=store, run_id="r")
    store.close()


# -- issue 11 item 8: stores the trio way ------------------------------------------------------


class WhereClosed(trioflow.SQLiteStore):
    """Notes the thread that closes it."""

    closed_in: list[str]

    def close(self) -> None:
        self.closed_in = [*getattr(self, "closed_in", []), threading.current_thread().name]
        super().close()


async def test_issue11_item8_async_with_closes_the_store_off_the_event_loop(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    flow = _counting_flow([])
    async with WhereClosed(db) as store:
        assert (await flow.run({"data": {1: 1}}, store=store, run_id="r"))["size"] == 1
    assert len(store.closed_in) == 1
    assert store.closed_in[0] != threading.current_thread().name  # a worker thread did it
    assert not [t for t in threading.enumerate() if t.name == f"trioflow-store-writer[{db}]"]
    closed = r"^<trioflow.SQLiteStore '.*runs\.db'> is closed; make a new trioflow.SQLiteStore\('.*runs\.db'\) to use the database again$"
    with pytest.raises(StoreError, match=closed):
        await store.runs()
    with pytest.raises(StoreError, match=closed):
        await store.load("r")
    calls: list[str] = []
    with pytest.raises(StoreError, match=closed):
        await _counting_flow(calls).run({"data": {}}, store=store, run_id="s")
    assert calls == []
    await store.aclose()  # closing again is fine
    store.close()
    async with trioflow.SQLiteStore(db, threaded=False) as inline:  # no threads at all
        assert [i.run_id for i in await inline.runs()] == ["r"]
    with pytest.raises(StoreError, match=r"is closed"):
        await inline.forget("r")
