"""Bench case: the cost of rate limits and keyed limits, and the gain of pipelining.

W1 rate   W1 fan-out (n no-op steps + a join) whose steps each take a token from
          a RateLimit with a huge rate (it never holds a step back)
W1 keyed  the same, each step holding a slot of a KeyedLimiter keyed by
          step index modulo 100 (100 keys, never full)
Both are medians in µs per step, as ratios to the plain W1 in the same process,
interleaved. PIPE is the virtual-time makespan (trio's MockClock, so exact and
free of machine noise) of a two-stage map of 1000 items with uneven durations,
the second stage mapping over the first: pipelined (item i of the second
stage starts when item i of the first is done) against the same work through
a plain step that collects the first stage's list (no pipelining); and
pipelined again with a ``when=`` condition on the second stage (it reads a
step that is done at once, so the pipe stays on).

    python bench/limits_case.py [n]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

import trioflow

REPEATS = 9


async def _noop() -> None:
    return None


def _fanout(n: int, **options: Any) -> trioflow.Flow:
    flow = trioflow.Flow("w1")
    names = []
    for i in range(n):
        extra = dict(options)
        if "limit_key" in extra:
            extra["limit_key"] = (lambda k: lambda: k)(i % 100)
        flow.add(_noop, name=f"s{i}", **extra)
        names.append(f"s{i}")
    flow.add(_noop, name="join", after=names)
    flow.plan()
    return flow


def gate_cases(n: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Runs of plain W1, W1 with a huge-rate RateLimit and W1 with a 100-key KeyedLimiter."""
    plain = _fanout(n)
    rated = _fanout(n, limiter="rate")
    keyed = _fanout(n, limiter="host", limit_key=True)
    rate = trioflow.RateLimit(calls=1e12, per=1.0)
    host = trioflow.KeyedLimiter(per_key=n)
    return {
        "plain": lambda: plain.run(),
        "rate": lambda: rated.run(limiters={"rate": rate}),
        "keyed": lambda: keyed.run(limiters={"host": host}),
    }


async def bench_gates(n: int) -> dict[str, float]:
    """µs per step of plain W1, W1 with a RateLimit and W1 with a KeyedLimiter."""
    cases = gate_cases(n)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        await fn()  # warm up
    for _ in range(REPEATS):
        for name, fn in cases.items():
            start = time.perf_counter()
            await fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) / (n + 1) * 1e6 for k, v in times.items()}


def _durations(items: int) -> tuple[list[float], list[float]]:
    up = [((i * 7919) % 100 + 1) / 10 for i in range(items)]
    down = [((i * 104729) % 100 + 1) / 10 for i in range(items)]
    return up, down


def _two_stage(
    items: int, pipelined: bool, max_concurrent: int | None, conditional: bool = False
) -> trioflow.Flow:
    up_s, down_s = _durations(items)
    flow = trioflow.Flow("pipe")

    @flow.step
    async def route() -> str:
        return "go"

    @flow.step(map_over="items", max_concurrent=max_concurrent)
    async def up(items: int) -> int:
        await trio.sleep(up_s[items])
        return items

    source = "up"
    if not pipelined:

        @flow.step
        async def collected(up: list[int]) -> list[int]:
            return up

        source = "collected"

    async def down(item: int) -> int:
        await trio.sleep(down_s[item])
        return item

    when = (lambda route: route == "go") if conditional else None
    flow.add(down, bind={"item": source}, map_over=source, max_concurrent=max_concurrent, when=when)
    return flow


def pipeline_makespans(items: int = 1000) -> dict[str, float]:
    """Virtual makespans of the two-stage map, pipelined and not, unlimited and 50 at once."""
    out: dict[str, float] = {}
    for limit in (None, 50):
        for pipelined, conditional in ((True, False), (False, False), (True, True)):
            flow = _two_stage(items, pipelined, limit, conditional)

            async def main(flow: trioflow.Flow = flow) -> float:
                result = await flow.run({"items": list(range(items))})
                return result.duration

            clock = trio.testing.MockClock(autojump_threshold=0)
            what = "pipelined" if pipelined else "whole list"
            key = f"{what}{' with when=' if conditional else ''}, max_concurrent={limit}"
            out[key] = trio.run(main, clock=clock)
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    gates = trio.run(bench_gates, n)
    print(f"W1 plain: {gates['plain']:.2f} µs/step")
    print(f"W1 rate:  {gates['rate']:.2f} µs/step ({gates['rate'] / gates['plain']:.2f}x plain)")
    print(f"W1 keyed: {gates['keyed']:.2f} µs/step ({gates['keyed'] / gates['plain']:.2f}x plain)")
    for what, seconds in pipeline_makespans().items():
        print(f"PIPE {what}: makespan {seconds:.1f} s (virtual)")
