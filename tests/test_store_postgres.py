"""PostgresStore against a real PostgreSQL server (issue 14 item 4): what only a server store
does. The store suite itself (tests/test_store.py) runs against it too, parametrized."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trioflow
from trioflow import StoreError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import store_holder

pytestmark = pytest.mark.postgres

HOLDER = Path(__file__).resolve().parent / "store_holder.py"
ROOT = Path(__file__).resolve().parent.parent


def test_a_run_id_runs_in_one_process_at_a_time_and_resumes_in_another(postgres_dsn: str) -> None:
    env = {**os.environ, "TRIOFLOW_TEST_HOLD": "1", "PYTHONPATH": str(ROOT)}
    flow = store_holder.build()

    async def start(run_id: str) -> Any:
        async with trioflow.PostgresStore(postgres_dsn) as store:
            return await flow.run(store=store, run_id=run_id)

    async def statuses() -> dict[str, str]:
        async with trioflow.PostgresStore(postgres_dsn) as store:
            return {info.run_id: info.status for info in await store.runs()}

    holder = subprocess.Popen(
        [sys.executable, str(HOLDER), f"postgres:{postgres_dsn}", "shared"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "started\n"
        with pytest.raises(StoreError, match=(
            r"^run 'shared' is already running in another process \(recording to "
            r"<trioflow.PostgresStore '.*'>\); wait for it to end before resuming it, or give this "
            r"run another run_id$"
        )):
            trio.run(start, "shared")
        assert trio.run(start, "other")["hold"] == "held"  # other run ids are free
        holder.kill()  # the server ends the dead process's session, and with it the lock
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    assert trio.run(statuses)["shared"] == "running"  # started there, never ended
    assert trio.run(start, "shared")["hold"] == "held"  # resumed here
    assert trio.run(statuses)["shared"] == "succeeded"


def test_the_dsn_password_stays_out_of_messages(postgres_server: Any) -> None:
    store = trioflow.PostgresStore(postgres_server.dsn() + " password=s3cret")
    assert "s3cret" not in repr(store)
    store.close()


def test_an_unreachable_server_is_a_store_error_before_any_step() -> None:
    ran: list[str] = []
    flow = trioflow.Flow("nowhere")

    @flow.step
    async def step() -> int:
        ran.append("step")
        return 1

    async def main() -> None:
        async with trioflow.PostgresStore("host=127.0.0.1 port=1 user=x dbname=x connect_timeout=2") as store:
            await flow.run(store=store, run_id="r")

    with pytest.raises(StoreError, match=r"cannot connect to the server"):
        trio.run(main)
    assert ran == []


def test_a_cache_keeps_its_entries_in_the_database(postgres_dsn: str) -> None:
    calls: list[str] = []

    def build() -> trioflow.Flow:
        flow = trioflow.Flow("cached")
        cache = trioflow.Cache(store=store)

        @flow.step(cache=cache)
        async def shout(word: str) -> str:
            calls.append(word)
            return word.upper()

        return flow

    async def main() -> list[str]:
        out = []
        for _ in range(2):
            out.append((await build().run({"word": "hi"}))["shout"])
        return out

    store = trioflow.PostgresStore(postgres_dsn)
    assert trio.run(main) == ["HI", "HI"]
    store.close()
    store = trioflow.PostgresStore(postgres_dsn)  # another process would find it too
    assert trio.run(main) == ["HI", "HI"]
    store.close()
    assert calls == ["hi"]


def test_a_damaged_run_gets_its_own_error_and_other_runs_go_on(postgres_dsn: str) -> None:
    # issue 9 item 11, on PostgreSQL: the start of each run is a savepoint of its own
    import psycopg

    flow = trioflow.Flow("damaged")

    @flow.step
    async def only() -> int:
        return 1

    async def run(run_id: str) -> Any:
        async with trioflow.PostgresStore(postgres_dsn) as store:
            return await flow.run(store=store, run_id=run_id)

    trio.run(run, "bad")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("UPDATE trioflow_runs SET steps = 'not json' WHERE run_id = 'bad'")
    with pytest.raises(StoreError, match=(
        r"^<trioflow.PostgresStore '.*'>: the records of run 'bad' are damaged \(JSONDecodeError\(.*\)\); "
        r"start the run over with `await store.forget\('bad'\)`$"
    )):
        trio.run(run, "bad")
    assert trio.run(run, "good")["only"] == 1
