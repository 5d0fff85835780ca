"""Bench case (issue 9 item 20): memory that ``trioflow.map`` keeps beyond its results.

``trioflow.map`` over a generator of N items (``max_concurrent=10``), under
``tracemalloc``: the peak of traced memory during the call, minus the result
list itself (the list object and the values in it). What is left is the
bookkeeping, and it should not grow with N: O(max_concurrent) for the items
in flight, nothing per finished item. For reference, the same figure for a
plain list comprehension over the same generator: a list that grows by
appending briefly holds its old and its new array while it is resized, so a
few bytes per item show up in any such peak, ours included.

    python bench/map_memory_case.py [n ...]     # default: 100000 1000000
"""

from __future__ import annotations

import sys
import tracemalloc

import trio

import trioflow


async def double(x: int) -> int:
    return 2 * x


def result_bytes(result: list[int]) -> int:
    """The result list and the distinct value objects in it."""
    seen: set[int] = set()
    total = sys.getsizeof(result)
    for value in result:
        if id(value) not in seen:
            seen.add(id(value))
            total += sys.getsizeof(value)
    return total


async def comprehension(n: int) -> list[int]:
    return [await double(i) for i in (i for i in range(n))]


def measure(n: int, plain: bool = False) -> tuple[int, int]:
    """(peak traced bytes during the call, bytes of the result list) for a map over n items."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        if plain:
            result = trio.run(comprehension, n)
        else:
            result = trio.run(trioflow.map, double, (i for i in range(n)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(result) == n
    return peak, result_bytes(result)


def main(sizes: list[int]) -> None:
    print(f"trio {trio.__version__}, Python {sys.version.split()[0]}")
    print(
        f"{'':>13}{'items':>9}  {'peak (MiB)':>11}  {'results (MiB)':>14}  {'beyond (KiB)':>13}"
        f"  {'bytes/item':>10}"
    )
    for n in sizes:
        for label, plain in (("trioflow.map", False), ("comprehension", True)):
            peak, results = measure(n, plain)
            beyond = peak - results
            print(
                f"{label:<13}{n:>9}  {peak / 2**20:>11.2f}  {results / 2**20:>14.2f}"
                f"  {beyond / 2**10:>13.1f}  {beyond / n:>10.2f}"
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
