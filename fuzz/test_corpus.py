"""Issue 10: the corpora of buggy programs, the long way (``nox -s fuzz``).

For several seeds of ``check_deterministic`` with its default strategy, every
bug of ``tests/harness_corpus.py``, of ``tests/harness_corpus2.py`` (the
second corpus, written after the strategies were tuned on the first) and of
``tests/harness_corpus3.py`` (the third, written after the harness was fixed
for the second) is found within 1000 schedules and its
failing schedule replays the failure 10 times out of 10; every fixed twin
passes 1000 schedules, on trio and (for the programs written for asyncio too)
never flagged. ``python fuzz/corpus_table.py 10 harness_corpus`` (or
``harness_corpus2``, ``harness_corpus3``) prints the tables of ``docs/testing.rst``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import harness_corpus
import harness_corpus2
import harness_corpus3
from harness_corpus import Case

from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)

CASES = harness_corpus.CASES + harness_corpus2.CASES + harness_corpus3.CASES
IDS = (
    [c.name for c in harness_corpus.CASES]
    + [f"corpus2-{c.name}" for c in harness_corpus2.CASES]
    + [f"corpus3-{c.name}" for c in harness_corpus3.CASES]
)
SEEDS = range(10 if os.environ.get("TRIOFLOW_FUZZ_PROFILE") == "long" else 2)


def outcome_of(program: object, schedule: tuple[int, ...]) -> tuple[str, str]:
    try:
        return ("value", repr(run_deterministic(program, schedule=schedule).value))  # type: ignore[arg-type]
    except Exception as exc:
        return (type(exc).__name__, str(exc).split("\n")[0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_found_within_1000_schedules_and_replays_10_of_10(case: Case, seed: int) -> None:
    with pytest.raises((NonDeterminismError, DeadlockError)) as info:
        check_deterministic(case.bug, runs=1000, seed=seed)
    replay = failing_schedule(info.value)
    assert replay is not None
    assert replay.run >= 1
    outcomes = {outcome_of(case.bug, replay.schedule) for _ in range(10)}
    assert len(outcomes) == 1
    assert outcomes != {outcome_of(case.bug, ())}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fixed_twin_passes_1000_schedules(case: Case) -> None:
    check_deterministic(case.fixed, runs=1000, seed=12345)
