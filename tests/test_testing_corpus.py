"""Issue 10: the corpus of buggy programs and their fixed twins (the fast part).

With its default strategy, ``check_deterministic`` finds every bug within
1000 schedules, the failing schedule replays the failure 10 times out of 10,
and no fixed twin is flagged. ``fuzz/test_corpus.py`` runs the same with more
seeds and more runs of the twins.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from harness_corpus import CASES, Case, FlowHandover, found_and_replayed

from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)

IDS = [c.name for c in CASES]


def find(case: Case, seed: int = 0, runs: int = 1000) -> Exception:
    with pytest.raises((NonDeterminismError, DeadlockError)) as info:
        check_deterministic(case.bug, runs=runs, seed=seed)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_bug_is_found_and_its_schedule_replays_10_of_10(case: Case) -> None:
    error, first = found_and_replayed(case.bug)
    replay = failing_schedule(error)
    assert replay is not None
    assert replay.schedule == error.schedule  # type: ignore[attr-defined]
    if isinstance(error, NonDeterminismError) and not isinstance(error.got, BaseException):
        assert first == ("value", repr(error.got))
    if isinstance(error, DeadlockError):
        assert first[0] == "DeadlockError"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_fixed_twin_is_flagged(case: Case) -> None:
    check_deterministic(case.fixed, runs=200)


def test_the_slot_handover_bug_shows_under_plain_trio_and_only_at_once_hand_overs() -> None:
    # issue 10 item 3: production hands a freed slot over at once, every time
    clock = trio.testing.MockClock
    assert {trio.run(FlowHandover.bug, clock=clock(autojump_threshold=0)) for _ in range(20)} == {1}
    # the harness settles by default (FIFO) ...
    assert run_deterministic(FlowHandover.bug).value == 0
    # ... and finds the at-once hand-over, reported with its replay
    error = find(next(c for c in CASES if c.name == "flow_slot_handover"))
    assert isinstance(error, NonDeterminismError)
    assert (error.expected, error.got) == (0, 1)
    assert run_deterministic(FlowHandover.bug, schedule=error.schedule).value == 1


def test_a_partial_deadlock_beside_a_heartbeat_is_a_cycle_naming_both_locks() -> None:
    case = next(c for c in CASES if c.name == "lock_order_deadlock")
    error = find(case)
    message = str(error)
    assert message.startswith("deadlock: 2 tasks wait for each other in a cycle")
    assert message.count("holds a trio.Lock wanted by") == 2
    assert message.count("waits for a trio.Lock held by") == 2
    assert "_heartbeat" not in message
    assert "LockOrder.bug.<locals>.forward#" in message
    assert "LockOrder.bug.<locals>.backward#" in message


def test_a_lost_wakeup_through_a_condition_is_found_and_explained() -> None:
    # issue 10: the notify happened while nobody waited; the report says so
    case = next(c for c in CASES if c.name == "condition_lost_wakeup")
    error = find(case)
    assert isinstance(error, DeadlockError)
    message = str(error)
    assert message.startswith("deadlock: every task is blocked")
    assert "ConditionLostWakeup.bug.<locals>.consumer#" in message
    assert (
        "waits for a notify of a trio.Condition; it was notified once while no task waited "
        "(last by harness_corpus.ConditionLostWakeup.bug.<locals>.producer#"
    ) in message
    assert "a lost wakeup? Check the condition's predicate while holding its lock" in message
