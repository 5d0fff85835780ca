"""Issue 10: strategies, replay information, partial deadlocks, budgets, schedules() reach."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.lowlevel
from hypothesis import find, settings

from trioflow.testing import (
    PCT,
    Bounded,
    BudgetExceededError,
    DeadlockError,
    DecisionPoint,
    FailingSchedule,
    NonDeterminismError,
    Portfolio,
    RandomWalk,
    Strategy,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)


async def lost_update(workers: int = 2) -> int:
    state = {"n": 0}

    async def inc() -> None:
        value = state["n"]
        await trio.lowlevel.checkpoint()
        state["n"] = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(inc)
    return state["n"]


async def first_of(n: int) -> int:
    """n tasks each record themselves after one checkpoint; return the first recorded."""
    order: list[int] = []

    async def worker(i: int) -> None:
        await trio.lowlevel.checkpoint()
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(worker, i)
    return order[0]


class Recording:
    """A user strategy: always runs the newest task of a batch, and records what it saw."""

    def __init__(self) -> None:
        self.points: list[DecisionPoint] = []
        self.runs: list[int] = []
        self.ended: list[tuple[tuple[int, ...], int]] = []

    def start_run(self, run: int) -> None:
        self.runs.append(run)

    def decide(self, point: DecisionPoint) -> int:
        self.points.append(point)
        return len(point.choices)

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        self.ended.append((tuple(decisions), steps))


# -- strategies -----------------------------------------------------------------------


def test_a_user_strategy_sees_stable_task_names_and_the_step_count() -> None:
    strategy = Recording()
    assert isinstance(strategy, Strategy)
    result = run_deterministic(first_of, 3, strategy=strategy)
    assert result.value == 2
    first = strategy.points[0]
    assert first.kind == "batch"
    assert first.index == 0
    assert first.step > 0
    assert first.choices == tuple(
        f"{__name__}.first_of.<locals>.worker#{i}" for i in (1, 2, 3)
    )
    assert [p.index for p in strategy.points] == list(range(len(strategy.points)))
    assert strategy.runs == [0]
    assert strategy.ended == [(result.decisions, result.steps)]
    # the decisions it took replay as an explicit schedule
    assert run_deterministic(first_of, 3, schedule=result.decisions) == result


def test_check_deterministic_gives_runs_to_a_user_strategy_in_order() -> None:
    strategy = Recording()
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(first_of, 3, runs=5, strategy=strategy)
    assert strategy.runs == [1]
    assert info.value.run == 1
    assert info.value.strategy == "Recording"


@pytest.mark.parametrize("name", ["random", "pct", "bounded", "portfolio"])
def test_every_named_strategy_runs_and_replays(name: str) -> None:
    for seed in range(3):
        result = run_deterministic(lost_update, 3, strategy=name, seed=seed)
        again = run_deterministic(lost_update, 3, schedule=result.decisions)
        assert again == result


def test_a_seed_alone_means_the_random_walk() -> None:
    assert run_deterministic(lost_update, 3, seed=7) == run_deterministic(
        lost_update, 3, seed=7, strategy="random"
    )


@pytest.mark.parametrize(
    ("strategy", "error", "match"),
    [
        ("pst", ValueError, r"strategy must be one of 'random', 'pct', 'bounded', 'portfolio'.*got 'pst'"),
        (42, TypeError, r"got 42 \(a int\)"),
    ],
)
def test_bad_strategies_are_rejected_before_any_run(
    strategy: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_deterministic(lost_update, strategy=strategy)
    with pytest.raises(error, match=match):
        run_deterministic(lost_update, strategy=strategy)


def test_a_strategy_returning_garbage_is_a_clear_error() -> None:
    class Bad(Recording):
        def decide(self, point: DecisionPoint) -> int:
            return -1

    with pytest.raises(TypeError, match=r"Bad.decide\(\) must return an int >= 0, got -1"):
        run_deterministic(lost_update, strategy=Bad())


def test_bad_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend must be 'trio' or 'asyncio', got 'curio'"):
        run_deterministic(lost_update, backend="curio")


def test_pct_priorities_hold_one_task_back_for_a_whole_run() -> None:
    # depth 1: the run follows one random priority order of the tasks
    firsts = set()
    strategy = PCT(seed=1, depth=1)
    for _ in range(40):  # each run_deterministic is one run of the strategy
        firsts.add(run_deterministic(first_of, 5, strategy=strategy).value)
    assert firsts == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="PCT depth must be an int >= 1 or None, got 0"):
        PCT(depth=0)


def test_bounded_search_tries_each_schedule_once_in_order_of_non_fifo_decisions() -> None:
    strategy = Bounded(max_bound=2)
    seen: list[tuple[int, ...]] = []
    while strategy.queue:
        seen.append(run_deterministic(lost_update, 2, strategy=strategy).decisions)
    assert seen[0] == ()
    nonzero = [sum(1 for d in s if d) for s in seen]
    assert nonzero == sorted(nonzero)
    assert max(nonzero) == 2
    assert len(set(seen)) == len(seen)
    assert not strategy.queue


def test_check_deterministic_stops_when_a_bounded_search_is_exhausted() -> None:
    calls = [0]

    async def counted() -> int:
        calls[0] += 1
        return await first_of(1)

    assert check_deterministic(counted, runs=1000, strategy="bounded") == 0
    assert calls[0] <= 3


def test_the_portfolio_takes_turns() -> None:
    portfolio = Portfolio(seed=0)
    names = []
    for run in range(1, 7):
        portfolio.start_run(run)
        names.append(portfolio.member_name)
        portfolio.end_run((), 0)
    assert names == ["random", "pct(d=1)", "bounded", "pct(d=2)", "random", "pct(d=3)"]
    assert isinstance(portfolio.members[0], RandomWalk)


# -- replay information -------------------------------------------------------------


def test_the_programs_own_exception_carries_its_replay() -> None:
    async def fails() -> None:
        if await lost_update() == 2:  # FIFO loses the update; other schedules do not
            raise KeyError("two")

    with pytest.raises(KeyError) as info:
        run_deterministic(fails, strategy="pct", seed=3)
    replay = failing_schedule(info.value)
    assert isinstance(replay, FailingSchedule)
    assert replay.strategy == "pct"
    assert replay.seed == 3
    assert replay.run == 0
    with pytest.raises(KeyError):
        run_deterministic(fails, schedule=replay.schedule)
    assert failing_schedule(ValueError("elsewhere")) is None


def test_check_deterministic_says_which_run_differed_with_both_values() -> None:
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(lost_update, runs=100, seed=5)
    error = info.value
    assert error.run >= 1
    assert error.seed == 5
    assert error.strategy.startswith("portfolio:")
    assert (error.expected, error.got) == (1, 2)
    message = str(error)
    assert f"run {error.run} (strategy {error.strategy!r}, seed 5) differs from run 0 (FIFO)" in message
    assert "run 0, schedule=[] (FIFO): value=1" in message
    assert f"schedule={list(error.schedule)!r}: value=2" in message
    assert failing_schedule(error) == FailingSchedule(
        error.schedule, 5, error.strategy, error.run, "trio", 0
    )


def test_a_program_exception_under_check_deterministic_names_its_run() -> None:
    async def sometimes_fails() -> int:
        if await lost_update() == 2:
            raise ValueError("two")
        return 1

    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(sometimes_fails, runs=100)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    replay = failing_schedule(cause)
    assert replay is not None
    assert replay.run == info.value.run >= 1


def test_deadlocks_found_by_check_deterministic_carry_run_strategy_and_seed() -> None:
    async def maybe_deadlock() -> None:
        first, second = trio.Lock(), trio.Lock()

        async def forward() -> None:
            async with first:
                await trio.lowlevel.checkpoint()
                async with second:
                    pass

        async def backward() -> None:
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            async with second:
                await trio.lowlevel.checkpoint()
                async with first:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            nursery.start_soon(backward)

    with pytest.raises(DeadlockError) as info:
        check_deterministic(maybe_deadlock, runs=500, seed=1)
    error = info.value
    assert error.run >= 1
    assert error.seed == 1
    assert error.strategy.startswith("portfolio:")
    assert error.schedule == error.decisions
    assert any(f"(run {error.run} of trioflow.testing.check_deterministic" in n for n in error.__notes__)
    with pytest.raises(DeadlockError):
        run_deterministic(maybe_deadlock, schedule=error.schedule)


# -- partial deadlocks and budgets ---------------------------------------------------


async def ticker_beside(program: Any) -> None:
    async def ticker() -> None:
        ticks = 0
        while True:
            await trio.sleep(0.5)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await program()
        nursery.cancel_scope.cancel()


def test_a_lock_cycle_beside_a_ticker_is_reported_at_once() -> None:
    async def cycle() -> None:
        first, second = trio.Lock(), trio.StrictFIFOLock()

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

    with pytest.raises(DeadlockError) as info:
        run_deterministic(ticker_beside, cycle)
    message = str(info.value)
    assert message.startswith("deadlock: 2 tasks wait for each other in a cycle, at virtual time 1.0")
    assert "forward#" in message
    assert "backward#" in message
    assert "holds a trio.Lock wanted by" in message
    assert "waits for a trio.StrictFIFOLock held by" in message
    assert "ticker_beside.<locals>.ticker#" not in message


def test_a_limiter_cycle_is_reported() -> None:
    async def cycle() -> None:
        a, b = trio.CapacityLimiter(1), trio.CapacityLimiter(1)

        async def one() -> None:
            async with a:
                await trio.sleep(1)
                async with b:
                    pass

        async def two() -> None:
            async with b:
                await trio.sleep(1)
                async with a:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(two)

    with pytest.raises(DeadlockError, match=r"waits for a trio.CapacityLimiter\(1\) held by"):
        run_deterministic(ticker_beside, cycle)


def test_a_condition_whose_waiter_needs_the_lock_back_is_part_of_a_cycle() -> None:
    async def cycle() -> None:
        condition = trio.Condition()
        other = trio.Lock()

        async def waiter() -> None:
            async with condition:
                await condition.wait()  # woken below, then needs the condition's lock back
                async with other:
                    pass

        async def notifier() -> None:
            await trio.sleep(1)
            async with other:
                async with condition:
                    condition.notify()
                # still holds `other`, now wants the condition's lock again
                async with condition:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(notifier)

    # no cycle: the waiter re-takes the lock, then waits for `other`, which the
    # notifier holds while it waits for the lock: a cycle of two
    with pytest.raises(DeadlockError, match="2 tasks wait for each other in a cycle"):
        run_deterministic(ticker_beside, cycle)


def test_a_notified_condition_waiter_still_waiting_for_the_lock_is_part_of_a_cycle() -> None:
    # issue 10: the end of Condition.wait, once notified, waits for the lock's owner
    async def cycle() -> None:
        condition = trio.Condition()
        other = trio.Lock()

        async def waiter() -> None:
            async with other, condition:
                await condition.wait()  # holds `other` all along

        async def notifier() -> None:
            await trio.sleep(1)
            async with condition:
                condition.notify()  # the waiter now waits for the condition's lock ...
                async with other:  # ... which this task holds while it waits for `other`
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(notifier)

    with pytest.raises(DeadlockError) as info:
        run_deterministic(ticker_beside, cycle)
    message = str(info.value)
    assert message.startswith("deadlock: 2 tasks wait for each other in a cycle, at virtual time 1.0")
    assert "cycle.<locals>.waiter#" in message
    assert "cycle.<locals>.notifier#" in message
    assert "ticker#" not in message


def test_a_condition_waiter_before_any_notify_is_no_cycle_beside_a_ticker() -> None:
    # nobody holds anything the waiter needs: the ticker could notify, so it is no deadlock
    async def late_notify() -> int:
        condition = trio.Condition()
        woken = []

        async def waiter() -> None:
            async with condition:
                await condition.wait()
                woken.append(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            for _ in range(50):
                await trio.sleep(1)  # ticks for a while, then notifies
            async with condition:
                condition.notify()
        return len(woken)

    assert run_deterministic(late_notify).value == 1


async def semaphore_held_while_waiting() -> None:
    """a takes the only unit of a semaphore, then waits for b, which needs the unit first."""
    semaphore = trio.Semaphore(1)
    b_done = trio.Event()

    async def a() -> None:
        async with semaphore:
            await b_done.wait()

    async def b() -> None:
        await trio.lowlevel.checkpoint()
        async with semaphore:
            b_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a)
        nursery.start_soon(b)


def test_a_semaphore_deadlock_names_the_semaphore_and_why_it_is_no_cycle() -> None:
    # issue 10: a semaphore has no owner; once every task is blocked the
    # deadlock is certain, and the report says what each task waits for
    with pytest.raises(DeadlockError) as info:
        run_deterministic(semaphore_held_while_waiting)
    message = str(info.value)
    assert message.startswith("deadlock: every task is blocked")
    assert re.search(
        r"semaphore_held_while_waiting\.<locals>\.b#\d+: .*\n      waits for a trio\.Semaphore of "
        r"value 0 \(a semaphore has no owner: any task may release it, so the harness cannot "
        r"tell who would\)",
        message,
    )


def test_a_semaphore_released_by_a_task_that_never_acquired_it_is_no_deadlock() -> None:
    # a semaphore as a signal: the consumer's wait is ended by the ticking
    # producer, which holds nothing; a wait-for edge to "holders" would be wrong
    async def signal() -> int:
        ready = trio.Semaphore(0)
        got = []

        async def consumer() -> None:
            await ready.acquire()
            got.append(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            for _ in range(30):
                await trio.sleep(1)
            ready.release()
        return len(got)

    assert run_deterministic(signal).value == 1
    assert check_deterministic(signal, runs=20) == 1


def test_a_lost_notify_beside_a_ticker_is_named_in_the_budget_error() -> None:
    async def lost() -> None:
        condition = trio.Condition()
        async with condition:
            condition.notify()  # nobody waits yet: this wakes nobody
        async with condition:
            await condition.wait()  # waits for the notify that already happened

    with pytest.raises(BudgetExceededError) as info:
        run_deterministic(ticker_beside, lost, max_virtual_time=50)
    message = str(info.value)
    assert re.search(
        r"ticker_beside#0: blocked since virtual time 0\.0, at .* in .*lost "
        r"\(awaiting Condition\.wait\)\n"
        r"      waits for a notify of a trio\.Condition; it was notified once while no task "
        r"waited \(last by .*ticker_beside#0 at virtual time 0\.0\): a lost wakeup\?",
        message,
    )


def test_a_budget_error_names_the_tasks_blocked_the_longest() -> None:
    async def stuck_beside_ticker() -> None:
        async def stuck() -> None:
            await trio.Event().wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            ticks = 0
            while True:
                await trio.sleep(1)
                ticks += 1

    with pytest.raises(BudgetExceededError) as info:
        run_deterministic(stuck_beside_ticker, max_virtual_time=100)
    message = str(info.value)
    assert "Tasks blocked the longest:" in message
    assert "stuck_beside_ticker.<locals>.stuck#1: blocked since virtual time 0.0" in message
    assert "(awaiting Event.wait)" in message


# -- schedules() and Hypothesis --------------------------------------------------------


def test_schedules_reach_the_last_of_ten_and_of_twenty_tasks() -> None:
    from trioflow.testing.strategies import schedules

    for n in (10, 20):
        found = find(
            schedules(max_size=1),
            lambda s, n=n: run_deterministic(first_of, n, schedule=s).value == n - 1,  # type: ignore[misc]
            settings=settings(database=None, max_examples=2000),
        )
        assert len(found) == 1
        assert (found[0] - 1) % n == n - 1  # the value wraps to the last task of n
        assert run_deterministic(first_of, n, schedule=found).decisions == (n,)
    with pytest.raises(ValueError, match=r"schedules\(max_value=0\) must be an int >= 1"):
        schedules(max_value=0)


def test_importing_the_strategies_leaves_plain_trio_scheduling_alone() -> None:
    code = (
        "from trio._core import _run as r\n"
        "before = (r._ALLOW_DETERMINISTIC_SCHEDULING, type(r._r))\n"
        "import trioflow.testing.strategies\n"
        "from hypothesis.internal.entropy import RANDOMS_TO_MANAGE\n"
        "after = (r._ALLOW_DETERMINISTIC_SCHEDULING, type(r._r))\n"
        "print(before == after == (False, __import__('random').Random),"
        " any(v is r._r for v in RANDOMS_TO_MANAGE.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    # what trio itself does when Hypothesis is imported first (documented in testing.rst)
    code = "from trio._core import _run as r\nimport hypothesis\nprint(r._ALLOW_DETERMINISTIC_SCHEDULING)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_nested_limiter_exhaustion_beside_a_ticker_is_a_cycle_through_the_children() -> None:
    async def nested() -> None:
        limiter = trio.CapacityLimiter(2)

        async def inner() -> None:
            async with limiter:
                pass

        async def outer() -> None:
            async with limiter:
                await trio.sleep(1)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(inner)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(outer)
            nursery.start_soon(outer)

    with pytest.raises(DeadlockError) as info:
        run_deterministic(ticker_beside, nested)
    message = str(info.value)
    assert "tasks wait for each other in a cycle, at virtual time 1.0" in message
    assert "waits for a trio.CapacityLimiter(2) held by" in message
    assert "waits for a nursery (its child tasks to finish) held by" in message


def test_a_limiter_wait_is_no_deadlock_while_another_borrower_can_let_go() -> None:
    async def busy_then_free() -> str:
        limiter = trio.CapacityLimiter(2)
        lock = trio.Lock()
        go_on = trio.Event()

        async def holds_lock_wants_slot() -> None:
            async with lock:
                await trio.sleep(1)
                async with limiter:  # both slots taken: waits
                    pass

        async def holds_slot_wants_lock() -> None:
            async with limiter:
                await trio.sleep(2)
                async with lock:  # waits for the task above: a cycle of two...
                    pass

        async def holds_slot_then_lets_go() -> None:
            async with limiter:
                await go_on.wait()  # ...but this borrower lets its slot go at t=3

        async def releaser() -> None:
            await trio.sleep(3)
            go_on.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holds_lock_wants_slot)
            nursery.start_soon(holds_slot_wants_lock)
            nursery.start_soon(holds_slot_then_lets_go)
            nursery.start_soon(releaser)
        return "done"

    assert check_deterministic(busy_then_free, runs=50) == "done"


def test_a_lock_order_inversion_resolved_by_a_timeout_is_no_deadlock() -> None:
    async def with_timeout() -> list[str]:
        first, second = trio.Lock(), trio.Lock()
        outcomes: list[str] = []

        async def forward() -> None:
            async with first:
                await trio.sleep(1)
                with trio.move_on_after(5) as scope:
                    async with second:
                        pass
                outcomes.append("forward gave up" if scope.cancelled_caught else "forward")

        async def backward() -> None:
            async with second:
                await trio.sleep(1)
                async with first:
                    outcomes.append("backward")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            nursery.start_soon(backward)
        return outcomes

    result = run_deterministic(ticker_beside_value, with_timeout)
    assert result.value == ["forward gave up", "backward"]
    assert result.virtual_time == 6.0


async def ticker_beside_value(program: Any) -> Any:
    async def ticker() -> None:
        ticks = 0
        while True:
            await trio.sleep(0.5)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        value = await program()
        nursery.cancel_scope.cancel()
    return value


def test_anyio_locks_and_a_cycle_of_three_are_seen_beside_a_ticker() -> None:
    import anyio
    import anyio.lowlevel

    async def anyio_cycle() -> None:
        first, second = anyio.Lock(), anyio.Lock()

        async def forward() -> None:
            async with first:
                await anyio.sleep(1)
                async with second:
                    pass

        async def backward() -> None:
            async with second:
                await anyio.sleep(1)
                async with first:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(forward)
            tg.start_soon(backward)

    async def three() -> None:
        locks = [trio.Lock() for _ in range(3)]

        async def worker(i: int) -> None:
            async with locks[i]:
                await trio.sleep(1)
                async with locks[(i + 1) % 3]:
                    pass

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(worker, i)

    with pytest.raises(DeadlockError, match="2 tasks wait for each other in a cycle"):
        run_deterministic(ticker_beside, anyio_cycle)
    with pytest.raises(DeadlockError, match="3 tasks wait for each other in a cycle") as info:
        run_deterministic(ticker_beside, three)
    assert str(info.value).count("holds a trio.Lock wanted by") == 3
