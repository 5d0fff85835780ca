"""Print the corpus table of ``docs/testing.rst``: which strategy finds each bug, and when.

    python fuzz/corpus_table.py [seeds]

For each buggy program of ``tests/harness_corpus.py`` and each seed of
``check_deterministic`` (default: 0 to 9), the run that found the bug with
the default strategy (the portfolio) and the portfolio member that ran it;
then, for each single strategy, in how many seeds it found the bug within
1000 runs and the median run. Runs are schedules; the FIFO run is run 0.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness_corpus import CASES

from trioflow.testing import check_deterministic, failing_schedule

RUNS = 1000


def found_at(program: object, seed: int, strategy: str) -> tuple[int, str] | None:
    try:
        check_deterministic(program, runs=RUNS, seed=seed, strategy=strategy)  # type: ignore[arg-type]
    except Exception as exc:
        replay = failing_schedule(exc)
        if replay is None:
            raise
        return replay.run, replay.strategy
    return None


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    header = ["bug", "kind", "portfolio: median run (worst)", "found by", "random", "pct", "bounded"]
    print(" | ".join(header))
    for case in CASES:
        runs, members = [], []
        for seed in seeds:
            hit = found_at(case.bug, seed, "portfolio")
            runs.append(RUNS if hit is None else hit[0])
            if hit is not None:
                members.append(hit[1].removeprefix("portfolio:"))
        cells = [case.name, case.kind, f"{statistics.median(runs):g} ({max(runs)})"]
        cells.append(", ".join(sorted(set(members))) or "-")
        for single in ("random", "pct", "bounded"):
            hits = [h[0] for seed in seeds if (h := found_at(case.bug, seed, single)) is not None]
            cells.append(f"{len(hits)}/{len(seeds)}, median {statistics.median(hits):g}" if hits else f"0/{len(seeds)}")
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
