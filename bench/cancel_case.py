"""Bench case (issue 9 item 21): how fast a large run stops when cancelled from outside.

A fan-out of N steps that each sleep a little; ``move_on_after`` fires early
(after 1 ms). The figure is the time from the deadline to ``run`` returning,
against the time the whole run takes when it is left to finish (both medians
of several runs, real clock, trio). A cancelled run should cost only its live
tasks: start no new step and no new task.

    python bench/cancel_case.py [n ...]     # default: 10000 100000
"""

from __future__ import annotations

import statistics
import sys
import time

import trio

import trioflow


def build(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("cancel_case")

    async def step() -> None:
        await trio.sleep(0.001)

    for i in range(n):
        flow.add(step, name=f"s{i}")
    flow.plan()
    return flow


async def finish_s(flow: trioflow.Flow) -> float:
    start = time.perf_counter()
    await flow.run()
    return time.perf_counter() - start


async def cancel_s(flow: trioflow.Flow, after: float = 0.001) -> float:
    with trio.move_on_after(after) as scope:
        await flow.run()
    assert scope.cancelled_caught
    return trio.current_time() - scope.deadline  # from the deadline to run returning


async def main(sizes: list[int]) -> None:
    print(f"trio {trio.__version__}, Python {sys.version.split()[0]} (real clock; noisy on a busy machine)")
    print(f"{'steps':>8}  {'finish (ms)':>12}  {'deadline -> return (ms)':>24}  {'ratio':>6}")
    for n in sizes:
        flow = build(n)
        repeats = 3 if n <= 20_000 else 1
        finish = statistics.median([await finish_s(flow) for _ in range(repeats)])
        cancel = statistics.median([await cancel_s(flow) for _ in range(repeats)])
        print(f"{n:>8}  {finish * 1e3:>12.1f}  {cancel * 1e3:>24.1f}  {cancel / finish:>6.2f}")


if __name__ == "__main__":
    trio.run(main, [int(a) for a in sys.argv[1:]] or [10_000, 100_000])
