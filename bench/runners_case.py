"""Bench case: where steps run (issue 14 item 6).

CPU  a fan-out of 8 CPU-bound steps of about 0.2 s each (pure Python, holds
     the GIL): sequential (a plain loop), runner="thread", runner="process",
     and a DaskRunner on a LocalCluster of 2 worker processes; the figures are
     wall times and the speedups of process and Dask over thread and over
     sequential. On a 2-core machine the best possible speedup is 2x; a bare
     ProcessPoolExecutor(2) on the same work shows what the machine gives at
     the moment (other load on the machine takes its share).
OVH  per-step overhead of each runner on no-op steps (a fan-out of n plain
     functions that return None), in µs per step, against async steps.
KILL fail_fast kill latency of runner="process": a step spinning for 10 s, a
     sibling raising once the spinner runs; ms from the raise to the run
     raising (the spinner's worker process is killed in between), on trio
     (trio-parallel) and on asyncio (anyio's process workers).

Each figure is a median of several runs on trio, after a warm-up run that
starts the worker processes. Timing on a busy machine is noisy.

    python bench/runners_case.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import trio

import trioflow

sys.path.insert(0, str(Path(__file__).parent))

import runners_steps as work  # module-level functions the workers import

WIDTH = 8
REPEATS = 3


async def _median_time(fn: Callable[[], Awaitable[Any]], repeats: int = REPEATS) -> float:
    await fn()  # warm-up: worker processes start, imports happen
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fanout(fn: Callable[..., Any], width: int, runner: Any, name: str) -> trioflow.Flow:
    flow = trioflow.Flow(name)
    for i in range(width):
        if runner is None:
            flow.add(_as_async(fn), name=f"s{i}")
        else:
            flow.add(fn, name=f"s{i}", runner=runner)
    flow.plan()
    return flow


def _as_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def step(**kwargs: Any) -> Any:
        return fn(**kwargs)

    step.__signature__ = __import__("inspect").signature(fn)  # type: ignore[attr-defined]
    step.__name__ = fn.__name__
    return step


async def bench_runners(n_noop: int = 200) -> list[tuple[str, str, str, str, str]]:
    """The rows for bench/run.py's table: (workload, ours, baseline, ratio, target)."""
    from distributed import Client, LocalCluster

    rows: list[tuple[str, str, str, str, str]] = []
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster, set_as_default=False)
    pool = ProcessPoolExecutor(2)
    try:
        dask = trioflow.DaskRunner(client)
        loops = work.calibrate(0.2)  # once the cluster has started (its start takes CPU)

        async def sequential() -> None:
            for _ in range(WIDTH):
                work.burn_loops(loops)

        async def bare_pool() -> None:  # what the machine gives without trioflow
            await trio.to_thread.run_sync(lambda: list(pool.map(work.burn_loops, [loops] * WIDTH)))

        inputs = {"loops": loops}
        configs: dict[str, Callable[[], Awaitable[Any]]] = {"sequential": sequential, "pool": bare_pool}
        for label, runner in (("thread", "thread"), ("process", "process"), ("dask", dask)):
            flow = _fanout(work.burn_loops, WIDTH, runner, f"cpu-{label}")
            configs[label] = lambda flow=flow: flow.run(inputs)
        samples: dict[str, list[float]] = {label: [] for label in configs}
        for fn in configs.values():
            await fn()  # warm-up: worker processes start, imports happen
        for _ in range(REPEATS + 2):  # interleaved, so load from elsewhere hits all alike
            for label, fn in configs.items():
                start = time.perf_counter()
                await fn()
                samples[label].append(time.perf_counter() - start)
        times = {label: statistics.median(v) for label, v in samples.items()}
        t_seq = times["sequential"]
        for label in ("pool", "thread", "process", "dask"):
            rows.append(
                (
                    f"CPU {WIDTH} x 0.2 s, " + (
                        "bare ProcessPoolExecutor(2)" if label == "pool" else f"runner={label}"
                    ),
                    f"{times[label]:.2f} s",
                    f"{t_seq:.2f} s (sequential)",
                    f"{t_seq / times[label]:.2f}x over sequential, "
                    f"{times['thread'] / times[label]:.2f}x over thread",
                    "process, dask ~2x on 2 cores",
                )
            )

        base_flow = _fanout(work.noop, n_noop, None, "noop-async")
        t_async = await _median_time(lambda: base_flow.run()) / n_noop * 1e6
        rows.append((f"OVH {n_noop} no-op steps, async def", f"{t_async:.1f} µs", "-", "1.00x", "none set"))
        for label, runner in (("thread", "thread"), ("process", "process"), ("dask", dask)):
            flow = _fanout(work.noop, n_noop, runner, f"noop-{label}")
            per_step = await _median_time(lambda flow=flow: flow.run()) / n_noop * 1e6
            rows.append(
                (
                    f"OVH {n_noop} no-op steps, runner={label}",
                    f"{per_step:.1f} µs",
                    f"{t_async:.1f} µs (async def)",
                    f"{per_step / t_async:.1f}x",
                    "none set",
                )
            )
    finally:
        pool.shutdown()
        client.close()
        cluster.close()

    latencies = [await _kill_latency_ms() for _ in range(5)]
    # the same on asyncio (anyio's process workers), in a process of its own
    done = await trio.run_process([sys.executable, __file__, "--kill-asyncio"], capture_stdout=True)
    on_asyncio = [float(x) for x in done.stdout.split()]
    for backend, figures in (("trio", latencies), ("asyncio", on_asyncio)):
        rows.append(
            (
                f"KILL fail_fast stops a spinning process step ({backend})",
                f"{statistics.median(figures):.0f} ms (max {max(figures):.0f})",
                "-",
                "-",
                "< 1000 ms",
            )
        )
    return rows


async def _kill_latencies(times: int) -> list[float]:
    return [await _kill_latency_ms() for _ in range(times)]


async def _kill_latency_ms() -> float:
    flow = trioflow.Flow("kill")
    pid_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"trioflow-bench-{os.getpid()}.pid"
    pid_file.unlink(missing_ok=True)
    flow.add(work.spin, runner="process")
    raised_at: list[float] = []

    @flow.step
    async def boom() -> None:
        await anyio.to_thread.run_sync(work.wait_for, str(pid_file))
        await anyio.sleep(0.05)  # the spinner is well into its loop
        raised_at.append(time.perf_counter())
        raise RuntimeError("sibling failed")

    try:
        await flow.run({"seconds": 10.0, "pid_file": str(pid_file)})
    except trioflow.FlowError:
        pass
    ended = time.perf_counter()
    pid_file.unlink(missing_ok=True)
    return (ended - raised_at[0]) * 1e3


def _print(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("workload", "figure", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--kill-asyncio"]:
        print(*anyio.run(_kill_latencies, 5, backend="asyncio"))
        sys.exit(0)
    _print(trio.run(bench_runners))
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
