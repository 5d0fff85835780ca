"""Benchmark of trioflow.testing: schedules per second, as a ratio to plain ``trio.run``.

    python bench/harness_case.py [--quick] [--wall]

Each program runs under plain ``trio.run`` with ``MockClock(autojump_threshold=0)``
and under :func:`trioflow.testing.run_deterministic` with each strategy, in
the same process. Every mode gets one strategy object for all its runs, as
:func:`~trioflow.testing.check_deterministic` uses it (a bounded search
walks on through its schedules, PCT learns the run length); the last mode is
``check_deterministic`` itself with its default strategy. The modes are
measured in turn, each repeat a block of runs per mode, so a slow spell of a
shared machine hits them alike; each repeat's ratio is the mode's time over the
plain ``trio.run`` block measured just before it. The table gives the median
time per run, schedules per second, and the ratio ``harness / plain trio.run``
as min-median-max over the repeats (target: at most 1.5x, whatever the
strategy).

Times are the process's CPU time (:func:`time.process_time`), which a busy
machine disturbs far less than the wall clock; ``--wall`` measures with
:func:`time.perf_counter` instead.

H1  a flow of 20 steps that sleep, max_concurrent=3
H2  the same flow, its steps checkpointing instead of sleeping
H3  10 tasks with 10 checkpoints each (no flow)
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel
import trio.testing

import trioflow
from trioflow.testing import Strategy, check_deterministic, run_deterministic
from trioflow.testing._strategy import make_strategy

STRATEGIES = ("random", "pct", "bounded", "portfolio")


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


def _with(fn: Callable[[], Any], chooser: Strategy | None) -> Callable[[], None]:
    def one() -> None:
        run_deterministic(fn, strategy=chooser)

    return one


def measure(
    fn: Callable[[], Any], runs: int, repeats: int, clock: Callable[[], float]
) -> dict[str, tuple[float, list[float]]]:
    """Per mode: the median seconds per run, and each repeat's ratio to plain trio.run."""
    modes: dict[str, Callable[[], None]] = {"fifo": _with(fn, None)}
    for name in STRATEGIES:
        modes[name] = _with(fn, make_strategy(name, 0))
    check_runs = max(2, runs)

    def check() -> None:
        check_deterministic(fn, runs=check_runs)

    times: dict[str, list[float]] = {"plain trio.run": [], **{name: [] for name in modes}}
    times["check_deterministic"] = []
    ratios: dict[str, list[float]] = {name: [] for name in times}
    for _ in range(repeats):
        for name, one in modes.items():
            base = _block(lambda: plain(fn), runs, clock)
            times["plain trio.run"].append(base)
            seconds = _block(one, runs, clock)
            times[name].append(seconds)
            ratios[name].append(seconds / base)
        base = _block(lambda: plain(fn), check_runs, clock)
        seconds = _block(check, 1, clock) / check_runs
        times["check_deterministic"].append(seconds)
        ratios["check_deterministic"].append(seconds / base)
    ratios["plain trio.run"] = [1.0]
    return {name: (statistics.median(times[name]), ratios[name]) for name in times}


def _block(one: Callable[[], None], runs: int, clock: Callable[[], float]) -> float:
    began = clock()
    for _ in range(runs):
        one()
    return (clock() - began) / runs


def main(quick: bool = False, wall: bool = False) -> int:
    runs, repeats = (20, 5) if quick else (40, 15)
    clock = time.perf_counter if wall else time.process_time
    sleeping, checkpointing = build_flow(True), build_flow(False)
    cases = [
        ("H1 flow, 20 sleeping steps, m=3", lambda: sleeping.run(max_concurrent=3)),
        ("H2 flow, 20 checkpointing steps, m=3", lambda: checkpointing.run(max_concurrent=3)),
        ("H3 10 tasks x 10 checkpoints", ten_tasks),
    ]
    print(
        f"trio {trio.__version__}, trioflow {trioflow.__version__}, Python {sys.version.split()[0]}; "
        f"{'wall-clock' if wall else 'CPU'} time, {repeats} repeats of {runs} runs"
    )
    header = f"{'program':38} {'mode':20} {'ms/run':>7} {'runs/s':>7}  {'ratio min-median-max':>20}"
    print(header + "  target")
    print("-" * (len(header) + 8))
    worst = 0.0
    for label, fn in cases:
        for name, (seconds, ratios) in measure(fn, runs, repeats, clock).items():
            low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
            spread = f"{low:.2f}-{mid:.2f}-{high:.2f}x"
            target = "" if name == "plain trio.run" else "<= 1.5x"
            if name != "plain trio.run":
                worst = max(worst, mid)
            print(f"{label:38} {name:20} {seconds * 1e3:7.3f} {1 / seconds:7.0f}  {spread:>20}  {target}")
    print(f"worst median ratio: {worst:.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and repeats")
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of CPU time")
    options = parser.parse_args()
    sys.exit(main(options.quick, options.wall))
