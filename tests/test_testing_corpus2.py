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
from harness_corpus import Case, found_and_replayed
from harness_corpus2 import CASES

from trioflow.testing import (
    check_deterministic,
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
    found_and_replayed(case.bug)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_fixed_twin_is_flagged(case: Case) -> None:
    check_deterministic(case.fixed, runs=200, seed=7)


