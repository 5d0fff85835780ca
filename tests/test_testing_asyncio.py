"""Issue 10: run_deterministic and check_deterministic with backend="asyncio"."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from test_issue9_instant import _instant_flow, _items, _steps

import trioflow
from trioflow._scheduler import quiescent_scheduling, settle_decision
from trioflow.testing import (
    BudgetExceededError,
    DeadlockError,
    DecisionPoint,
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


# -- issue 10 "asyncio too": the engine's quiescent mode on the asyncio harness --------

STRATEGY_NAMES = ("random", "pct", "bounded", "portfolio")


async def _instant_outcome(b_kind: str, mapped: bool, max_concurrent: int | None) -> Any:
    try:
        await _instant_flow(b_kind, mapped).run(max_concurrent=max_concurrent)
    except trioflow.FlowError as err:
        items = _items(err, "b") if mapped else ()
        return _steps(err), items, tuple(repr(e) for e in err.exceptions)
    return "no FlowError"


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("b_kind", ["blocks", "yields", "never"])
def test_issue10_fail_fast_at_one_instant_is_schedule_independent_on_asyncio(
    b_kind: str, mapped: bool, strategy: str
) -> None:
    # a ends as c fails: a step that finished at the failure instant is never
    # reported cancelled (fail-fast's cancellation lands only once the tasks
    # of the failure's batch, and those its timers wake, have run), and PCT
    # does not livelock on anyio's cancellation delivery; the asyncio harness
    # gives what the trio harness gives
    fn = functools.partial(_instant_outcome, b_kind, mapped, None)
    expected = check_deterministic(fn, runs=1)
    assert expected[0][0] == ("a", "succeeded", 1)
    if b_kind != "yields":
        assert check_deterministic(fn, runs=300, strategy=strategy, backend="asyncio") == expected
        return
    # b's await does not block, and the cancellation may land before b goes on,
    # as under plain trio and plain asyncio: the harness shows both (no blind spot;
    # the bounded search reaches that decision after a few hundred schedules)
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(fn, runs=1000, strategy=strategy, backend="asyncio")
    seen = {info.value.expected[0][1], info.value.got[0][1]}  # type: ignore[index]
    assert seen == {("b", "succeeded", 1), ("b", "cancelled", 1)}


class _PreferCallbacks:
    """Always runs a callback that is not a task's step, when one is a choice."""

    def start_run(self, run: int) -> None:
        pass

    def decide(self, point: DecisionPoint) -> int:
        for k, choice in enumerate(point.choices, 1):
            if choice.startswith("callback:"):
                return k
        return 0

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        pass


def test_issue10_a_callback_that_only_posts_itself_again_is_not_a_choice() -> None:
    # anyio delivers a cancellation by a callback that posts itself again each
    # loop iteration until the task it cancelled has run; a strategy that always
    # picks it would starve that task forever: it runs after each decision instead
    async def cancel_a_sleeper() -> tuple[float, bool]:
        cancelled = []

        async def sleeper() -> None:
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.sleep(1)
            tg.cancel_scope.cancel()
        return anyio.current_time(), bool(cancelled)

    result = run_deterministic(
        cancel_a_sleeper, strategy=_PreferCallbacks(), backend="asyncio", max_steps=10_000
    )
    assert result.value == (1.0, True)
    labels = [event.task for event in result.trace if event.kind == "step"]
    assert not any("_deliver_cancellation" in label for label in labels)  # (a callback, not a task)
    assert check_deterministic(cancel_a_sleeper, runs=300, strategy="pct", backend="asyncio") == (1.0, True)


def _sleeper(name: str, seconds: float, deps: tuple[str, ...] = ()) -> Any:
    async def step(**kwargs: Any) -> str:
        await anyio.sleep(seconds)
        return name

    step.__name__ = name
    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
    )
    return step


def _contended_flow() -> trioflow.Flow:
    # tests/test_quiescent.py's flow, on anyio: b and r1 end together at t=1, and
    # the steps that b makes ready then (v1, v2) outrank those already waiting
    flow = trioflow.Flow("contended")
    flow.add(_sleeper("a", 1))
    flow.add(_sleeper("b", 1))
    flow.add(_sleeper("r1", 1), cost=5)
    flow.add(_sleeper("r2", 1), cost=4)
    flow.add(_sleeper("v1", 3, ("b",)), cost=10)
    flow.add(_sleeper("v2", 3, ("b",)), cost=9)
    return flow


async def _timeline(flow: trioflow.Flow, max_concurrent: int) -> tuple[dict[str, Any], float]:
    result = await flow.run(max_concurrent=max_concurrent)
    return {n: (s.started_at, s.finished_at) for n, s in result.steps.items()}, result.duration


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_issue10_freed_slots_go_to_the_same_steps_under_every_schedule_on_asyncio(strategy: str) -> None:
    steps, duration = check_deterministic(
        _timeline, _contended_flow(), 2, runs=300, strategy=strategy, backend="asyncio"
    )
    assert steps["v1"] == steps["v2"] == (1.0, 4.0)
    assert steps["r2"] == (4.0, 5.0)
    assert duration == 5.0


def _twenty_steps() -> trioflow.Flow:
    # bench/harness_case.py's flow, on anyio: every fourth step joins the two before
    flow = trioflow.Flow("twenty")
    names: list[str] = []
    for i in range(20):
        deps = tuple(names[-2:]) if i % 4 == 3 else ()
        flow.add(_sleeper(f"s{i}", 1, deps), name=f"s{i}")
        names.append(f"s{i}")
    return flow


def test_issue10_a_flow_under_a_limit_of_three_is_deterministic_on_asyncio() -> None:
    steps, duration = check_deterministic(_timeline, _twenty_steps(), 3, runs=300, backend="asyncio")
    assert duration == 7.0
    assert steps == check_deterministic(_timeline, _twenty_steps(), 3, runs=1)[0]


def _handover_flow(inline_release: bool) -> Callable[[], Awaitable[int]]:
    # tests/harness_corpus.py's flow_slot_handover, on anyio: a step releases a
    # shared resource from a background task, so the next step, started the
    # moment the slot is freed, still finds it busy
    async def main() -> int:
        state = {"busy": False, "clashes": 0}
        flow = trioflow.Flow("handover")

        async with anyio.create_task_group() as background:

            async def release() -> None:
                state["busy"] = False

            def make(name: str) -> Any:
                async def step() -> str:
                    if state["busy"]:
                        state["clashes"] += 1
                    state["busy"] = True
                    await anyio.sleep(0.01)  # (real time in the production run below)
                    if inline_release:
                        state["busy"] = False
                    else:
                        background.start_soon(release)
                    return name

                step.__name__ = name
                return step

            flow.add(make("a"), cost=3)
            flow.add(make("b"), cost=2)

            @flow.step(cost=1)
            async def z() -> None:  # does not use the resource
                await anyio.sleep(0.01)

            await flow.run(max_concurrent=1)
        return state["clashes"]

    return main


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_issue10_hand_overs_at_once_are_explored_on_asyncio(strategy: str) -> None:
    bug, fixed = _handover_flow(False), _handover_flow(True)
    assert anyio.run(bug, backend="asyncio") == 1  # production hands the slot over at once
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(bug, runs=300, strategy=strategy, backend="asyncio")
    assert {info.value.expected, info.value.got} == {0, 1}
    for _ in range(10):
        assert run_deterministic(bug, schedule=info.value.schedule, backend="asyncio").value == info.value.got
    assert check_deterministic(fixed, runs=300, strategy=strategy, backend="asyncio") == 0


def test_issue10_quiescent_mode_is_on_inside_the_asyncio_harness_only() -> None:
    seen: list[tuple[bool, bool]] = []

    async def main() -> None:
        hooks = settle_decision.get()
        seen.append((quiescent_scheduling.get(), hooks is not None and hooks.drives_current_loop()))

    anyio.run(main, backend="asyncio")
    run_deterministic(main, backend="asyncio")
    assert seen == [(False, False), (True, True)]
    assert quiescent_scheduling.get() is False
    assert settle_decision.get() is None


def test_issue10_a_flow_run_on_another_loop_in_a_thread_is_not_driven_by_the_harness() -> None:
    # asyncio.to_thread copies the context, with the harness's engine hooks: the
    # loop that the thread runs is not the harness's, so the engine ignores them
    flow = trioflow.Flow("inner")

    @flow.step
    async def one() -> int:
        await anyio.lowlevel.checkpoint()
        return 1

    @flow.step
    async def two(one: int) -> int:
        await anyio.lowlevel.checkpoint()
        raise ValueError(one)

    async def run() -> tuple[Any, ...]:
        try:
            await flow.run()  # (fail-fast: the engine would wait for the run to settle)
        except trioflow.FlowError as err:
            return _steps(err), tuple(repr(e) for e in err.exceptions)
        raise AssertionError("no FlowError")

    async def main() -> tuple[Any, ...]:
        return await asyncio.to_thread(anyio.run, run, backend="asyncio")

    assert check_deterministic(main, runs=20, backend="asyncio") == (
        (("one", "succeeded", 1), ("two", "failed", 1)), ("ValueError(1)",)
    )


def _mid_transfer(shielded: bool) -> Callable[[], Awaitable[int]]:
    """A payment step that fail-fast may cancel between its two writes (anyio code)."""

    async def main() -> int:
        accounts = {"a": 100, "b": 0}
        flow = trioflow.Flow("payment")

        @flow.step
        async def transfer() -> None:
            for _ in range(4):
                await anyio.lowlevel.checkpoint()
            with anyio.CancelScope(shield=shielded):
                accounts["a"] -= 50
                await anyio.lowlevel.checkpoint()  # fail-fast may cancel it here
                accounts["b"] += 50

        @flow.step
        async def validate() -> None:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            raise ValueError("the payment is invalid")

        try:
            await flow.run()
        except trioflow.FlowError:
            pass
        return accounts["a"] + accounts["b"]

    return main


def test_issue10_fail_fast_cancelling_a_step_between_two_awaits_is_found_on_asyncio() -> None:
    # plain asyncio lands fail-fast's cancellation one loop iteration after the
    # failure, with the transfer between its writes: the money is lost every time
    # there; the harness's FIFO run lets the instant settle first, and the cancel
    # decision lands it as asyncio does
    assert {asyncio.run(_mid_transfer(False)()) for _ in range(5)} == {50}
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(_mid_transfer(False), backend="asyncio")
    assert (info.value.expected, info.value.got) == (100, 50)
    schedule = failing_schedule(info.value)
    assert schedule is not None
    replays = {
        run_deterministic(_mid_transfer(False), schedule=schedule.schedule, backend="asyncio").value for _ in range(10)
    }
    assert replays == {50}
    assert check_deterministic(_mid_transfer(True), runs=1000, backend="asyncio") == 100
