"""Issue 10: the second corpus, written after the strategies were tuned on the first (fast part).

Each bug of ``tests/harness_corpus2.py`` is found by ``check_deterministic``
with its default strategy (one seed here, within the run bound measured for
it over ten seeds), the failing schedule replays the failure 10 times out of
10, and no fixed twin is flagged. ``fuzz/test_corpus.py`` checks ten seeds
and 1000 runs of each twin; ``python fuzz/corpus_table.py 10 harness_corpus2``
prints the table of ``docs/testing.rst``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from harness_corpus import Case
from harness_corpus2 import CASES, MISSED

from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)

IDS = [c.name for c in CASES]


def outcome_of(program: Any, schedule: tuple[int, ...]) -> tuple[str, str]:
    """What one replay gives: its value, or its exception's type and message."""
    try:
        return ("value", repr(run_deterministic(program, schedule=schedule).value))
    except Exception as exc:
        return (type(exc).__name__, str(exc).split("\n")[0])


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


@pytest.mark.parametrize("case", MISSED, ids=[c.name for c in MISSED])
def test_the_missed_bugs_are_real_bugs_and_their_twins_pass(case: Case) -> None:
    # not found by the harness (see harness_corpus2.MISSED); plain trio.run shows them
    clock = trio.testing.MockClock
    values = {trio.run(case.bug, clock=clock(autojump_threshold=0)) for _ in range(40)}
    assert len(values) > 1
    check_deterministic(case.fixed, runs=200, seed=7)
