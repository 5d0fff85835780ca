"""Print a corpus table of ``docs/testing.rst``: which strategy finds each bug, and when.

    python fuzz/corpus_table.py [seeds] [corpus] [case ...]

``corpus`` names a module of ``tests/`` with a ``CASES`` list
(default: ``harness_corpus``, the first corpus; ``harness_corpus2`` is the
second, written after the strategies were tuned on the first, whose
``MISSED`` cases come last); ``case`` names restrict the table to those
cases.

For each buggy program and each seed of ``check_deterministic`` (default:
0 to 9), the run that found the bug with the default strategy (the
portfolio) and the portfolio member that ran it; whether each failing
schedule replays the failure 10 times out of 10; whether the fixed twin
passes 1000 runs; then, for each single strategy, in how many seeds it
found the bug within 1000 runs and the median run. Runs are schedules; the
FIFO run is run 0. A bug the portfolio misses in a seed counts as 1000 in
the median and worst columns, and is marked "MISSED in k/n".
"""

from __future__ import annotations

import importlib
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness_corpus import outcome_of

from trioflow.testing import (
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
)

RUNS = 1000
TWIN_SEED = 12345


def found_at(program: object, seed: int, strategy: str) -> tuple[int, str, tuple[int, ...]] | None:
    """The run that found the bug, the strategy that ran it and its schedule, or ``None``."""
    try:
        check_deterministic(program, runs=RUNS, seed=seed, strategy=strategy)  # type: ignore[arg-type]
    except Exception as exc:
        replay = failing_schedule(exc)
        if replay is None:
            raise
        return replay.run, replay.strategy, replay.schedule
    return None


def replays_exactly(program: Any, schedule: tuple[int, ...]) -> bool:
    """The schedule fails 10 times out of 10, the same way, and not as FIFO does."""
    outcomes = {outcome_of(program, schedule) for _ in range(10)}
    return len(outcomes) == 1 and outcomes != {outcome_of(program, ())}


def twin_passes(program: Any) -> bool:
    try:
        check_deterministic(program, runs=RUNS, seed=TWIN_SEED)
    except NonDeterminismError:
        return False
    except Exception:  # a deadlock, a budget, or the FIFO run's own error
        return False
    return True


def main(argv: list[str]) -> None:
    seeds = range(int(argv[0]) if argv else 10)
    module = importlib.import_module(argv[1] if len(argv) > 1 else "harness_corpus")
    only = set(argv[2:])
    header = [
        "bug",
        "kind",
        "portfolio: median run (worst)",
        "found by",
        "replay 10/10",
        "twin passes 1000",
        "random",
        "pct",
        "bounded",
    ]
    print(" | ".join(header))
    # (a corpus may keep the bugs the harness misses apart, in MISSED)
    for case in [*module.CASES, *getattr(module, "MISSED", [])]:
        if only and case.name not in only:
            continue
        runs, members, replays = [], [], []
        for seed in seeds:
            hit = found_at(case.bug, seed, "portfolio")
            runs.append(RUNS if hit is None else hit[0])
            if hit is not None:
                members.append(hit[1].removeprefix("portfolio:"))
                replays.append(replays_exactly(case.bug, hit[2]))
        missed = len(runs) - len(members)
        cells = [case.name, case.kind, f"{statistics.median(runs):g} ({max(runs)})"]
        if len(members) < len(runs):
            cells[-1] += f" MISSED in {missed}/{len(runs)}"
        cells.append(", ".join(sorted(set(members))) or "-")
        cells.append(f"{sum(replays)}/{len(replays)} seeds")
        cells.append("yes" if twin_passes(case.fixed) else "NO")
        for single in ("random", "pct", "bounded"):
            hits = [h[0] for seed in seeds if (h := found_at(case.bug, seed, single)) is not None]
            cells.append(
                f"{len(hits)}/{len(seeds)}, median {statistics.median(hits):g}"
                if hits
                else f"0/{len(seeds)}"
            )
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
