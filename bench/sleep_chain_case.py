"""Bench case: a chain of 20 steps that each sleep 10 ms, on the real clock.

Beside real awaits, what share of the wall time is trioflow's own? The
baseline is the same awaits written by hand in one task (20 times
``await trio.sleep(0.01)``, passing a value along), in the same process,
interleaved. trioflow's share of a repetition is ``(run - by hand) / run``;
the target (seed 003's bar for sequential mode) is at most 0.2 %, about
440 µs of a 220 ms run.

Sleeps wake up late by an amount the operating system decides, for both
alike; on a busy machine that scatters each run's wall time by milliseconds,
ten times the target. So the share is measured twice: on the wall clock, as
defined, and by the process's CPU time (``(CPU of run - CPU by hand) / wall
time of run``), which counts the work trioflow adds (its bookkeeping, its
extra trips through trio's scheduler) without the wake-up noise. The target
judges the CPU-time share; the wall-clock share is shown beside it, with its
spread. A second row gives ``run - by hand`` in µs (the run's fixed cost
plus each step's hand-over after a sleep), both ways.

    python bench/sleep_chain_case.py [--quick]
"""

from __future__ import annotations

import gc
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable

import trio
from measure import Row, at_most, figure

import trioflow

STEPS = 20
SLEEP_S = 0.01


def _step(prev: str | None) -> Callable[..., Awaitable[int]]:
    async def step(**kwargs: int) -> int:
        await trio.sleep(SLEEP_S)
        return kwargs[prev] + 1 if prev else 1

    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(prev, inspect.Parameter.KEYWORD_ONLY)] if prev else []
    )
    return step


def build() -> trioflow.Flow:
    flow = trioflow.Flow("sleep_chain")
    for i in range(STEPS):
        flow.add(_step(f"s{i - 1}" if i else None), name=f"s{i}")
    flow.plan()
    return flow


async def by_hand() -> int:
    value = 0
    for _ in range(STEPS):
        await trio.sleep(SLEEP_S)
        value += 1
    return value


async def _timed(fn: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) of one call."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - wall, time.process_time() - cpu


async def bench_sleep_chain(repeats: int) -> list[Row]:
    flow = build()
    await flow.run()  # warm up
    await by_hand()
    runs: list[tuple[float, float]] = []
    hands: list[tuple[float, float]] = []
    for _ in range(repeats):
        runs.append(await _timed(flow.run))
        hands.append(await _timed(by_hand))
    wall_share = [(r[0] - h[0]) / r[0] * 100 for r, h in zip(runs, hands, strict=True)]
    cpu_share = [(r[1] - h[1]) / r[0] * 100 for r, h in zip(runs, hands, strict=True)]
    wall_extra = [(r[0] - h[0]) * 1e6 for r, h in zip(runs, hands, strict=True)]
    cpu_extra = [(r[1] - h[1]) * 1e6 for r, h in zip(runs, hands, strict=True)]
    hand_ms = f"{statistics.median(h[0] for h in hands) * 1e3:.1f} ms (by hand)"
    what = f"SLEEP chain {STEPS} x {SLEEP_S * 1e3:g} ms"
    return [
        figure(f"{what}: trioflow's share of the run", wall_share, unit="%", fmt=".2f", base=hand_ms,
               cpu=cpu_share, judge_cpu=True, target=at_most(0.2, "%")),
        figure(f"{what}: run minus by hand", wall_extra, unit="µs", fmt=".0f", cpu=cpu_extra),
    ]


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="7 repetitions instead of 15")
    args = parser.parse_args()
    print(render(trio.run(bench_sleep_chain, 7 if args.quick else 15)))
