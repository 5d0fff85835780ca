"""Bench case: what comes before the first step runs: importing trioflow and building a flow.

IMPORT  ``import trioflow`` against ``import trio``, each timed inside a fresh
        interpreter around the import statement alone (so the interpreter's
        own start is left out), the two alternating; target <= 1.2x (issue
        16), judged on wall time; the ratio of the imports' CPU times (which
        a busy machine disturbs less) is shown beside it. A row says whether ``import
        trioflow`` imported pytest (it must not).
BUILD   ``Flow.add`` + ``Flow.plan`` per step, in µs, for the two shapes of
        ``bench/build_case.py`` (one function added n times; n distinct
        functions in a chain), alternating, each after a collection; target
        <= 8 µs per step, judged on CPU time (an absolute figure, which the
        wall clock of a busy machine inflates by however long the process
        waited for a core); wall time beside it.

    python bench/startup_case.py [--quick] [-n N]
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

from build_case import _build_chain, _build_fanout, _chain_functions
from measure import Row, at_most, compared, figure

_IMPORT = """
import sys, time
wall, cpu = time.perf_counter(), time.process_time()
import {module}
print(time.perf_counter() - wall, time.process_time() - cpu, "pytest" in sys.modules)
"""


def _import(module: str) -> tuple[float, float, bool]:
    """(wall, CPU) seconds ``import module`` takes in a fresh interpreter, and whether it imported pytest."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT.format(module=module)], check=True, capture_output=True, text=True
    )
    wall, cpu, pytest = done.stdout.split()
    return float(wall), float(cpu), pytest == "True"


def bench_import(repeats: int) -> list[Row]:
    ours: list[tuple[float, float, bool]] = []
    base: list[tuple[float, float, bool]] = []
    _import("trioflow")  # warm the file system cache (and write trioflow's bytecode, if missing)
    for _ in range(repeats):
        ours.append(_import("trioflow"))
        base.append(_import("trio"))
    pytest = any(imported for _, _, imported in ours)
    what = "IMPORT trioflow (fresh interpreter), over import trio"
    return [
        compared(what, [o[0] for o in ours], [b[0] for b in base], scale=1e3, unit="ms", fmt=".0f",
                 target=at_most(1.2), cpu=([o[1] for o in ours], [b[1] for b in base])),
        Row("IMPORT trioflow imports pytest", "yes" if pytest else "no", "-", "-", "no", "NO" if pytest else "yes"),
    ]


def _timed(build: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one build, after a collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    build()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_build(n: int, repeats: int) -> list[Row]:
    fan: list[tuple[float, float]] = []
    chain: list[tuple[float, float]] = []
    for _ in range(repeats):  # the two shapes take turns
        fan.append(_timed(partial(_build_fanout, n)))
        chain.append(_timed(partial(_build_chain, _chain_functions(n))))  # new functions: nothing read before
    rows = []
    for label, times in ((f"BUILD add+plan, one function x{n}, per step", fan),
                         (f"BUILD add+plan, {n} functions, per step", chain)):
        rows.append(figure(label, [w / n * 1e6 for w, _ in times], target=at_most(8, "µs"), fmt=".1f",
                           cpu=[c / n * 1e6 for _, c in times], judge_cpu=True))
    return rows


if __name__ == "__main__":
    import argparse

    from measure import render

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9")
    parser.add_argument("-n", type=int, default=2000, help="steps per flow built (default 2000)")
    args = parser.parse_args()
    repeats = 5 if args.quick else 9
    print(render(bench_build(args.n, repeats) + bench_import(repeats)))
