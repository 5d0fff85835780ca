"""Bench case: where steps run (issue 14 item 6).

CPU  a fan-out of 8 CPU-bound steps of about 0.2 s each (0.1 s with --quick;
     pure Python, holds the GIL): sequential (a plain loop), runner="thread", runner="process",
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

Each figure is min/median/max over several runs on trio, the configurations
taking turns, after a warm-up run that starts the worker processes. Timing on
a busy machine is noisy.

    python bench/runners_case.py [--quick]
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
from measure import Row, alternate, below, compared, figure, render, spread

WIDTH = 8
REPEATS = 5


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


async def bench_runners(repeats: int = REPEATS, seconds: float = 0.2, n_noop: int = 200) -> list[Row]:
    """The rows for bench/run.py's table; CPU steps of about ``seconds`` each."""
    from distributed import Client, LocalCluster

    rows: list[Row] = []
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster, set_as_default=False)
    pool = ProcessPoolExecutor(2)
    try:
        dask = trioflow.DaskRunner(client)
        loops = work.calibrate(seconds)  # once the cluster has started (its start takes CPU)

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
        # warm-up (worker processes start, imports happen), then interleaved, so
        # load from elsewhere hits all alike
        t = await alternate(configs, repeats)
        seq = t["sequential"]
        for label in ("pool", "thread", "process", "dask"):
            over_seq = [s / x for s, x in zip(seq, t[label], strict=True)]
            over_thread = [s / x for s, x in zip(t["thread"], t[label], strict=True)]
            rows.append(
                Row(
                    f"CPU {WIDTH} x {seconds:g} s, "
                    + ("bare ProcessPoolExecutor(2)" if label == "pool" else f"runner={label}")
                    + ": speedup over sequential; over thread",
                    f"{statistics.median(t[label]):.2f} s",
                    f"{statistics.median(seq):.2f} s (sequential)",
                    f"{spread(over_seq, unit='x')}; {spread(over_thread, unit='x')}",
                    "process, dask ~2x on 2 cores",
                    "",
                )
            )

        noop_configs: dict[str, Callable[[], Awaitable[Any]]] = {}
        for label, runner in (("async def", None), ("thread", "thread"), ("process", "process"), ("dask", dask)):
            flow = _fanout(work.noop, n_noop, runner, f"noop-{label}")
            noop_configs[label] = lambda flow=flow: flow.run()
        t = await alternate(noop_configs, repeats)
        for label in ("thread", "process", "dask"):
            rows.append(
                compared(
                    f"OVH {n_noop} no-op steps, runner={label}", t[label], t["async def"], scale=1e6 / n_noop,
                    fmt=".1f", base_note=" (async def)",
                )
            )
    finally:
        pool.shutdown()
        client.close()
        cluster.close()

    latencies = await _kill_latencies(repeats)
    # the same on asyncio (anyio's process workers), in a process of its own
    done = await trio.run_process(
        [sys.executable, __file__, "--kill-asyncio", str(repeats)], capture_stdout=True
    )
    on_asyncio = [float(x) for x in done.stdout.split()]
    for backend, figures in (("trio", latencies), ("asyncio", on_asyncio)):
        rows.append(
            figure(
                f"KILL fail_fast stops a spinning process step ({backend})", figures, unit="ms", fmt=".0f",
                target=below(1000, "ms"),
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9, CPU steps of 0.1 s")
    parser.add_argument("--kill-asyncio", type=int, metavar="TIMES", help=argparse.SUPPRESS)  # (bench_runners)
    args = parser.parse_args()
    if args.kill_asyncio is not None:
        print(*anyio.run(_kill_latencies, args.kill_asyncio, backend="asyncio"))
        sys.exit(0)
    print(render(trio.run(bench_runners, 5 if args.quick else 9, 0.1 if args.quick else 0.2)))
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
