"""Issue 10: run_deterministic and check_deterministic with backend="asyncio"."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

import trioflow
from trioflow.testing import (
    BudgetExceededError,
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)


async def lost_update() -> int:
    state = {"n": 0}

    async def inc() -> None:
        value = state["n"]
        await asyncio.sleep(0)
        state["n"] = value + 1

    await asyncio.gather(inc(), inc(), inc())
    return state["n"]


def test_schedules_order_the_ready_queue_and_replay_exactly() -> None:
    fifo = run_deterministic(lost_update, backend="asyncio")
    assert fifo.value == 1  # asyncio's FIFO loop runs the three reads first
    values = set()
    for seed in range(20):
        first = run_deterministic(lost_update, backend="asyncio", seed=seed)
        values.add(first.value)
        again = run_deterministic(lost_update, backend="asyncio", schedule=first.decisions)
        assert again == first
    assert values == {1, 2, 3}


def test_check_deterministic_finds_the_race_on_asyncio() -> None:
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(lost_update, backend="asyncio", runs=100)
    assert "backend='asyncio'" in str(info.value)
    replay = failing_schedule(info.value)
    assert replay is not None
    assert replay.backend == "asyncio"
    assert run_deterministic(lost_update, schedule=replay.schedule, backend="asyncio").value == info.value.got


def test_the_asyncio_clock_is_virtual_and_exact() -> None:
    async def main() -> tuple[float, float]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 5)
            with anyio.move_on_after(2):
                await anyio.sleep_forever()
            inner = anyio.current_time()
        return inner, asyncio.get_running_loop().time()

    began = time.perf_counter()
    result = run_deterministic(main, backend="asyncio", seed=3)
    assert result.value == (2.0, 5.0)
    assert result.virtual_time == 5.0
    assert time.perf_counter() - began < 2  # no real sleeping


def test_a_deadlock_on_asyncio_is_reported_with_each_task() -> None:
    async def main() -> None:
        event = asyncio.Event()

        async def waiter() -> None:
            await event.wait()

        await asyncio.gather(waiter(), waiter())

    with pytest.raises(DeadlockError) as info:
        run_deterministic(main, backend="asyncio")
    message = str(info.value)
    assert message.startswith("deadlock: every task is blocked and no timer is set")
    assert "main.<locals>.waiter#1" in message
    assert "in test_a_deadlock_on_asyncio_is_reported_with_each_task.<locals>.main.<locals>.waiter" in message
    assert "backend='asyncio'" in message


def test_a_budget_on_asyncio() -> None:
    async def ticker() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1)
            ticks += 1

    with pytest.raises(BudgetExceededError, match="max_virtual_time=100"):
        run_deterministic(ticker, backend="asyncio", max_virtual_time=100)


def test_executor_calls_are_decisions_on_asyncio() -> None:
    async def race() -> int:
        state = {"n": 0}

        def add_in_thread() -> None:
            state["n"] += 1

        async def add_in_task() -> None:
            value = state["n"]
            await asyncio.sleep(0)
            state["n"] = value + 1

        await asyncio.gather(asyncio.to_thread(add_in_thread), add_in_task())
        return state["n"]

    assert run_deterministic(race, backend="asyncio").value == 2
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(race, backend="asyncio", runs=200)
    for _ in range(10):
        assert run_deterministic(race, schedule=info.value.schedule, backend="asyncio").value == 1


def test_a_flow_on_the_asyncio_harness() -> None:
    flow = trioflow.Flow("fan")

    @flow.step
    async def numbers(n: int) -> list[int]:
        await anyio.sleep(1)
        return list(range(n))

    @flow.step(map_over="numbers", max_concurrent=2)
    async def square(numbers: int) -> int:
        await anyio.sleep(1)
        return numbers * numbers

    async def main() -> tuple[list[int], float]:
        result = await flow.run({"n": 4})
        return result["square"], result.duration

    assert check_deterministic(main, backend="asyncio", runs=30) == ([0, 1, 4, 9], 3.0)


def test_calling_it_inside_a_running_asyncio_loop_is_refused() -> None:
    async def nested() -> None:
        run_deterministic(lost_update, backend="asyncio")

    with pytest.raises(RuntimeError, match="inside a running asyncio loop"):
        asyncio.run(nested())
