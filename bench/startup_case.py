"""Bench case: what comes before the first step runs: importing trioflow and building a flow.

IMPORT  ``import trioflow`` against ``import trio``, each timed inside a fresh
        interpreter around the import statement alone (so the interpreter's
        own start is left out), the two alternating; target <= 1.2x (issue
        16). The row also says whether ``import trioflow`` imported pytest
        (it must not).
BUILD   ``Flow.add`` + ``Flow.plan`` per step, in µs, for the two shapes of
        ``bench/build_case.py`` (one function added n times; n distinct
        functions in a chain), alternating; target <= 8 µs per step.

    python bench/startup_case.py [--quick] [-n N]
"""

from __future__ import annotations

import subprocess
import sys

from build_case import _build_chain, _build_fanout, _chain_functions
from measure import Row, alternate_sync, at_most, compared, figure

_IMPORT = """
import sys, time
start = time.perf_counter()
import {module}
print(time.perf_counter() - start, "pytest" in sys.modules)
"""


def _import(module: str) -> tuple[float, bool]:
    """Seconds ``import module`` takes in a fresh interpreter, and whether it imported pytest."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT.format(module=module)], check=True, capture_output=True, text=True
    )
    seconds, pytest = done.stdout.split()
    return float(seconds), pytest == "True"


def bench_import(repeats: int) -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    pytest = False
    _import("trioflow")  # warm the file system cache
    for _ in range(repeats):
        seconds, imported = _import("trioflow")
        ours.append(seconds)
        pytest = pytest or imported
        base.append(_import("trio")[0])
    row = compared(
        "IMPORT trioflow (fresh interpreter), over import trio", ours, base, scale=1e3, unit="ms",
        fmt=".0f", target=at_most(1.2),
    )
    verdict = Row("IMPORT trioflow imports pytest", "yes" if pytest else "no", "-", "-", "no", "NO" if pytest else "yes")
    return [row, verdict]


def bench_build(n: int, repeats: int) -> list[Row]:
    functions = [_chain_functions(n) for _ in range(repeats)]  # new functions each time: nothing read before
    chains = iter(functions)
    t = alternate_sync({"fan": lambda: _build_fanout(n), "chain": lambda: _build_chain(next(chains))}, repeats)
    return [
        figure(f"BUILD add+plan, one function x{n}, per step", [s / n * 1e6 for s in t["fan"]],
               target=at_most(8, "µs"), fmt=".1f"),
        figure(f"BUILD add+plan, {n} functions, per step", [s / n * 1e6 for s in t["chain"]],
               target=at_most(8, "µs"), fmt=".1f"),
    ]


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    parser.add_argument("-n", type=int, default=2000, help="steps per flow built (default 2000)")
    args = parser.parse_args()
    repeats = 5 if args.quick else 9
    print(render(bench_build(args.n, repeats) + bench_import(repeats)))
