"""Issue 10: the second corpus, written after the strategies were tuned on the first (fast part).

Each bug of ``tests/harness_corpus2.py`` is found by ``check_deterministic``
with its default strategy (one seed here, within the run bound measured for
it over ten seeds), the failing schedule replays the failure 10 times out of
10, and no fixed twin is flagged. ``fuzz/test_corpus.py`` checks ten seeds
and 1000 runs of each twin; ``python fuzz/corpus_table.py 10 harness_corpus2``
prints the table of ``docs/testing.rst``.
"""

from __future__ import annotations

import pytest
from harness_corpus import Case, outcome_of
from harness_corpus2 import CASES

from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
)

IDS = [c.name for c in CASES]


def test_the_second_corpus_covers_every_kind_of_the_issue() -> None:
    kinds = " ".join(c.kind for c in CASES)
    for kind in (
        "lost update",
        "check-then-act",
        "order violation",
        "lock-order deadlock",
        "lost-wakeup deadlock",
        "nested limiter exhaustion",
        "depth 2",
        "depth 3",
        "long hold-back",
        "a specific task of twelve",
        "channel close",
        "cancellation between two awaits",
        "timeouts at the same virtual instant",
        "thread race",
        "isolation='share'",
        "retries",
        "slot hand-over",
    ):
        assert kind in kinds, kind
    assert len(CASES) >= 16
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_bug_is_found_and_its_schedule_replays_10_of_10(case: Case) -> None:
    with pytest.raises((NonDeterminismError, DeadlockError)) as info:
        check_deterministic(case.bug, runs=1000, seed=0)
    replay = failing_schedule(info.value)
    assert replay is not None
    assert replay.run >= 1, "found by the FIFO run: the program is not schedule-dependent"
    first = outcome_of(case.bug, replay.schedule)
    assert first != outcome_of(case.bug, ())
    for _ in range(9):
        assert outcome_of(case.bug, replay.schedule) == first


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_fixed_twin_is_flagged(case: Case) -> None:
    check_deterministic(case.fixed, runs=200, seed=7)


