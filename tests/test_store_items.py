"""Map items in durable runs: matched to the same items on resume (issue 9 item 9), recorded with
their times (issue 12 item 3: journal format 2), and stores of format 1 migrated."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioflow
from trioflow import StepStatus
from trioflow.abc import ItemRecord

ROOT = Path(__file__).resolve().parent.parent
SET_MAP = Path(__file__).resolve().parent / "set_map_flow.py"


def _set_map(db: Path, run_id: str, seed: int, failing: str | None = None) -> dict[str, Any]:
    args = [sys.executable, str(SET_MAP), str(db), run_id] + ([failing] if failing else [])
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def test_issue9_item9_a_map_over_a_set_resumed_in_another_process(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first = _set_map(db, "r", seed=1, failing="kappa")
    assert first["result"] is None  # kappa failed; the other 15 items were recorded
    second = _set_map(db, "r", seed=2)
    assert first["order"] != second["order"]  # the set iterates in another order here
    assert second["ran"] == ["kappa"]  # only what was not recorded ran again
    assert second["result"] == second["fresh"]  # as an uninterrupted run in this process
    assert second["result"] == [w.upper() for w in second["order"]]


class Capturing:
    """A store of one's own around another: keeps what each run's session saw as recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.previous: list[Any] = []

    @property
    def codec(self) -> Any:
        return self.inner.codec

    @asynccontextmanager
    async def open_run(self, header: Any) -> Any:
        async with self.inner.open_run(header) as session:
            self.previous.append(session.previous)
            yield session

    async def runs(self) -> Any:
        return await self.inner.runs()

    async def load(self, run_id: str) -> Any:
        return await self.inner.load(run_id)

    async def forget(self, run_id: str) -> bool:
        return bool(await self.inner.forget(run_id))


def test_issue12_item3_map_items_are_recorded_with_their_times(tmp_path: Path) -> None:
    flow = trioflow.Flow("timed")
    fail = {2}

    @flow.step(map_over="n")
    async def nap(n: int) -> int:
        await trio.sleep(n + 1)
        if n in fail:
            raise ValueError(n)
        return n * 10

    async def main() -> None:
        live: dict[int, tuple[float, float]] = {}

        def on_event(event: Any) -> None:
            if isinstance(event, trioflow.StepSucceeded) and event.item is not None:
                live[event.item] = (event.time - event.duration, event.time)

        store = Capturing(trioflow.SQLiteStore(tmp_path / "runs.db", threaded=False))
        await trio.sleep(100)  # times are virtual: not 0
        with pytest.raises(trioflow.FlowError):
            await flow.run({"n": [0, 1, 2, 3]}, store=store, run_id="t", on_event=on_event, error_handling="continue")
        assert sorted(live) == [0, 1, 3]
        assert live[1] == (100.0, 102.0)
        fail.clear()
        result = await flow.run({"n": [0, 1, 2, 3]}, store=store, run_id="t")
        assert result["nap"] == [0, 10, 20, 30]
        recorded: dict[int, ItemRecord] = dict(store.previous[1].items["nap"])
        assert sorted(recorded) == [0, 1, 3]
        assert {i: (r.started_at, r.finished_at) for i, r in recorded.items()} == live
        assert all(r.fingerprint is not None for r in recorded.values())
        store.inner.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_issue12_item3_a_store_of_journal_format_1_is_migrated_and_read(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    flow = trioflow.Flow("old")
    ran: list[int] = []
    fail = {2}

    @flow.step(map_over="n")
    async def double(n: int) -> int:
        ran.append(n)
        if n in fail:
            raise ValueError(n)
        return n * 2

    async def first() -> None:
        store = trioflow.SQLiteStore(db)
        with pytest.raises(trioflow.FlowError):
            await flow.run({"n": [1, 2, 3]}, store=store, run_id="o", error_handling="continue")
        store.close()

    trio.run(first)
    # turn it into what trioflow wrote before format 2: items without times or fingerprints
    conn = sqlite3.connect(db)
    with conn:
        for row_id, records in conn.execute("SELECT id, records FROM journal").fetchall():
            old = [["i", r[1], r[2], r[3], r[4]] if r[0] == "k" else r for r in json.loads(records)]
            conn.execute("UPDATE journal SET records = ? WHERE id = ?", (json.dumps(old), row_id))
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    ran.clear()
    fail.clear()

    async def resume() -> trioflow.RunResult:
        store = trioflow.SQLiteStore(db)
        try:
            return await flow.run({"n": [1, 2, 3]}, store=store, run_id="o")
        finally:
            store.close()

    assert trio.run(resume)["double"] == [2, 4, 6]
    assert ran == [2]  # the old records were read (by index)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    conn.close()


def test_a_store_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    trio.run(_touch, db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 3")
    conn.close()

    async def use() -> None:
        store = trioflow.SQLiteStore(db)
        try:
            await store.runs()
        finally:
            store.close()

    with pytest.raises(trioflow.StoreError, match=(
        r"is a trioflow store of schema version 3, and this trioflow reads versions 1 and 2; "
        r"use a trioflow version that reads it$"
    )):
        trio.run(use)


async def _touch(db: Path) -> None:
    store = trioflow.SQLiteStore(db)
    await store.runs()
    store.close()


def test_issue12_item3_a_loaded_map_step_has_each_item_with_its_times(tmp_path: Path) -> None:
    flow = trioflow.Flow("items")
    fail = {1}

    @flow.step(map_over="n")
    async def triple(n: int) -> int:
        await trio.sleep(n + 1)
        if n in fail:
            raise ValueError(n)
        return n * 3

    def shown(items: Any) -> list[tuple[Any, ...]]:
        return [(s.name, s.status, s.value, s.attempts, s.started_at, s.finished_at) for s in items]

    async def main() -> None:
        store = trioflow.SQLiteStore(tmp_path / "runs.db", threaded=False)
        await trio.sleep(10)
        with pytest.raises(trioflow.FlowError) as info:
            await flow.run({"n": [0, 1, 2]}, store=store, run_id="i", error_handling="continue")
        live = info.value.result.steps["triple"].items
        loaded = (await store.load("i")).steps["triple"].items
        # the items that succeeded come back with their values and times; the failed one
        # (whose error is in the step's record) with its status
        assert shown(loaded) == [
            ("triple[0]", StepStatus.SUCCEEDED, 0, 1, 10.0, 11.0),
            ("triple[1]", StepStatus.FAILED, None, 0, None, None),
            ("triple[2]", StepStatus.SUCCEEDED, 6, 1, 10.0, 13.0),
        ]
        assert shown(loaded)[0] == shown(live)[0]
        assert shown(loaded)[2] == shown(live)[2]
        fail.clear()
        await flow.run({"n": [0, 1, 2]}, store=store, run_id="i")  # item 1 runs at 13..15
        assert shown((await store.load("i")).steps["triple"].items) == [
            ("triple[0]", StepStatus.SUCCEEDED, 0, 1, 10.0, 11.0),
            ("triple[1]", StepStatus.SUCCEEDED, 3, 1, 13.0, 15.0),
            ("triple[2]", StepStatus.SUCCEEDED, 6, 1, 10.0, 13.0),
        ]
        store.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
