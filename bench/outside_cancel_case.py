"""Bench case: cancelling a large fan-out from outside, against raw trio and against finishing.

A fan-out of N steps (10k) that each sleep 2 s (``STEP_S``), with no limit,
inside ``move_on_after(1.0)`` (``DEADLINE_S``): the deadline fires mid-run,
with the steps asleep. Both trioflow and raw trio have normally started every
step by then (raw trio takes about 0.1 s here, trioflow a few tenths), so
both pay for cancelling the same number of live tasks; a row says how many
steps had started when the deadline fired. The figure is the time from the
deadline to ``run`` returning (trio's clock). The baselines, in the same
process, interleaved:

* raw trio written by hand: a task per step in one nursery, each holding a
  ``CapacityLimiter(N)`` around its sleep, under the same ``move_on_after``
  (target <= 1.0x);
* the same flow left to finish (target: less, < 1.0x): a cancelled run should
  cost only the tasks that are alive, start no new step and no new task.

``bench/cancel_case.py`` shows the same at 10k and 100k steps, without the
raw trio baseline.

    python bench/outside_cancel_case.py [--quick] [-n N]
"""

from __future__ import annotations

import gc
import time

import trio
from measure import Row, at_most, below, compared, figure, spread

import trioflow

N = 10_000
STEP_S = 2.0
DEADLINE_S = 1.0

started = 0  # steps begun in the current run


async def step() -> None:
    global started
    started += 1
    await trio.sleep(STEP_S)


def build(n: int) -> trioflow.Flow:
    flow = trioflow.Flow("outside_cancel")
    for i in range(n):
        flow.add(step, name=f"s{i}")
    flow.plan()
    return flow


async def raw(n: int) -> None:
    limiter = trio.CapacityLimiter(n)

    async def one() -> None:
        async with limiter:
            await step()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)


async def deadline_to_return(flow: trioflow.Flow | None, n: int) -> float:
    """Seconds from the deadline to the cancelled run returning."""
    global started
    gc.collect()
    started = 0
    with trio.move_on_after(DEADLINE_S) as scope:
        if flow is None:
            await raw(n)
        else:
            await flow.run()
    assert scope.cancelled_caught, "the run ended before its deadline: make the steps sleep longer"
    return trio.current_time() - scope.deadline


async def finishing(flow: trioflow.Flow) -> float:
    gc.collect()
    start = time.perf_counter()
    await flow.run()
    return time.perf_counter() - start


async def bench_outside_cancel(repeats: int, n: int = N) -> list[Row]:
    flow = build(n)
    await finishing(flow)  # warm up
    await deadline_to_return(None, n)
    ours: list[float] = []
    base: list[float] = []
    finish: list[float] = []
    started_ours: list[float] = []
    started_raw: list[float] = []
    for _ in range(repeats):
        ours.append(await deadline_to_return(flow, n))
        started_ours.append(started)  # (a cancelled run starts no step after its deadline)
        base.append(await deadline_to_return(None, n))
        started_raw.append(started)
        finish.append(await finishing(flow))
    what = f"CANCEL {n} steps sleeping {STEP_S:g} s, deadline at {DEADLINE_S:g} s"
    return [
        compared(f"{what}: deadline -> return", ours, base, scale=1e3, unit="ms", fmt=".1f",
                 target=at_most(1.0)),
        compared(f"{what}: against finishing", ours, finish, scale=1e3, unit="ms", fmt=".1f",
                 target=below(1.0), base_note=" (finishing)"),
        figure(f"{what}: steps begun by the end", started_ours, unit="steps", fmt=".0f",
               base=f"{spread(started_raw, '.0f', ' steps')} (raw trio)"),
    ]


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    parser.add_argument("-n", type=int, default=N, help=f"steps (default {N})")
    args = parser.parse_args()
    print(render(trio.run(bench_outside_cancel, 5 if args.quick else 9, args.n)))
