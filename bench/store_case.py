"""Bench case: per-step cost of recording to an SQLiteStore, against no store.

W1  fan-out of n no-op steps + one join
W2  chain of n steps, each passing an int to the next
W4  100 runs at once of a 20-step chain whose steps yield once (a server
    running many small flows against one store)

Each workload runs without a store, with ``SQLiteStore(path)`` (the default:
worker thread, ``fsync=True``) and with ``SQLiteStore(path, fsync=False)``,
interleaved, several times, on trio; figures are medians in µs per step, and
the time includes opening the run and waiting until every record is committed.

With ``--postgres [DSN]``, W1 and W2 also run with ``PostgresStore(DSN)``
(``fsync=True``); without a DSN, a PostgreSQL server from Debian's
``postgresql`` package is started for the bench on 127.0.0.1 (as the tests do),
with its default durability settings.

    python bench/store_case.py [n] [--postgres [DSN]]
"""

from __future__ import annotations

import inspect
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

import trioflow

REPEATS = 11


async def _noop() -> None:
    return None


def _fanout(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("store-w1")
    names = [f"s{i}" for i in range(n)]
    for name in names:
        flow.add(_noop, name=name)
    flow.add(_noop, name="join", after=names)
    flow.plan()
    return flow


def _chain_step(prev: str, yields: bool = False) -> Callable[..., Any]:
    async def step(**kwargs: int) -> int:
        if yields:
            await trio.lowlevel.checkpoint()
        return kwargs[prev] + 1

    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(prev, inspect.Parameter.KEYWORD_ONLY)]
    )
    return step


def _chain(n: int, name: str = "store-w2", *, yields: bool = False) -> trioflow.Flow:
    """A chain of n steps; with ``yields``, each step yields to the scheduler once."""
    flow = trioflow.Flow(name)

    async def first() -> int:
        if yields:
            await trio.lowlevel.checkpoint()
        return 0

    flow.add(first, name="s0")
    for i in range(1, n):
        flow.add(_chain_step(f"s{i - 1}", yields=yields), name=f"s{i}")
    flow.plan()
    return flow


CONCURRENT_RUNS = 100


async def _run(flow: trioflow.Flow, store: Any) -> None:
    if store is None:
        await flow.run()
    else:
        await flow.run(store=store, run_id=uuid.uuid4().hex)


async def _time(flow: trioflow.Flow, store: Any, runs: int = 1) -> float:
    started = time.perf_counter()
    if runs == 1:
        await _run(flow, store)
    else:
        async with trio.open_nursery() as nursery:
            for _ in range(runs):
                nursery.start_soon(_run, flow, store)
    return time.perf_counter() - started


async def store_samples(n: int, repeats: int = REPEATS) -> dict[str, list[float]]:
    """µs per step of W1 and W2 (n steps each) and W4, per repetition, with and without an SQLiteStore.

    Returns:
        ``{"w1_none": [...], "w1_sqlite": [...], "w1_sqlite_nofsync": [...], "w2_...": ...,
        "w4_...": ...}``: one figure per repetition, the three kinds interleaved.
    """
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = trioflow.SQLiteStore(Path(tmp) / "bench.db")
        nofsync = trioflow.SQLiteStore(Path(tmp) / "bench-nofsync.db", fsync=False)
        try:
            workloads = (
                ("w1", _fanout(n), 1, n + 1),
                ("w2", _chain(n), 1, n),
                ("w4", _chain(20, "store-w4", yields=True), CONCURRENT_RUNS, CONCURRENT_RUNS * 20),
            )
            for label, flow, runs, steps in workloads:
                await _time(flow, store, runs)  # warm up: imports, threads, schema
                await _time(flow, nofsync, runs)
                for kind in ("none", "sqlite", "sqlite_nofsync"):
                    samples[f"{label}_{kind}"] = []
                for _ in range(repeats):
                    for kind, where in (("none", None), ("sqlite", store), ("sqlite_nofsync", nofsync)):
                        samples[f"{label}_{kind}"].append(await _time(flow, where, runs) / steps * 1e6)
        finally:
            store.close()
            nofsync.close()
    return samples


async def bench_store(n: int) -> dict[str, float]:
    """µs per step of W1 and W2 (n steps each) and W4, with and without an SQLiteStore.

    Returns:
        ``{"w1_none": ..., "w1_sqlite": ..., "w1_sqlite_nofsync": ..., "w1_ratio": ...,
        "w2_...": ..., "w4_...": ...}``: medians in µs per step, and ``*_ratio`` =
        sqlite / none.
    """
    figures = {key: statistics.median(values) for key, values in (await store_samples(n)).items()}
    for label in ("w1", "w2", "w4"):
        figures[f"{label}_ratio"] = figures[f"{label}_sqlite"] / figures[f"{label}_none"]
        figures[f"{label}_ratio_nofsync"] = figures[f"{label}_sqlite_nofsync"] / figures[f"{label}_none"]
    return figures


async def postgres_samples(n: int, dsn: str, repeats: int = REPEATS) -> dict[str, list[float]]:
    """µs per step of W1 and W2 (n steps each) without a store and with a PostgresStore, per repetition."""
    samples: dict[str, list[float]] = {}
    store = trioflow.PostgresStore(dsn)
    try:
        for label, flow, steps in (("w1", _fanout(n), n + 1), ("w2", _chain(n), n)):
            await _time(flow, store)  # warm up: connections, tables
            samples[f"{label}_none"] = []
            samples[f"{label}_postgres"] = []
            for _ in range(repeats):
                samples[f"{label}_none"].append(await _time(flow, None) / steps * 1e6)
                samples[f"{label}_postgres"].append(await _time(flow, store) / steps * 1e6)
    finally:
        await store.aclose()
    return samples


async def bench_postgres(n: int, dsn: str) -> dict[str, float]:
    """µs per step of W1 and W2 (n steps each) without a store and with a PostgresStore (medians)."""
    figures = {key: statistics.median(values) for key, values in (await postgres_samples(n, dsn)).items()}
    for label in ("w1", "w2"):
        figures[f"{label}_ratio"] = figures[f"{label}_postgres"] / figures[f"{label}_none"]
    return figures


def _postgres_figures(n: int, dsn: str | None) -> dict[str, float]:
    if dsn is not None:
        return trio.run(bench_postgres, n, dsn)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _postgres import Server  # type: ignore[import-not-found]

    server = Server(durable=True)
    try:
        return trio.run(bench_postgres, n, server.new_database())
    finally:
        server.stop()


def main() -> None:
    args = sys.argv[1:]
    postgres: str | bool | None = False
    if "--postgres" in args:
        at = args.index("--postgres")
        following = args[at + 1 : at + 2]
        postgres = following[0] if following and not following[0].isdigit() else None
        del args[at : at + (2 if postgres else 1)]
    n = int(args[0]) if args else 2000
    figures = trio.run(bench_store, n)
    print(f"store bench, n={n}, µs per step (median of {REPEATS}):")
    for label in ("w1", "w2", "w4"):
        print(
            f"  {label.upper()}: no store {figures[f'{label}_none']:7.2f}   "
            f"SQLiteStore {figures[f'{label}_sqlite']:7.2f} ({figures[f'{label}_ratio']:.2f}x)   "
            f"fsync=False {figures[f'{label}_sqlite_nofsync']:7.2f} "
            f"({figures[f'{label}_ratio_nofsync']:.2f}x)"
        )
    if postgres is not False:
        pg = _postgres_figures(n, postgres if isinstance(postgres, str) else None)
        print(f"PostgresStore (loopback server), n={n}, µs per step (median of {REPEATS}):")
        for label in ("w1", "w2"):
            print(
                f"  {label.upper()}: no store {pg[f'{label}_none']:7.2f}   "
                f"PostgresStore {pg[f'{label}_postgres']:7.2f} ({pg[f'{label}_ratio']:.2f}x)"
            )


if __name__ == "__main__":
    main()
