"""Durable runs (issue 5): MemoryStore and SQLiteStore, recording and resuming.

Tests marked ``anyio`` run on trio (virtual time) and on asyncio. Stores are
parametrized: ``memory``, ``sqlite`` (worker thread, the default) and
``sqlite-inline`` (``threaded=False``, for virtual time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import os
import pickle
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import FlowError, RecordedError, StepStatus, StoreError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """trio and asyncio with their real clocks: under trio's MockClock, the
    autojump task spins while a store's worker thread works, which slows these
    tests down a hundredfold (virtual time is tested with ``threaded=False``)."""
    return request.param

DOCS = Path(__file__).resolve().parent.parent / "docs"

StoreFactory = Callable[..., Any]


@pytest.fixture(
    params=["memory", "sqlite", "sqlite-inline", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make_store(**options)``: a new store of the parametrized kind (one file, or one
    PostgreSQL database on the session's server, per test)."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        if request.param == "memory":
            if not made:
                made.append(trioflow.MemoryStore(**options))
            return made[0]  # the same memory store: "reopening" it
        if request.param == "postgres":
            store: Any = trioflow.PostgresStore(request.getfixturevalue("postgres_dsn"), fsync=False, **options)
            made.append(store)
            return store
        store = trioflow.SQLiteStore(
            tmp_path / "runs.db", threaded=request.param == "sqlite", fsync=False, **options
        )
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, trioflow.SQLiteStore | trioflow.PostgresStore):
            store.close()


class Calls:
    """Counts step executions by label."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def __call__(self, label: str) -> None:
        self.log.append(label)

    def take(self) -> list[str]:
        log, self.log = self.log, []
        return log


def pipeline(calls: Calls, fail: set[str]) -> trioflow.Flow:
    """load -> (double, items -> square[map]) -> total; labels in ``fail`` raise."""
    flow = trioflow.Flow("pipeline")

    @flow.step
    async def load(n: int) -> tuple[int, int]:
        calls("load")
        return (n, n + 1)

    @flow.step
    async def double(load: tuple[int, int]) -> list[int]:
        calls("double")
        if "double" in fail:
            raise ValueError("double failed")
        return [2 * x for x in load]

    @flow.step
    async def items(load: tuple[int, int]) -> list[int]:
        calls("items")
        return list(range(load[0]))

    @flow.step(map_over="items")
    async def square(items: int) -> int:
        calls(f"square[{items}]")
        if f"square[{items}]" in fail:
            raise ValueError(f"item {items} failed")
        return items * items

    @flow.step
    async def total(double: list[int], square: list[int]) -> int:
        calls("total")
        return sum(double) + sum(square)

    return flow


async def test_resume_runs_only_what_is_missing(make_store: StoreFactory) -> None:
    calls = Calls()
    fail = {"double", "square[2]"}
    flow = pipeline(calls, fail)
    store = make_store()
    with pytest.raises(FlowError) as info:
        await flow.run({"n": 4}, store=store, run_id="r1", error_handling="continue")
    assert info.value.result.failed == ["double", "square"]
    assert sorted(calls.take()) == sorted(
        ["load", "double", "items", "square[0]", "square[1]", "square[2]", "square[3]"]
    )
    fail.clear()
    result = await flow.run({"n": 4}, store=make_store(), run_id="r1")
    # load and items succeeded, and so did items 0, 1, 3 of square: none of them runs again
    assert sorted(calls.take()) == ["double", "square[2]", "total"]
    uninterrupted = await flow.run({"n": 4})
    calls.take()
    assert dict(result.outputs) == dict(uninterrupted.outputs)
    assert result["load"] == (4, 5)  # a tuple comes back a tuple
    assert result.run_id == "r1"
    # a finished run resumes to the same result without running anything
    again = await flow.run({"n": 4}, store=make_store(), run_id="r1")
    assert calls.take() == []
    assert dict(again.outputs) == dict(uninterrupted.outputs)


async def test_records_hold_status_value_error_attempts_usage_and_times(make_store: StoreFactory) -> None:
    flow = trioflow.Flow("records")

    @flow.step(retry=trioflow.Retry(max_attempts=2))
    async def flaky() -> str:
        trioflow.current_step().add_usage(tokens=10)
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("try again")
        return "ok"

    @flow.step
    async def broken(flaky: str) -> str:
        raise KeyError("nope")

    @flow.step
    async def downstream(broken: str) -> str:
        return broken

    @flow.step
    async def independent() -> dict[str, Any]:
        return {"a": [1, 2], "b": None}

    store = make_store()
    with pytest.raises(FlowError) as caught:
        await flow.run(store=store, run_id="rec", error_handling="continue")
    loaded = await make_store().load("rec")
    for name, live in caught.value.result.steps.items():  # times come back exactly
        assert (loaded.steps[name].started_at, loaded.steps[name].finished_at) == (
            live.started_at,
            live.finished_at,
        ), name
    assert list(loaded.steps) == ["flaky", "broken", "downstream", "independent"]
    assert loaded.run_id == "rec"
    assert loaded.flow == "records"
    flaky_r = loaded.steps["flaky"]
    assert (flaky_r.status, flaky_r.value, flaky_r.attempts) == (StepStatus.SUCCEEDED, "ok", 2)
    assert dict(flaky_r.usage) == {"tokens": 20}
    assert flaky_r.started_at is not None
    assert flaky_r.finished_at is not None
    broken_r = loaded.steps["broken"]
    assert broken_r.status is StepStatus.FAILED
    assert isinstance(broken_r.error, RecordedError)
    assert (broken_r.error.type, broken_r.error.message) == ("KeyError", "'nope'")
    assert str(broken_r.error) == "KeyError: 'nope'"
    assert loaded.steps["downstream"].status is StepStatus.SKIPPED
    assert (loaded.steps["downstream"].started_at, loaded.steps["downstream"].finished_at) == (None, None)
    assert loaded["independent"] == {"a": [1, 2], "b": None}
    [info] = await make_store().runs()
    assert (info.run_id, info.flow, info.status) == ("rec", "records", "failed")
    assert info.fingerprint == flow.plan().fingerprint


async def test_reusing_a_run_id_with_other_inputs_fails_before_any_step(make_store: StoreFactory) -> None:
    calls = Calls()
    flow = pipeline(calls, set())
    await flow.run({"n": 2}, store=make_store(), run_id="same")
    calls.take()
    with pytest.raises(StoreError, match=r"^run 'same' was recorded with different inputs; use another "
                       r"run_id, or start over with `await store.forget\('same'\)`"):
        await flow.run({"n": 3}, store=make_store(), run_id="same")
    assert calls.take() == []
    assert isinstance(StoreError("x"), ValueError)


async def test_a_changed_default_counts_as_other_inputs(make_store: StoreFactory) -> None:
    def build(default: int) -> trioflow.Flow:
        flow = trioflow.Flow("defaults")

        @flow.step
        async def step(x: int = default) -> int:
            return x

        return flow

    await build(1).run(store=make_store(), run_id="d")
    with pytest.raises(StoreError, match="different inputs"):
        await build(2).run(store=make_store(), run_id="d")


async def test_reusing_a_run_id_with_another_structure_or_flow_fails(make_store: StoreFactory) -> None:
    calls = Calls()
    await pipeline(calls, set()).run({"n": 2}, store=make_store(), run_id="same")
    changed = pipeline(calls, set())

    @changed.step
    async def extra(total: int) -> int:
        calls("extra")
        return total

    calls.take()
    with pytest.raises(StoreError, match=r"^run 'same' was recorded with a different structure of flow "
                       r"'pipeline' \(fingerprint '\w+', now '\w+'\)"):
        await changed.run({"n": 2}, store=make_store(), run_id="same")
    other = trioflow.Flow("other")

    @other.step
    async def n_(n: int) -> int:
        return n

    with pytest.raises(StoreError, match=r"^run 'same' was recorded by flow 'pipeline', not 'other'"):
        await other.run({"n": 2}, store=make_store(), run_id="same")
    assert calls.take() == []


async def test_forget_starts_over(make_store: StoreFactory) -> None:
    calls = Calls()
    flow = pipeline(calls, set())
    store = make_store()
    await flow.run({"n": 1}, store=store, run_id="f")
    assert await store.forget("f") is True
    assert await store.forget("f") is False
    calls.take()
    result = await flow.run({"n": 2}, store=store, run_id="f")
    assert "load" in calls.take()
    assert result["total"] == 2 * (2 + 3) + 0 + 1
    with pytest.raises(StoreError, match=r"^the store has no run 'gone'"):
        await store.load("gone")


async def test_without_a_run_id_a_fresh_one_is_recorded(make_store: StoreFactory) -> None:
    flow = pipeline(Calls(), set())
    store = make_store()
    a = await flow.run({"n": 1}, store=store)
    b = await flow.run({"n": 1}, store=store)
    assert a.run_id
    assert b.run_id
    assert a.run_id != b.run_id
    assert [r.run_id for r in await store.runs()] == [a.run_id, b.run_id]
    assert dict((await store.load(a.run_id)).outputs) == dict(a.outputs)


async def test_a_value_the_codec_cannot_encode_fails_that_step(make_store: StoreFactory) -> None:
    flow = trioflow.Flow("codec")

    class Opaque:
        pass

    @flow.step
    async def good() -> int:
        return 1

    @flow.step
    async def bad(good: int) -> Opaque:
        return Opaque()

    @flow.step
    async def after_bad(bad: Opaque) -> int:
        return 2

    @flow.step(map_over="xs")
    async def items(xs: int) -> Any:
        return Opaque() if xs == 1 else xs

    store = make_store()
    with pytest.raises(FlowError) as info:
        await flow.run({"xs": [0, 1, 2]}, store=store, run_id="c", error_handling="continue")
    errors = {str(e).split(" returned")[0]: e for e in info.value.exceptions}
    assert set(errors) == {"step 'bad'", "step 'items[1]'"}
    assert isinstance(errors["step 'bad'"], trioflow.CodecError)
    assert str(errors["step 'bad'"]).startswith(
        "step 'bad' returned a value of type test_a_value_the_codec_cannot_encode_fails_that_step."
        "<locals>.Opaque that the store's 'json' codec cannot encode: cannot encode value of type "
    )
    loaded = await store.load("c")
    assert loaded["good"] == 1
    assert loaded.steps["bad"].status is StepStatus.FAILED
    assert loaded.steps["bad"].error.type == "trioflow.CodecError"  # type: ignore[union-attr]
    assert loaded.steps["after_bad"].status is StepStatus.SKIPPED
    assert loaded.steps["items"].status is StepStatus.FAILED


async def test_store_must_be_a_store() -> None:
    flow = pipeline(Calls(), set())
    with pytest.raises(TypeError, match=r"^flow.run\(store=...\) takes a store such as "):
        await flow.run({"n": 1}, store={"not": "a store"}, run_id="x")


async def test_inputs_the_codec_cannot_encode_fail_before_any_step(make_store: StoreFactory) -> None:
    calls = Calls()
    flow = pipeline(calls, set())
    with pytest.raises(StoreError, match=r"^run 'x' of flow 'pipeline': the store cannot record its inputs"):
        await flow.run({"n": object()}, store=make_store(), run_id="x")
    assert calls.take() == []


async def test_cancelled_run_keeps_its_records_and_resumes(make_store: StoreFactory) -> None:
    # Cancelled from outside by the step itself, not by a deadline: a threaded
    # store under MockClock would let the clock jump while its thread works.
    store = make_store()
    calls = Calls()
    flow = trioflow.Flow("slow")
    outside = anyio.CancelScope()
    resumed = False

    @flow.step
    async def quick() -> str:
        calls("quick")
        return "q"

    @flow.step
    async def slow(quick: str) -> str:
        calls("slow")
        if not resumed:
            outside.cancel()
            await anyio.sleep_forever()
        return quick + "s"

    with outside:
        await flow.run(store=store, run_id="c")
    assert outside.cancelled_caught
    assert calls.take() == ["quick", "slow"]
    assert [r.status for r in await store.runs()] == ["cancelled"]
    loaded = await store.load("c")
    assert loaded.steps["slow"].status is StepStatus.CANCELLED
    resumed = True
    result = await flow.run(store=store, run_id="c")
    assert calls.take() == ["slow"]
    assert result["slow"] == "qs"


async def test_concurrent_runs_share_a_store(make_store: StoreFactory) -> None:
    calls = Calls()
    flow = pipeline(calls, set())
    store = make_store()
    results: dict[int, trioflow.RunResult] = {}

    async def one(n: int) -> None:
        results[n] = await flow.run({"n": n}, store=store, run_id=f"run-{n}")

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(one, n)
    for n in range(5):
        loaded = await store.load(f"run-{n}")
        assert dict(loaded.outputs) == dict(results[n].outputs)


def writer_threads(path: Path) -> int:
    """Writer threads of the stores of the file ``path``."""
    return sum(t.name == f"trioflow-store-writer[{path}]" for t in threading.enumerate())


class Counting(trioflow.SQLiteStore):
    commits = 0

    def _write(self, batch: Any, begins: Any = ()) -> None:
        self.commits += 1
        super()._write(batch, begins)


async def test_concurrent_runs_share_one_writer_thread_and_its_commits(tmp_path: Path) -> None:
    store = Counting(tmp_path / "runs.db")
    seen: list[int] = []
    flow = trioflow.Flow("many")

    @flow.step
    async def first(n: int) -> int:
        await anyio.sleep(0.02)
        seen.append(writer_threads(tmp_path / "runs.db"))
        return n

    @flow.step
    async def second(first: int) -> int:
        await anyio.sleep(0.02)
        seen.append(writer_threads(tmp_path / "runs.db"))
        return first * 10

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(partial(flow.run, {"n": n}, store=store, run_id=f"run-{n}"))
    assert len(seen) == 40
    assert set(seen) == {1}  # one thread for the 20 sessions
    for n in range(20):
        assert (await store.load(f"run-{n}"))["second"] == n * 10
    # 20 starts of runs, 40 records and 20 ends, in far fewer commits than one per run
    assert store.commits < 20
    store.close()
    assert writer_threads(tmp_path / "runs.db") == 0


async def test_runs_cancelled_while_starting_or_running_leave_the_store_usable(tmp_path: Path) -> None:
    store = trioflow.SQLiteStore(tmp_path / "runs.db")
    calls = Calls()
    flow = pipeline(calls, set())
    for delay in (0, 0.001, 0.005):  # while registering, while running, ...
        with anyio.move_on_after(delay):
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(partial(flow.run, {"n": 3}, store=store, run_id=f"run-{n}"))
    with anyio.fail_after(10):
        for n in range(10):  # every run resumes and finishes
            assert (await flow.run({"n": 3}, store=store, run_id=f"run-{n}"))["total"] == 19
    assert {info.status for info in await store.runs()} == {"succeeded"}
    store.close()
    assert writer_threads(tmp_path / "runs.db") == 0


class SlowToRegister(trioflow.SQLiteStore):
    """Its first commit of a run's start waits until let go (a database busy for a moment)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()  # the commit has begun to wait
        self.go = threading.Event()
        self.first = True

    def _write(self, batch: Any, begins: Any = ()) -> None:
        if begins and self.first:
            self.first = False
            self.waiting.set()
            self.go.wait(10)
        super()._write(batch, begins)


async def test_a_run_cancelled_while_registering_never_overwrites_a_later_run_of_its_id(tmp_path: Path) -> None:
    # the cancelled run's start stays queued in the writer of its session; the
    # next run of that id gets a new writer, which must commit nothing before
    # that start is committed (else the stale start marks the finished run as
    # running again, or its cancellation as cancelled)
    store = SlowToRegister(tmp_path / "runs.db")
    flow = pipeline(Calls(), set())
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(flow.run, {"n": 3}, store=store, run_id="r"))
            await anyio.to_thread.run_sync(store.waiting.wait, 5)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    finished: list[Any] = []
    done = anyio.Event()

    async def resume() -> None:
        finished.append((await flow.run({"n": 3}, store=store, run_id="r"))["total"])
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(resume)
        with anyio.move_on_after(0.5):  # (it waits for the stale start: let it go then)
            await done.wait()
        store.go.set()
    assert finished == [19]
    assert [(info.run_id, info.status) for info in await store.runs()] == [("r", "succeeded")]
    store.close()
    assert (await trioflow.SQLiteStore(tmp_path / "runs.db").load("r")).ok


class Failing(trioflow.SQLiteStore):
    """Its first commit of records fails, as with a full disk."""

    failed = False

    def _write(self, batch: Any, begins: Any = ()) -> None:
        if batch and not self.failed:
            self.failed = True
            raise StoreError("database or disk is full")
        super()._write(batch, begins)


@pytest.mark.parametrize("threaded", [True, False])
async def test_records_that_could_not_be_committed_are_a_store_error(
    tmp_path: Path, threaded: bool
) -> None:
    calls = Calls()
    flow = pipeline(calls, set())
    store = Failing(tmp_path / "runs.db", threaded=threaded)
    with pytest.raises(StoreError, match=r"^database or disk is full$"):
        await flow.run({"n": 2}, store=store, run_id="full")
    assert "total" in calls.take()  # the steps ran; their records are what was lost
    # after the lost commit nothing more of the run was written: it resumes from nothing
    assert (await store.load("full")).ok is False
    assert all(s.status is StepStatus.CANCELLED for s in (await store.load("full")).steps.values())
    result = await flow.run({"n": 2}, store=store, run_id="full")
    assert sorted(calls.take()) == sorted(["load", "double", "items", "square[0]", "square[1]", "total"])
    assert (await store.load("full"))["total"] == result["total"]
    store.close()


class Broken(trioflow.SQLiteStore):
    """Every commit of records fails."""

    def _write(self, batch: Any, begins: Any = ()) -> None:
        if batch:
            raise StoreError("disk I/O error")
        super()._write(batch, begins)


async def test_runs_that_lose_records_together_each_get_their_own_error(tmp_path: Path) -> None:
    store = Broken(tmp_path / "runs.db")
    errors: list[BaseException] = []
    flow = pipeline(Calls(), set())

    async def one(n: int) -> None:
        try:
            await flow.run({"n": n}, store=store, run_id=f"run-{n}")
        except StoreError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(one, n)
    assert [str(e) for e in errors] == ["disk I/O error"] * 3
    assert len({id(e) for e in errors}) == 3
    store.close()


@pytest.mark.parametrize("threaded", [True, False])
async def test_closing_the_store_during_a_run_fails_it_to_record_and_never_hangs(
    tmp_path: Path, threaded: bool
) -> None:
    store = trioflow.SQLiteStore(tmp_path / "runs.db", threaded=threaded)
    flow = trioflow.Flow("closing")

    @flow.step
    async def first() -> int:
        store.close()
        return 1

    @flow.step
    async def second(first: int) -> int:
        return first + 1

    with anyio.fail_after(10), pytest.raises(StoreError, match=r"is closed"):
        await flow.run(store=store, run_id="closing")


class Delegating:
    """A store of one's own (see "Writing your own store"): it wraps another
    store's sessions, so the records reach it through the public protocol."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.records: list[Any] = []

    @property
    def codec(self) -> Any:
        return self.inner.codec

    @contextlib.asynccontextmanager
    async def open_run(self, header: Any) -> Any:
        async with self.inner.open_run(header) as session:
            yield Session(session, self.records)

    async def runs(self) -> Any:
        return await self.inner.runs()

    async def load(self, run_id: str) -> Any:
        return await self.inner.load(run_id)

    async def forget(self, run_id: str) -> bool:
        return bool(await self.inner.forget(run_id))


class Session:
    def __init__(self, inner: Any, records: list[Any]) -> None:
        self.inner = inner
        self.records = records
        self.previous = inner.previous

    def record_step(self, record: Any) -> None:
        self.records.append(record)
        self.inner.record_step(record)

    def record_item(self, record: Any) -> None:
        self.records.append(record)
        self.inner.record_item(record)

    def finish(self, status: str, started_at: float, finished_at: float) -> None:
        self.inner.finish(status, started_at, finished_at)


async def test_a_store_of_ones_own_gets_records_through_the_protocol(make_store: StoreFactory) -> None:
    calls = Calls()
    store = Delegating(make_store())
    assert isinstance(store, trioflow.abc.Store)
    fail = {"square[1]"}
    flow = pipeline(calls, fail)
    with pytest.raises(FlowError) as info:
        await flow.run({"n": 3}, store=store, run_id="own", error_handling="continue")
    steps = {r.name: r for r in store.records if isinstance(r, trioflow.abc.StepRecord)}
    items = {r.index: r for r in store.records if isinstance(r, trioflow.abc.ItemRecord)}
    assert {n: r.status for n, r in steps.items()} == {
        "load": StepStatus.SUCCEEDED, "double": StepStatus.SUCCEEDED, "items": StepStatus.SUCCEEDED,
        "square": StepStatus.FAILED, "total": StepStatus.SKIPPED,
    }
    assert (steps["load"].value, steps["load"].codec) == (store.codec.encode((3, 4)), store.codec.name)
    assert steps["square"].error_type == "ValueError"
    assert steps["square"].error_message == "item 1 failed"
    live = info.value.result.steps["load"]
    assert (steps["load"].started_at, steps["load"].finished_at) == (live.started_at, live.finished_at)
    assert sorted(items) == [0, 2]
    assert store.codec.decode(items[2].value) == 4
    calls.take()
    fail.clear()
    result = await flow.run({"n": 3}, store=store, run_id="own")  # the public path resumes too
    assert calls.take() == ["square[1]", "total"]
    assert result["total"] == 2 * 7 + 0 + 1 + 4
    assert (await store.load("own"))["total"] == result["total"]


async def test_a_run_id_that_is_running_cannot_start_again(make_store: StoreFactory) -> None:
    started = anyio.Event()
    release = anyio.Event()
    calls: list[str] = []
    flow = trioflow.Flow("busy")

    @flow.step
    async def work() -> str:
        calls.append("work")
        started.set()
        await release.wait()
        return "done"

    store = make_store()
    results: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def first() -> None:
            results.append(await flow.run(store=store, run_id="busy"))

        tg.start_soon(first)
        await started.wait()
        for other in (store, make_store()):  # the same store, or another on the same file
            with pytest.raises(StoreError, match=(
                r"^run 'busy' is already running in this process \(recording to .*\); wait for it "
                r"to end before resuming it, or give this run another run_id$"
            )):
                await flow.run(store=other, run_id="busy")
        release.set()
    assert calls == ["work"]
    assert results[0]["work"] == "done"
    assert (await flow.run(store=store, run_id="busy"))["work"] == "done"  # ended: it resumes
    assert calls == ["work"]


async def test_nested_runs_record_to_their_own_stores(make_store: StoreFactory) -> None:
    inner_store = trioflow.MemoryStore()
    inner = trioflow.Flow("inner")

    @inner.step
    async def inner_step(x: int) -> int:
        return x * 10

    outer = trioflow.Flow("outer")

    @outer.step
    async def outer_step(x: int) -> int:
        result = await inner.run({"x": x}, store=inner_store, run_id="in")
        return int(result["inner_step"]) + 1

    store = make_store()
    result = await outer.run({"x": 4}, store=store, run_id="out")
    assert result["outer_step"] == 41
    assert (await store.load("out"))["outer_step"] == 41
    assert (await inner_store.load("in"))["inner_step"] == 40


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


async def test_dataclass_values_come_back_as_dataclasses(make_store: StoreFactory) -> None:
    flow = trioflow.Flow("points")

    @flow.step
    async def origin() -> Point:
        return Point(0, 0)

    await flow.run(store=make_store(), run_id="p")
    assert (await make_store().load("p"))["origin"] == Point(0, 0)


# -- SQLite specifics ---------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
async def test_sqlite_files_that_are_not_trioflow_stores(tmp_path: Path, threaded: bool) -> None:
    flow = pipeline(Calls(), set())
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=r"is not an SQLite database \(it starts with b'this is not a "):
        await flow.run({"n": 1}, store=trioflow.SQLiteStore(garbage, threaded=threaded), run_id="x")

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"is an SQLite database that trioflow did not create \(tables 'customers'\)"):
        await trioflow.SQLiteStore(foreign, threaded=threaded).runs()

    good = tmp_path / "good.db"
    store = trioflow.SQLiteStore(good, threaded=threaded, fsync=False)
    for i in range(20):
        await flow.run({"n": 30}, store=store, run_id=f"r{i}")
    store.close()
    corrupt(good)
    with pytest.raises(
        StoreError, match=r"is not a usable trioflow store: .*corrupt or is not an SQLite database"
    ):
        await read_everything(trioflow.SQLiteStore(good, threaded=threaded))


@pytest.mark.parametrize(
    ("column", "damage"),
    [("records", "'[[\"s\", \"load\"'"), ("records", "'{}'"), ("times", "x'00'")],
    ids=["truncated-json", "not-a-list", "short-times"],
)
async def test_damaged_records_give_a_store_error_that_says_how_to_start_over(
    tmp_path: Path, column: str, damage: str
) -> None:
    path = tmp_path / "runs.db"
    with trioflow.SQLiteStore(path, fsync=False) as store:
        await pipeline(Calls(), set()).run({"n": 3}, store=store, run_id="r")
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE journal SET {column} = {damage}")
    conn.commit()
    conn.close()
    with trioflow.SQLiteStore(path) as store:
        with pytest.raises(
            StoreError,
            match=r"runs\.db': the records of run 'r' are damaged \(.*\); start the run over with "
            r"`await store\.forget\('r'\)`$",
        ):
            await store.load("r")
        assert await store.forget("r")
        assert await store.runs() == []


def corrupt(path: Path) -> None:
    """Overwrite every page of an SQLite file but the first with garbage."""
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset : offset + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def read_everything(store: trioflow.SQLiteStore) -> None:
    for info in await store.runs():
        await store.load(info.run_id)


async def test_sqlite_store_creates_a_wal_database_that_passes_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with trioflow.SQLiteStore(path) as store:
        await pipeline(Calls(), set()).run({"n": 3}, store=store, run_id="r")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    with pytest.raises(StoreError, match=r"is closed"):
        await store.runs()


async def test_pickled_records_are_never_unpickled_by_a_json_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.db"
    flow = trioflow.Flow("pickled")
    calls = Calls()

    @flow.step
    async def value() -> complex:
        calls("value")
        return 1 + 2j

    @flow.step
    async def fails(value: complex) -> None:
        raise ValueError("again")

    store = trioflow.SQLiteStore(path, codec=trioflow.PickleCodec(), threaded=False)
    with pytest.raises(FlowError):
        await flow.run(store=store, run_id="p")
    assert (await store.load("p"))["value"] == 1 + 2j

    def no_unpickling(*args: object) -> None:
        raise AssertionError("pickle.loads called")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    json_store = trioflow.SQLiteStore(path, threaded=False)
    with pytest.raises(StoreError, match=r"codec=trioflow.PickleCodec\(\)"):
        await json_store.load("p")
    with pytest.raises(StoreError):  # inputs were recorded with pickle: another codec is another run
        await flow.run(store=json_store, run_id="p")
    assert calls.take() == ["value"]


# -- virtual time ------------------------------------------------------------------------


def test_inline_sqlite_store_is_deterministic_in_virtual_time(tmp_path: Path) -> None:
    """``threaded=False``: nothing runs outside the event loop, so the harness
    sees exact virtual time and no false deadlock."""
    from trioflow.testing import run_deterministic

    flow = trioflow.Flow("timed")

    @flow.step
    async def a() -> str:
        await trio.sleep(3)
        return "a"

    @flow.step
    async def b() -> str:
        await trio.sleep(5)
        return "b"

    @flow.step
    async def c(a: str, b: str) -> str:
        await trio.sleep(1)
        return a + b

    store = trioflow.SQLiteStore(tmp_path / "t.db", threaded=False, fsync=False)

    async def main() -> tuple[Any, float]:
        result = await flow.run(store=store, run_id="t")
        return result["c"], result.duration

    run = run_deterministic(main)
    assert run.value == ("ab", 6.0)
    assert run.virtual_time == 6.0


# -- docs ----------------------------------------------------------------------------------


def test_durable_docs_page_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/durable.rst's examples (the resume example among them) run and print what it shows."""
    monkeypatch.chdir(tmp_path)
    path = DOCS / "durable.rst"
    text = path.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(text, {"__name__": "durable"}, "durable.rst", str(path), 0)
    assert len(test.examples) > 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    for value in test.globs.values():
        if isinstance(value, trioflow.SQLiteStore):
            value.close()
    assert runner.failures == 0, "".join(failures)


# -- durability --------------------------------------------------------------------------


class _RecordingConnection:
    """Delegates to an sqlite3 connection, noting every statement it runs."""

    def __init__(self, conn: sqlite3.Connection, log: list[str]) -> None:
        self._conn = conn
        self._log = log

    def execute(self, sql: str, *args: Any) -> Any:
        self._log.append(" ".join(sql.split()))
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("fsync", [True, False])
@pytest.mark.parametrize("threaded", [True, False])
async def test_the_commit_that_ends_a_run_is_synced_to_disk(
    tmp_path: Path, fsync: bool, threaded: bool
) -> None:
    store = trioflow.SQLiteStore(tmp_path / "runs.db", threaded=threaded, fsync=fsync)
    flow = pipeline(Calls(), set())
    await flow.run({"n": 1}, store=store, run_id="warm-up")  # opens the connection
    log: list[str] = []
    store._conn = _RecordingConnection(store._conn, log)  # type: ignore[assignment]
    await flow.run({"n": 2}, store=store, run_id="r")
    synced = [i for i, sql in enumerate(log) if sql == "PRAGMA synchronous = FULL"]
    if not fsync:
        assert synced == []
        return
    # exactly one FULL commit: the last transaction, the one recording the run's end
    assert len(synced) == 1
    tail = log[synced[0]:]
    assert tail[1] == "BEGIN IMMEDIATE"
    assert any(sql.startswith("UPDATE runs SET") for sql in tail)
    assert tail[-2:] == ["COMMIT", "PRAGMA synchronous = NORMAL"]
    assert [r.status for r in await store.runs()] == ["succeeded", "succeeded"]
