"""trioflow benchmarks: per-step overhead as ratios against hand-written raw trio.

Every workload runs trioflow and its raw-trio counterpart in the same process,
interleaved, several times; the table reports the median of each and the ratio
``trioflow / raw trio`` (below 1.0 means trioflow is cheaper than the
hand-written version).

    python bench/run.py            # all cases
    python bench/run.py --quick    # fewer repeats

W1  fan-out of N no-op steps + one join        raw: task per step + CapacityLimiter
W1m the same under max_concurrent=M            raw: task per step + CapacityLimiter(M)
W2  chain of N steps                           raw: task per step + Event chain
W3  fail-fast latency: 10 steps sleeping 2 s, one raising at 50 ms (ms from raise to run raising)
MAP trioflow.map over N items, max_concurrent=10  raw: task per item + CapacityLimiter(10)
STORE W1/W2 recording every step to an SQLiteStore, against the same flow without a store
RATE/KEYED W1 with a huge-rate RateLimit / a 100-key KeyedLimiter on every step, against plain W1
PIPE  virtual-time makespan of a two-stage map of 1000 items, pipelined against whole-list
      (and to a PostgresStore on a loopback server, when psycopg and Debian's postgresql are there)
OBS W1 with a ProgressDisplay, OpenTelemetry spans, open_run's event stream (see bench/observers_case.py)
CPU/OVH/KILL where steps run: threads, processes, Dask (see bench/runners_case.py)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import trioflow

N = 2000


async def noop() -> None:
    return None


# -- W1: fan-out + join --------------------------------------------------------------


def build_fanout(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("w1")
    names = []
    for i in range(n):
        flow.add(noop, name=f"s{i}")
        names.append(f"s{i}")
    flow.add(noop, name="join", after=names)
    flow.plan()  # compile once; a flow is a reusable definition
    return flow


async def raw_fanout(n: int, limit: int | None) -> None:
    limiter = trio.CapacityLimiter(limit if limit is not None else n)
    results: list[Any] = [None] * n

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await noop()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    async with limiter:
        await noop()


# -- W2: chain -----------------------------------------------------------------------


async def inc(x: int) -> int:
    return x + 1


def build_chain(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("w2")

    async def first() -> int:
        return 0

    flow.add(first, name="s0")
    for i in range(1, n):
        prev = f"s{i - 1}"
        # a step whose one parameter names the previous step
        fn = _make_chain_step(prev)
        flow.add(fn, name=f"s{i}")
    flow.plan()
    return flow


def _make_chain_step(prev: str) -> Callable[..., Awaitable[int]]:
    namespace: dict[str, Any] = {}
    exec(f"async def step({prev}):\n    return {prev} + 1\n", namespace)
    return namespace["step"]  # type: ignore[no-any-return]


async def raw_chain(n: int) -> None:
    events = [trio.Event() for _ in range(n)]
    values = [0] * n

    async def one(i: int) -> None:
        if i:
            await events[i - 1].wait()
            values[i] = await inc(values[i - 1])
        events[i].set()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    assert values[-1] == n - 1


# -- W3: fail-fast latency -------------------------------------------------------------


async def sleeper() -> None:
    await trio.sleep(2)


def make_boom(raised_at: list[float]) -> Callable[[], Awaitable[None]]:
    """A step that sleeps 50 ms, notes the moment it raises, and raises."""

    async def boom() -> None:
        await trio.sleep(0.05)
        raised_at.append(time.perf_counter())
        raise RuntimeError("boom")

    return boom


def build_failfast(raised_at: list[float]) -> trioflow.Flow:
    flow = trioflow.Flow("w3")
    for i in range(10):
        flow.add(sleeper, name=f"sleep{i}")
    flow.add(make_boom(raised_at), name="boom")
    return flow


async def failfast_latency_ms(flow: trioflow.Flow, raised_at: list[float]) -> float:
    raised_at.clear()
    try:
        await flow.run()
    except trioflow.FlowError as exc:
        end = time.perf_counter()
        assert len(exc.result.cancelled) == 10, exc.result.cancelled
        return (end - raised_at[0]) * 1000
    raise AssertionError("the flow should have failed")


async def raw_failfast_latency_ms(raised_at: list[float]) -> float:
    raised_at.clear()
    end = 0.0
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(sleeper)
            nursery.start_soon(make_boom(raised_at))
    except* RuntimeError:
        end = time.perf_counter()
    return (end - raised_at[0]) * 1000


# -- MAP -----------------------------------------------------------------------------


async def raw_map(n: int, limit: int) -> list[Any]:
    limiter = trio.CapacityLimiter(limit)
    results: list[Any] = [None] * n

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await inc(i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


# -- harness --------------------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def compare(
    label: str,
    ours: Callable[[], Awaitable[Any]],
    raw: Callable[[], Awaitable[Any]],
    n: int,
    repeats: int,
) -> tuple[str, float, float]:
    await ours()  # warm up
    await raw()
    t_ours: list[float] = []
    t_raw: list[float] = []
    for _ in range(repeats):
        t_ours.append(await timed(ours))
        t_raw.append(await timed(raw))
    us_ours = statistics.median(t_ours) / n * 1e6
    us_raw = statistics.median(t_raw) / n * 1e6
    return label, us_ours, us_raw


async def main(repeats: int, n: int) -> int:
    rows: list[tuple[str, str, str, str, str]] = []

    fan = build_fanout(n)
    label, ours, raw = await compare(
        f"W1 fan-out {n} + join", lambda: fan.run(), lambda: raw_fanout(n, None), n + 1, repeats
    )
    rows.append((label, f"{ours:.2f} µs", f"{raw:.2f} µs", f"{ours / raw:.2f}x", "<= 1.0x (aim 0.5x)"))

    m = 50
    label, ours, raw = await compare(
        f"W1m fan-out {n} + join, m={m}",
        lambda: fan.run(max_concurrent=m),
        lambda: raw_fanout(n, m),
        n + 1,
        repeats,
    )
    rows.append((label, f"{ours:.2f} µs", f"{raw:.2f} µs", f"{ours / raw:.2f}x", "<= 1.0x (aim 0.5x)"))

    chain = build_chain(n)
    label, ours, raw = await compare(f"W2 chain {n}", lambda: chain.run(), lambda: raw_chain(n), n, repeats)
    rows.append((label, f"{ours:.2f} µs", f"{raw:.2f} µs", f"{ours / raw:.2f}x", "<= 1.0x (aim 0.5x)"))

    raised_at: list[float] = []
    ff = build_failfast(raised_at)
    lat_ours = [await failfast_latency_ms(ff, raised_at) for _ in range(max(5, repeats * 2))]
    lat_raw = [await raw_failfast_latency_ms(raised_at) for _ in range(max(5, repeats * 2))]
    med_ours, med_raw = statistics.median(lat_ours), statistics.median(lat_raw)
    rows.append(
        (
            "W3 fail-fast latency (median)",
            f"{med_ours:.3f} ms",
            f"{med_raw:.3f} ms",
            f"{med_ours / med_raw:.2f}x",
            "<= 2 ms",
        )
    )

    map_fn = getattr(trioflow, "map", None)
    if map_fn is not None:
        items = list(range(n))
        label, ours, raw = await compare(
            f"MAP {n} items, max_concurrent=10",
            lambda: map_fn(inc, items, max_concurrent=10),
            lambda: raw_map(n, 10),
            n,
            repeats,
        )
        rows.append((label, f"{ours:.2f} µs", f"{raw:.2f} µs", f"{ours / raw:.2f}x", "<= 1.0x (aim 0.5x)"))

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from store_case import bench_store  # type: ignore[import-not-found]
    except ImportError:
        bench_store = None
    if bench_store is not None:
        figures = await bench_store(n)
        for w, what, target in (
            ("w1", "W1", "<= 2.0x"),
            ("w2", "W2", "<= 2.0x"),
            ("w4", "W4 100 runs at once", "none set"),
        ):
            ours, base = figures[f"{w}_sqlite"], figures[f"{w}_none"]
            rows.append(
                (
                    f"STORE {what}: SQLiteStore vs no store",
                    f"{ours:.2f} µs",
                    f"{base:.2f} µs (no store)",
                    f"{ours / base:.2f}x",
                    target,
                )
            )

    try:
        from limits_case import bench_gates, pipeline_makespans  # type: ignore[import-not-found]
    except ImportError:
        bench_gates = None
    if bench_gates is not None:
        gates = await bench_gates(n)
        for key, what in (("rate", "RATE W1, huge-rate RateLimit"), ("keyed", "KEYED W1, 100-key KeyedLimiter")):
            rows.append(
                (
                    f"{what} vs plain W1",
                    f"{gates[key]:.2f} µs",
                    f"{gates['plain']:.2f} µs (plain)",
                    f"{gates[key] / gates['plain']:.2f}x",
                    "small",
                )
            )
        spans = await trio.to_thread.run_sync(pipeline_makespans)  # runs trio (a MockClock) of its own
        for limit in (None, 50):
            ours = spans[f"pipelined, max_concurrent={limit}"]
            whole = spans[f"whole list, max_concurrent={limit}"]
            rows.append(
                (
                    f"PIPE 1000 items, max_concurrent={limit} (virtual s)",
                    f"{ours:.1f} s",
                    f"{whole:.1f} s (whole list)",
                    f"{ours / whole:.2f}x",
                    "< 1.0x",
                )
            )
    from build_case import bench_build, bench_import  # type: ignore[import-not-found]

    rows.extend(bench_build(n, repeats))
    rows.extend(bench_import(repeats))

    import importlib.util

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # (its parent package is missing)
            return False

    import glob

    if installed("psycopg") and glob.glob("/usr/lib/postgresql/*/bin/initdb"):  # Debian's postgresql
        from store_case import bench_postgres  # type: ignore[import-not-found]

        sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
        from _postgres import Server  # type: ignore[import-not-found]

        server = await trio.to_thread.run_sync(lambda: Server(durable=True))  # a loopback server
        try:
            pg = await bench_postgres(n, await trio.to_thread.run_sync(server.new_database))
        finally:
            await trio.to_thread.run_sync(server.stop)
        for w, what in (("w1", "W1"), ("w2", "W2")):
            ours, base = pg[f"{w}_postgres"], pg[f"{w}_none"]
            rows.append(
                (f"STORE {what}: PostgresStore (loopback) vs no store", f"{ours:.2f} µs",
                 f"{base:.2f} µs (no store)", f"{ours / base:.2f}x", "none set")
            )

    if installed("rich") and installed("opentelemetry.sdk"):  # nox -s bench installs them
        from observers_case import bench_observers  # type: ignore[import-not-found]

        rows.extend(await bench_observers(fan, n, repeats))

    if importlib.util.find_spec("distributed") is not None:  # pip install '.[dask,process]'
        from runners_case import bench_runners  # type: ignore[import-not-found]

        rows.extend(await bench_runners())

    header = ("workload", "trioflow / step", "raw trio / step", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(f"trio {trio.__version__}, trioflow {trioflow.__version__}, Python {sys.version.split()[0]}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("-n", type=int, default=N, help=f"steps per workload (default {N})")
    args = parser.parse_args()
    sys.exit(trio.run(main, 3 if args.quick else 9, args.n))
