"""Bench case: building and validating a flow (``add`` + ``plan``), per step.

Two shapes: a fan-out that adds one function ``n`` times (as W1 does, and as
flows built in a loop do), and a chain of ``n`` distinct functions (W2's). The
figure is wall time per step, min-median-max over interleaved repetitions; the
target (issue 16) is at most 8 µs per step. Timings are noisy on a busy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import trioflow


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


def bench_build(n: int, repeats: int) -> list[tuple[str, str, str, str, str]]:
    """Rows for bench/run.py's table."""
    functions = _chain_functions(n)
    fan: list[float] = []
    chain: list[float] = []
    for _ in range(max(5, repeats)):  # interleaved
        t = time.perf_counter()
        _build_fanout(n)
        fan.append((time.perf_counter() - t) / n * 1e6)
        functions = _chain_functions(n)  # new functions: nothing read before
        t = time.perf_counter()
        _build_chain(functions)
        chain.append((time.perf_counter() - t) / n * 1e6)
    rows = []
    for label, figures in ((f"BUILD add+plan, one function x{n}", fan), (f"BUILD add+plan, {n} functions", chain)):
        rows.append(
            (
                label,
                f"{min(figures):.1f}-{statistics.median(figures):.1f}-{max(figures):.1f} µs",
                "-",
                "-",
                "<= 8 µs per step",
            )
        )
    return rows


def _import_seconds(module: str) -> float:
    import subprocess
    import sys

    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - t


def bench_import(repeats: int) -> list[tuple[str, str, str, str, str]]:
    """``import trioflow`` against ``import trio``, each in a fresh interpreter (interleaved)."""
    ours: list[float] = []
    raw: list[float] = []
    for _ in range(max(5, repeats)):
        ours.append(_import_seconds("trioflow"))
        raw.append(_import_seconds("trio"))
    ratios = sorted(o / r for o, r in zip(ours, raw, strict=True))
    return [
        (
            "IMPORT trioflow (fresh interpreter)",
            f"{statistics.median(ours) * 1000:.0f} ms",
            f"{statistics.median(raw) * 1000:.0f} ms",
            f"{ratios[0]:.2f}-{statistics.median(ratios):.2f}-{ratios[-1]:.2f}x",
            "<= 1.2x",
        )
    ]
