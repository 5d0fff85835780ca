"""Benchmark of trioflow.testing: schedules per second, as a ratio to plain ``trio.run``.

    python bench/harness_case.py [--quick]

Each program runs under plain ``trio.run`` with ``MockClock(autojump_threshold=0)``
and under :func:`trioflow.testing.run_deterministic` with each strategy, in
the same process, interleaved; the table gives the median time per run,
schedules per second, and the ratio ``harness / plain trio.run`` (target:
at most 1.5x, whatever the strategy).

H1  a flow of 20 steps that sleep, max_concurrent=3
H2  the same flow, its steps checkpointing instead of sleeping
H3  10 tasks with 10 checkpoints each (no flow)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel
import trio.testing

import trioflow
from trioflow.testing import run_deterministic


def build_flow(sleeping: bool) -> trioflow.Flow:
    flow = trioflow.Flow("bench")
    names: list[str] = []
    for i in range(20):
        deps = names[-2:] if i % 4 == 3 else []

        async def step(**kwargs: Any) -> int:
            if sleeping:
                await trio.sleep(1)
            else:
                for _ in range(3):
                    await trio.lowlevel.checkpoint()
            return len(kwargs)

        step.__name__ = f"s{i}"
        import inspect

        step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
        )
        flow.add(step, name=f"s{i}")
        names.append(f"s{i}")
    flow.plan()
    return flow


async def ten_tasks() -> int:
    count = [0]

    async def worker() -> None:
        for _ in range(10):
            await trio.lowlevel.checkpoint()
            count[0] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(worker)
    return count[0]


def plain(fn: Callable[[], Any]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def measure(fn: Callable[[], Any], runs: int, repeats: int) -> dict[str, float]:
    """Median seconds per run: plain trio.run and run_deterministic with each strategy."""
    modes: dict[str, Callable[[int], None]] = {
        "plain trio.run": lambda i: plain(fn),
        "fifo": lambda i: run_deterministic(fn) and None,
        "random": lambda i: run_deterministic(fn, strategy="random", seed=i) and None,
        "pct": lambda i: run_deterministic(fn, strategy="pct", seed=i) and None,
        "portfolio": lambda i: run_deterministic(fn, strategy="portfolio", seed=i) and None,
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, one in modes.items():
            began = time.perf_counter()
            for i in range(runs):
                one(i)
            times[name].append((time.perf_counter() - began) / runs)
    return {name: statistics.median(t) for name, t in times.items()}


def main(quick: bool = False) -> int:
    runs, repeats = (20, 3) if quick else (50, 7)
    sleeping, checkpointing = build_flow(True), build_flow(False)
    cases = [
        ("H1 flow, 20 sleeping steps, m=3", lambda: sleeping.run(max_concurrent=3)),
        ("H2 flow, 20 checkpointing steps, m=3", lambda: checkpointing.run(max_concurrent=3)),
        ("H3 10 tasks x 10 checkpoints", ten_tasks),
    ]
    print(f"trio {trio.__version__}, trioflow {trioflow.__version__}, Python {sys.version.split()[0]}")
    header = f"{'program':40} {'mode':16} {'ms/run':>8} {'runs/s':>8} {'ratio':>6}  target"
    print(header)
    print("-" * len(header))
    for label, fn in cases:
        figures = measure(fn, runs, repeats)
        base = figures["plain trio.run"]
        for name, seconds in figures.items():
            ratio = seconds / base
            target = "" if name == "plain trio.run" else "<= 1.5x"
            print(f"{label:40} {name:16} {seconds * 1e3:8.3f} {1 / seconds:8.0f} {ratio:5.2f}x  {target}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    sys.exit(main(parser.parse_args().quick))
