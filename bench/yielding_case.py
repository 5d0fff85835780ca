"""Bench case: a fan-out of steps that each await once, at 1k, 10k and 100k steps.

Real steps await (an LLM, HTTP or tool call). Each step here awaits one
schedule point (``trio.lowlevel.checkpoint()``), with no limit: it gives its
worker back at once, so trioflow runs the fan-out with the workers already
there, one more joining each batch, where hand-written trio starts a task per
step (a step that blocks longer keeps its worker, and trioflow then starts a
task per step too, doubling them each batch: ``tests/test_scouts.py``). The
baseline is raw trio written by hand: a task per step inside one nursery, each
holding a ``CapacityLimiter(N)`` around its await. The flow is built once per
size, outside the timing (a flow is reusable).

Rows: the ratio to raw trio at each size (target <= 1.0x), trioflow's µs per
step at each size, and the per-step cost at 100k over that at 1k (target:
flat, within 1.3x), each as min/median/max over interleaved repetitions.

    python bench/yielding_case.py [--quick] [--gc-off] [sizes ...]
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.lowlevel
from measure import Row, at_most, compared, figure

import trioflow

SIZES = (1000, 10_000, 100_000)


async def step() -> None:
    await trio.lowlevel.checkpoint()


def build(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("yielding")
    for i in range(n):
        flow.add(step, name=f"s{i}")
    flow.plan()
    return flow


async def raw(n: int) -> None:
    limiter = trio.CapacityLimiter(n)

    async def one() -> None:
        async with limiter:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)


# --gc-off: the cyclic garbage collector stays off during each timed call, to
# tell its share (its full collections scan every live object, so they cost
# more per step the bigger the run) from the engine's own
COLLECTOR_OFF = False


async def _timed(fn: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call, after a collection."""
    gc.collect()
    if COLLECTOR_OFF:
        gc.disable()
    try:
        cpu, start = time.process_time(), time.perf_counter()
        await fn()
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        gc.enable()


async def bench_yielding(repeats: int, sizes: tuple[int, ...] = SIZES) -> list[Row]:
    flows = {n: build(n) for n in sizes}
    await flows[sizes[0]].run()  # warm up (the smallest size; the others are costly)
    await raw(sizes[0])
    ours: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
    base: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
    for _ in range(repeats):  # each repetition: every size, trioflow then raw trio
        for n in sizes:
            ours[n].append(await _timed(flows[n].run))
            base[n].append(await _timed(partial(raw, n)))
    rows = [
        compared(
            f"YIELD fan-out {n} awaiting steps", [w for w, _ in ours[n]], [w for w, _ in base[n]],
            scale=1e6 / n, target=at_most(1.0), cpu=([c for _, c in ours[n]], [c for _, c in base[n]]),
        )
        for n in sizes
    ]
    for n in sizes:
        rows.append(
            figure(f"YIELD {n}: trioflow per step", [w / n * 1e6 for w, _ in ours[n]], unit="µs",
                   cpu=[c / n * 1e6 for _, c in ours[n]])
        )
    lo, hi = sizes[0], sizes[-1]
    flat = [(a[0] / hi) / (b[0] / lo) for a, b in zip(ours[hi], ours[lo], strict=True)]
    flat_cpu = [(a[1] / hi) / (b[1] / lo) for a, b in zip(ours[hi], ours[lo], strict=True)]
    rows.append(
        figure(f"YIELD per step, {hi} over {lo} (same repetition)", flat, unit="x", target=at_most(1.3),
               cpu=flat_cpu)
    )
    return rows


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    parser.add_argument("sizes", type=int, nargs="*", help="fan-out widths (default 1000 10000 100000)")
    parser.add_argument("--gc-off", action="store_true", help="the garbage collector off while timing")
    args = parser.parse_args()
    COLLECTOR_OFF = args.gc_off
    print(render(trio.run(bench_yielding, 5 if args.quick else 9, tuple(args.sizes) or SIZES)))
