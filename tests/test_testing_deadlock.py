"""Deadlock detection and step budgets of run_deterministic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from trioflow.testing import BudgetExceededError, DeadlockError, run_deterministic

HERE = re.escape(__file__)


async def event_cycle() -> None:
    """a waits for b's event, b waits for a's: neither can ever go on."""
    a_done, b_done = trio.Event(), trio.Event()

    async def a() -> None:
        await b_done.wait()
        a_done.set()

    async def b() -> None:
        await a_done.wait()
        b_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a)
        nursery.start_soon(b)


async def lock_order_inversion() -> None:
    """Two tasks take two locks in opposite orders, with a schedule point in between."""
    first, second = trio.Lock(), trio.Lock()

    async def forward() -> None:
        async with first:
            await trio.sleep(1)
            async with second:
                pass

    async def backward() -> None:
        async with second:
            await trio.sleep(1)
            async with first:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forward)
        nursery.start_soon(backward)


async def shielded_wait() -> None:
    with trio.CancelScope(shield=True):
        await trio.Event().wait()


def test_event_cycle_is_reported_with_each_task_and_line() -> None:
    with pytest.raises(DeadlockError) as info:
        run_deterministic(event_cycle)
    message = str(info.value)
    assert message.startswith("deadlock: every task is blocked and no deadline is pending")
    assert re.search(
        rf"event_cycle\.<locals>\.a#\d+: {HERE}:\d+ in event_cycle\.<locals>\.a "
        r"\(awaiting Event\.wait\)",
        message,
    )
    assert re.search(
        rf"event_cycle\.<locals>\.b#\d+: {HERE}:\d+ in event_cycle\.<locals>\.b "
        r"\(awaiting Event\.wait\)",
        message,
    )
    assert "(waiting for its child tasks)" in message
    assert "Replay it exactly with run_deterministic(..., schedule=[])" in message


def test_deadlock_is_raised_as_it_is_not_in_a_group() -> None:
    with pytest.raises(DeadlockError) as info:
        run_deterministic(event_cycle, seed=4)
    assert type(info.value) is DeadlockError


def test_lock_order_inversion_is_reported_at_the_second_acquire() -> None:
    with pytest.raises(DeadlockError) as info:
        run_deterministic(lock_order_inversion, seed=0)
    message = str(info.value)
    assert "virtual time 1.0" in message
    assert re.search(
        r"lock_order_inversion\.<locals>\.forward#\d+: .*in "
        r"lock_order_inversion\.<locals>\.forward \(awaiting \w+\.__aenter__\)",
        message,
    )
    assert re.search(
        r"lock_order_inversion\.<locals>\.backward#\d+: .*in "
        r"lock_order_inversion\.<locals>\.backward \(awaiting \w+\.__aenter__\)",
        message,
    )


def test_a_deadlock_replays_from_its_decisions() -> None:
    for seed in range(3):
        with pytest.raises(DeadlockError) as info:
            run_deterministic(lock_order_inversion, seed=seed)
        with pytest.raises(DeadlockError) as again:
            run_deterministic(lock_order_inversion, schedule=info.value.decisions)
        assert str(again.value) == str(info.value)


def test_shielded_wait_is_reported_and_stopped() -> None:
    with pytest.raises(
        DeadlockError, match=r"shielded_wait#0: .*in shielded_wait \(awaiting Event\.wait\)"
    ):
        run_deterministic(shielded_wait)


def test_long_sleeps_and_timeouts_are_not_deadlocks() -> None:
    async def patient() -> float:
        await trio.sleep(10**6)
        with trio.move_on_after(500):
            await trio.Event().wait()  # only the deadline can end this, and it does
        with trio.fail_after(10):
            await trio.sleep(9)
        return trio.current_time()

    result = run_deterministic(patient, grace=0.0)
    assert result.value == result.virtual_time == 10**6 + 500 + 9


def test_a_grace_of_zero_still_finds_deadlocks() -> None:
    with pytest.raises(DeadlockError):
        run_deterministic(event_cycle, grace=0.0)


def test_an_endless_ticker_exceeds_max_virtual_time() -> None:
    async def ticker() -> None:
        while True:  # noqa: ASYNC110 (an endless ticker, on purpose)
            await trio.sleep(60)

    with pytest.raises(BudgetExceededError) as info:
        run_deterministic(ticker, max_virtual_time=3600)
    message = str(info.value)
    assert "the run exceeded max_virtual_time=3600.0 seconds (at virtual time 3660.0" in message
    assert (
        f"Busiest tasks: {__name__}.test_an_endless_ticker_exceeds_max_virtual_time.<locals>.ticker#0"
        in message
    )
    assert type(info.value) is BudgetExceededError


def test_a_livelock_exceeds_max_steps() -> None:
    async def livelock() -> None:
        turn = [0]

        async def polite(me: int) -> None:
            while True:  # each keeps yielding to the other, forever
                turn[0] = 1 - me
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(polite, 0)
            nursery.start_soon(polite, 1)

    with pytest.raises(
        BudgetExceededError, match=r"the run exceeded max_steps=500 task steps"
    ) as info:
        run_deterministic(livelock, max_steps=500, seed=2)
    assert info.value.decisions  # replayable


def test_a_shielded_livelock_is_stopped_too() -> None:
    async def stubborn() -> None:
        with trio.CancelScope(shield=True):
            while True:
                await trio.lowlevel.checkpoint()

    with pytest.raises(BudgetExceededError, match="max_steps=100 "):
        run_deterministic(stubborn, max_steps=100)


def test_a_flow_step_that_waits_forever_is_reported_at_its_line() -> None:
    import trioflow

    flow = trioflow.Flow("stuck")
    never = trio.Event()

    @flow.step
    async def fetch() -> int:
        await trio.sleep(2)
        return 1

    @flow.step
    async def wait_for_approval(fetch: int) -> int:
        await never.wait()  # nobody ever sets it
        return fetch

    with pytest.raises(DeadlockError) as info:
        run_deterministic(flow.run)
    message = str(info.value)
    assert "at virtual time 2.0" in message
    assert re.search(
        rf"{HERE}:\d+ in test_a_flow_step_that_waits_forever_is_reported_at_its_line"
        r"\.<locals>\.wait_for_approval \(awaiting Event\.wait\)",
        message,
    )


def test_work_in_a_thread_is_activity_not_a_deadlock() -> None:
    # grace=0: the first idle-looking moment would be reported if the waiting
    # on a worker thread did not count as activity
    def busy() -> int:
        return sum(range(300_000))

    async def main() -> int:
        return await trio.to_thread.run_sync(busy)

    assert run_deterministic(main, grace=0.0).value == sum(range(300_000))


def test_a_store_writing_through_threads_is_not_a_deadlock(tmp_path: Path) -> None:
    import trioflow

    flow = trioflow.Flow("stored")

    @flow.step
    async def a() -> int:
        return 1

    @flow.step
    async def b(a: int) -> int:
        return a + 1

    store = trioflow.SQLiteStore(tmp_path / "runs.db", threaded=True)

    async def main() -> dict[str, int]:
        return dict((await flow.run(store=store, run_id="r1")).outputs)

    assert run_deterministic(main, grace=0.0).value == {"a": 1, "b": 2}
