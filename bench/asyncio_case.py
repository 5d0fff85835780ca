"""Bench case: W1 and W2 on asyncio, against asyncio written by hand.

The same flows as W1 (N no-op steps + a join) and W2 (a chain of N steps),
run under ``asyncio.run`` (trioflow through anyio), against hand-written
asyncio in the same event loop: an ``asyncio.TaskGroup`` with a task per step
holding an ``asyncio.Semaphore(N)`` for W1, and a task per step waiting on
the previous step's ``asyncio.Event`` for W2. Target (issue 16): <= 1.0x each.

    python bench/asyncio_case.py [--quick] [-n N]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core_case import build_chain, build_fanout, inc, noop
from measure import Row, alternate, at_most, compared

import trioflow


async def raw_fanout(n: int) -> None:
    semaphore = asyncio.Semaphore(n)
    results: list[Any] = [None] * n

    async def one(i: int) -> None:
        async with semaphore:
            results[i] = await noop()

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    async with semaphore:
        await noop()


async def raw_chain(n: int) -> None:
    events = [asyncio.Event() for _ in range(n)]
    values = [0] * n

    async def one(i: int) -> None:
        if i:
            await events[i - 1].wait()
            values[i] = await inc(values[i - 1])
        events[i].set()

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    assert values[-1] == n - 1


async def _measure(
    fan: trioflow.Flow, chain: trioflow.Flow, n: int, repeats: int, cpu: dict[str, list[float]]
) -> dict[str, list[float]]:
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "w1": lambda: fan.run(),
        "w1 raw": lambda: raw_fanout(n),
        "w2": lambda: chain.run(),
        "w2 raw": lambda: raw_chain(n),
    }
    return await alternate(cases, repeats, cpu=cpu)


def bench_asyncio(n: int, repeats: int) -> list[Row]:
    """Rows ASYNCIO W1 and W2. Call it outside any event loop: it runs ``asyncio.run``."""
    fan, chain = build_fanout(n), build_chain(n)
    cpu: dict[str, list[float]] = {}
    t = asyncio.run(_measure(fan, chain, n, repeats, cpu))
    note = " (asyncio)"
    return [
        compared(f"ASYNCIO W1 fan-out {n} + join", t["w1"], t["w1 raw"], scale=1e6 / (n + 1),
                 target=at_most(1.0), base_note=note, cpu=(cpu["w1"], cpu["w1 raw"])),
        compared(f"ASYNCIO W2 chain {n}", t["w2"], t["w2 raw"], scale=1e6 / n,
                 target=at_most(1.0), base_note=note, cpu=(cpu["w2"], cpu["w2 raw"])),
    ]


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    parser.add_argument("-n", type=int, default=2000, help="steps per workload (default 2000)")
    args = parser.parse_args()
    print(render(bench_asyncio(args.n, 5 if args.quick else 9)))
