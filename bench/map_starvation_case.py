"""Bench case: ``trioflow.map`` with an item function that never awaits.

The map runs over ``ITEMS`` items (default ``max_concurrent=10``), each item
a few µs of pure Python that never awaits, beside a sibling task that counts
its turns (a checkpoint per turn), inside ``move_on_after(0.01)``. A map
must stay a good trio citizen although its items never yield: a checkpoint
at least every 16 items (as a flow's workers do), so that the sibling gets
turns and the cancellation lands within 16 items of each worker task.

Per repetition: whether the deadline cancelled the map, the sibling's turns,
the items begun after the deadline by the worker task that began most of them
(target <= 16), the items done in all, and the time from the deadline to
the map returning. The case passes when every repetition was cancelled, gave
the sibling a turn and stayed within 16 items.

    python bench/map_starvation_case.py [--quick]
"""

from __future__ import annotations

import math
from collections import Counter

import trio
import trio.lowlevel
from measure import Row, at_most, figure

import trioflow

ITEMS = 200_000
DEADLINE_S = 0.01
WITHIN = 16


async def one_repetition(items: int = ITEMS) -> dict[str, float]:
    deadline = math.inf
    after: Counter[int] = Counter()  # items begun after the deadline, per worker task
    done = 0
    turns = 0

    async def item(x: int) -> int:  # never awaits
        nonlocal done
        if trio.current_time() >= deadline:
            after[id(trio.lowlevel.current_task())] += 1
        total = 0
        for k in range(50):
            total += k * x
        done += 1
        return total

    async def sibling() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sibling)
        await trio.lowlevel.checkpoint()  # the sibling is running
        turns = 0
        with trio.move_on_after(DEADLINE_S) as scope:
            deadline = scope.deadline
            await trioflow.map(item, range(items))
        returned = trio.current_time()
        nursery.cancel_scope.cancel()
    return {
        "cancelled": float(scope.cancelled_caught),
        "turns": float(turns),
        "most after": float(max(after.values(), default=0)),
        "all after": float(sum(after.values())),
        "done": float(done),
        "latency ms": (returned - deadline) * 1e3 if scope.cancelled_caught else math.nan,
    }


async def bench_map_starvation(repeats: int) -> list[Row]:
    runs = [await one_repetition() for _ in range(repeats)]
    passed = all(r["cancelled"] and r["turns"] > 0 and r["most after"] <= WITHIN for r in runs)
    what = f"MAPSTARVE map over {ITEMS} items that never await, move_on_after({DEADLINE_S:g})"
    cancelled = sum(int(r["cancelled"]) for r in runs)
    rows = [
        Row(f"{what}: passes", "pass" if passed else "FAIL", f"cancelled {cancelled} of {len(runs)}", "-",
            "pass", "yes" if passed else "NO"),
        figure("MAPSTARVE items begun after the deadline, most by one worker", [r["most after"] for r in runs],
               unit="items", fmt=".0f", target=at_most(WITHIN, "items")),
        figure("MAPSTARVE items begun after the deadline, all workers", [r["all after"] for r in runs],
               unit="items", fmt=".0f"),
        figure("MAPSTARVE sibling's turns before the map returned", [r["turns"] for r in runs], unit="turns",
               fmt=".0f"),
        figure("MAPSTARVE items done (of the map's)", [r["done"] for r in runs], unit="items", fmt=".0f"),
    ]
    latencies = [r["latency ms"] for r in runs if r["cancelled"]]
    if latencies:
        rows.append(figure("MAPSTARVE deadline -> map returns", latencies, unit="ms", fmt=".2f"))
    return rows


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    args = parser.parse_args()
    print(render(trio.run(bench_map_starvation, 5 if args.quick else 9)))
