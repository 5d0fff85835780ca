"""A process that starts a durable run and holds it (for tests/test_store_faults.py).

    python tests/store_holder.py DATABASE RUN_ID

DATABASE is an SQLite file, or ``postgres:`` and a libpq connection string.

The run's only step prints ``started`` and, when the environment variable
``TRIOFLOW_TEST_HOLD`` is set, waits until a line arrives on standard input;
then it returns ``"held"``. The process prints ``done held`` at the end.
"""

from __future__ import annotations

import os
import sys

import trio

import trioflow


def build() -> trioflow.Flow:
    flow = trioflow.Flow("holder")

    @flow.step
    async def hold() -> str:
        print("started", flush=True)
        if os.environ.get("TRIOFLOW_TEST_HOLD"):
            await trio.to_thread.run_sync(sys.stdin.readline)
        return "held"

    return flow


def open_store(database: str) -> trioflow.SQLiteStore | trioflow.PostgresStore:
    if database.startswith("postgres:"):
        return trioflow.PostgresStore(database.removeprefix("postgres:"))
    return trioflow.SQLiteStore(database)


async def main(database: str, run_id: str) -> None:
    store = open_store(database)
    result = await build().run(store=store, run_id=run_id)
    store.close()
    print("done", result["hold"], flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
