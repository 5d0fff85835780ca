"""Issue 10: the third corpus, written after the harness was fixed for the second (fast part).

Each bug of ``tests/harness_corpus3.py`` is found by ``check_deterministic``
with its default strategy (one seed here, within the 1000 runs the issue
allows), the failing schedule replays the failure 10 times out of 10, and
no fixed twin is flagged. The bugs the harness misses (``MISSED``) are
checked to be real under plain ``trio.run``. ``fuzz/test_corpus.py`` checks
ten seeds and 1000 runs of each twin; ``python fuzz/corpus_table.py 10
harness_corpus3`` prints the table of ``docs/testing.rst``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from harness_corpus import Case, outcome_of
from harness_corpus3 import CASES, MISSED

from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
)

IDS = [c.name for c in CASES]


def test_the_third_corpus_covers_every_kind_of_the_issue() -> None:
    kinds = " ".join(c.kind for c in CASES)
    for kind in (
        "lost update",
        "check-then-act",
        "order violation",
        "lock-order deadlock",
        "lost-wakeup deadlock",
        "nested limiter exhaustion",
        "depth 2",
        "depth 3 over 30 steps",
        "long hold-back",
        "three tasks held in a specific order",
        "a specific task of ten last",
        "channel close",
        "cancellation between two awaits",
        "timeouts at the same virtual instant",
        "thread race (anyio.to_thread",
        "thread race (trio.from_thread",
        "beside a ticker",
        "slot hand-over",
        "fail-fast mid-transfer",
        "trioflow.gather",
        "trioflow.race",
        "when=",
    ):
        assert kind in kinds, kind
    assert len(CASES) >= 20
    names = [c.name for c in CASES + MISSED]
    assert len(set(names)) == len(names)


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
def test_a_missed_bug_is_real_under_plain_trio(case: Case) -> None:
    # issue 10, third corpus: plain trio.run (batches in random order) shows the bug,
    # and its fixed twin never; each fails in about half of its runs or more
    def plain(program: object) -> str:
        try:
            return repr(trio.run(program, clock=trio.testing.MockClock(autojump_threshold=0)))  # type: ignore[arg-type]
        except Exception as exc:
            return type(exc).__name__
    fixed = {plain(case.fixed) for _ in range(20)}
    assert len(fixed) == 1
    assert fixed == {outcome_of(case.fixed, ())[1]}
    assert any(plain(case.bug) not in fixed for _ in range(40))
