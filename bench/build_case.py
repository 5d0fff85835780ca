"""Bench case: building and validating a flow (``add`` + ``plan``), per step; and importing trioflow.

Building, two shapes: a fan-out that adds one function ``n`` times (as W1 does,
and as flows built in a loop do), and a chain of ``n`` distinct functions
(W2's). Both at ``n`` and at ``5 * n`` steps: the cost per step should not grow
with the flow. The figure is time per step, min-median-max over interleaved
repetitions, wall clock and this process's CPU time (which a busy machine
disturbs less); the target (issue 16) is at most 8 µs per step. Each timed build
starts after a garbage collection, so that it does not pay for the previous
repetition's garbage (the chain's functions and their namespaces form
reference cycles); what the build itself allocates is collected inside the
timing, as in any program.

Importing: ``import trioflow`` against ``import trio``, each in a fresh
interpreter, interleaved; the ratio of the children's CPU times and of wall
times. Both packages are imported from bytecode caches, as an installed
package is (pip compiles them; the import compiles trioflow's ones first if
this checkout has none, e.g. under ``PYTHONDONTWRITEBYTECODE``).

Run it alone with ``python bench/build_case.py [n] [repeats]``. Timings are
noisy on a busy machine.
"""

from __future__ import annotations

import functools
import gc
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import trioflow

Row = tuple[str, str, str, str, str]


async def _noop() -> None:
    return None


def _chain_functions(n: int) -> list[Callable[..., Any]]:
    functions = []
    for i in range(n):
        namespace: dict[str, Any] = {}
        params = f"s{i - 1}" if i else ""
        exec(f"async def s{i}({params}):\n    return 1\n", namespace)
        functions.append(namespace[f"s{i}"])
    return functions


def _build_fanout(n: int) -> None:
    flow = trioflow.Flow("build")
    for i in range(n):
        flow.add(_noop, name=f"s{i}")
    flow.plan()


def _build_chain(functions: list[Callable[..., Any]]) -> None:
    flow = trioflow.Flow("build")
    for fn in functions:
        flow.add(fn)
    flow.plan()


def _timed(build: Callable[[], None], n: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per step of one build, after a collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    build()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


def _spread(figures: list[float], unit: str) -> str:
    return f"{min(figures):.1f}-{statistics.median(figures):.1f}-{max(figures):.1f} {unit}"


def bench_build(n: int, repeats: int) -> list[Row]:
    """Rows for bench/run.py's table: both shapes at ``n`` and ``5 * n`` steps."""
    rows = []
    for size in (n, 5 * n):
        fan: list[tuple[float, float]] = []
        chain: list[tuple[float, float]] = []
        for _ in range(max(5, repeats)):  # interleaved
            fan.append(_timed(functools.partial(_build_fanout, size), size))
            # new functions, nothing read before; dropped before the next collection
            chain.append(_timed(functools.partial(_build_chain, _chain_functions(size)), size))
        for label, figures in (
            (f"BUILD add+plan, one function x{size}", fan),
            (f"BUILD add+plan, {size} functions", chain),
        ):
            rows.append(
                (
                    label,
                    _spread([w for w, _ in figures], "µs"),
                    "cpu " + _spread([c for _, c in figures], "µs"),
                    "-",
                    "<= 8 µs per step",
                )
            )
    return rows


def _import_cost(module: str) -> tuple[float, float]:
    """(wall, CPU of the child) seconds of ``import module`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _compile_trioflow() -> None:
    """Write the bytecode caches of the trioflow a fresh interpreter would import."""
    code = (
        "import compileall, importlib.util, os\n"
        "spec = importlib.util.find_spec('trioflow')\n"
        "compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def bench_import(repeats: int) -> list[Row]:
    """``import trioflow`` against ``import trio``, each in a fresh interpreter (interleaved)."""
    _compile_trioflow()
    ours: list[tuple[float, float]] = []
    raw: list[tuple[float, float]] = []
    for _ in range(max(11, repeats)):
        ours.append(_import_cost("trioflow"))
        raw.append(_import_cost("trio"))
    cpu = sorted(o[1] / r[1] for o, r in zip(ours, raw, strict=True))
    wall = sorted(o[0] / r[0] for o, r in zip(ours, raw, strict=True))
    return [
        (
            "IMPORT trioflow ÷ trio (fresh interpreter; cpu, wall)",
            f"{statistics.median(o[1] for o in ours) * 1000:.0f} ms cpu",
            f"{statistics.median(r[1] for r in raw) * 1000:.0f} ms cpu",
            f"cpu {cpu[0]:.2f}-{statistics.median(cpu):.2f}-{cpu[-1]:.2f}x, "
            f"wall {wall[0]:.2f}-{statistics.median(wall):.2f}-{wall[-1]:.2f}x",
            "<= 1.2x",
        )
    ]


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    for row in [*bench_build(size, reps), *bench_import(reps * 3)]:
        print(" | ".join(row))
