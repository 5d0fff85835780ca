"""Issue 10: the third corpus, written after the harness was fixed for the second (fast part).

Each bug of ``tests/harness_corpus3.py`` is found by ``check_deterministic``
with its default strategy (one seed here, within the 1000 runs the issue
allows), the failing schedule replays the failure 10 times out of 10, and
no fixed twin is flagged. The bugs that plain ``trio.run`` shows by itself
are checked to be real there. ``fuzz/test_corpus.py`` checks
ten seeds and 1000 runs of each twin; ``python fuzz/corpus_table.py 10
harness_corpus3`` prints the table of ``docs/testing.rst``.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from harness_corpus import Case, found_and_replayed, outcome_of
from harness_corpus3 import CASES

from trioflow.testing import (
    check_deterministic,
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
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    # the five that were missed until the harness was fixed for them (issue 10)
    assert {
        "map_slot_handover",
        "map_failfast_mid_transfer",
        "gather_failfast_mid_load",
        "map_stale_item_3_of_10_last",
        "flow_stale_step_3_of_10_last",
    } <= set(names)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_bug_is_found_and_its_schedule_replays_10_of_10(case: Case) -> None:
    found_and_replayed(case.bug)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_fixed_twin_is_flagged(case: Case) -> None:
    check_deterministic(case.fixed, runs=200, seed=7)


# the bugs that plain trio.run itself shows in a fair share of its runs (it runs each
# batch in random order); the others need a task held back longer than one batch, which
# plain trio never does with checkpoints alone, but a slower network or disk does
PLAIN_TRIO = [
    "reusable_barrier_event",
    "fail_after_at_reply_instant",
    "flow_map_slot_handover",
    "flow_map_refund_failfast",
    "map_slot_handover",
    "map_failfast_mid_transfer",
    "gather_failfast_mid_load",
]


def plain_trio(program: object) -> str:
    async def guarded() -> str:
        with trio.move_on_after(10**6):  # a deadlock ends here (autojump to the deadline)
            return repr(await program())  # type: ignore[operator]
        return "deadlock"

    try:
        return trio.run(guarded, clock=trio.testing.MockClock(autojump_threshold=0))
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize("name", PLAIN_TRIO)
def test_the_bug_shows_under_plain_trio_and_the_twin_never(name: str) -> None:
    case = next(c for c in CASES if c.name == name)
    fixed = {plain_trio(case.fixed) for _ in range(10)}
    assert fixed == {outcome_of(case.fixed, ())[1]}
    bug = [plain_trio(case.bug) for _ in range(40)]
    assert {outcome for outcome in bug if outcome not in fixed}

