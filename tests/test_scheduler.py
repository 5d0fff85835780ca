"""The scheduler: ASAP timing, limits, priority, errors and cancellation.

Anything about timing runs on trio with ``MockClock(autojump_threshold=0)``
(pytest-trio's ``autojump_clock``), where sleeps are virtual and exact. The
``anyio``-marked tests run on trio and asyncio and check results, statuses and
errors only.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, Retry, StepStatus

# -- helpers -------------------------------------------------------------------------


class InFlight:
    """Counts steps running at once, overall and per label."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def enter(self, *labels: str) -> None:
        for label in ("all", *labels):
            self.now[label] = self.now.get(label, 0) + 1
            self.peak[label] = max(self.peak.get(label, 0), self.now[label])

    def exit(self, *labels: str) -> None:
        for label in ("all", *labels):
            self.now[label] -= 1

    def add(
        self,
        flow: Flow,
        name: str,
        seconds: float,
        deps: tuple[str, ...] = (),
        labels: tuple[str, ...] = (),
        make_step: Callable[..., Any] | None = None,
        **options: Any,
    ) -> None:
        async def body(**kwargs: Any) -> str:
            self.enter(*labels)
            try:
                await anyio.sleep(seconds)
            finally:
                self.exit(*labels)
            return name

        assert make_step is not None
        flow.add(make_step(name, deps, body), **options)


async def _log_and_sleep(log: list[str], name: str, seconds: float, **kwargs: Any) -> str:
    log.append(name)
    await anyio.sleep(seconds)
    return name


def critical_path(durations: Mapping[str, float], deps: Mapping[str, tuple[str, ...]]) -> float:
    finish: dict[str, float] = {}

    def f(name: str) -> float:
        if name not in finish:
            finish[name] = durations[name] + max((f(d) for d in deps.get(name, ())), default=0.0)
        return finish[name]

    return max(f(n) for n in durations)


def build(
    add_sleeper: Callable[..., None],
    durations: Mapping[str, float],
    deps: Mapping[str, tuple[str, ...]],
    **options_by_step: dict[str, Any],
) -> Flow:
    flow = Flow("shape")
    for name, seconds in durations.items():
        add_sleeper(flow, name, seconds, deps.get(name, ()), **options_by_step.get(name, {}))
    return flow


def assert_asap(result: trioflow.RunResult, deps: Mapping[str, tuple[str, ...]]) -> None:
    """Every step started the instant its last dependency finished (roots at the start)."""
    for name, step in result.steps.items():
        ready = max((result.steps[d].finished_at for d in deps.get(name, ())), default=result.started_at)
        assert step.started_at == ready, name


def ids(steps: Any) -> list[str]:
    return list(steps)


# -- ASAP timing: duration == critical path ------------------------------------------------

FAN = {f"leaf{i}": float(i % 7 + 1) for i in range(60)}

SHAPES: dict[str, tuple[dict[str, float], dict[str, tuple[str, ...]]]] = {
    "chain": ({"a": 1, "b": 2, "c": 3}, {"b": ("a",), "c": ("b",)}),
    "diamond": ({"a": 1, "b": 2, "c": 5, "d": 1}, {"b": ("a",), "c": ("a",), "d": ("b", "c")}),
    "fan-out-fan-in": (
        {"src": 1, **FAN, "join": 1},
        {**{leaf: ("src",) for leaf in FAN}, "join": tuple(FAN)},
    ),
    "two-chains": (
        {"a1": 1, "a2": 1, "a3": 1, "b1": 2, "b2": 5},
        {"a2": ("a1",), "a3": ("a2",), "b2": ("b1",)},
    ),
    "uneven-join": (
        {"a": 3, "b": 1, "c": 1, "d": 1, "e": 2},
        {"c": ("b",), "d": ("c",), "e": ("a", "d")},
    ),
}


@pytest.mark.trio
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_duration_is_the_critical_path(
    shape: str, autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    durations, deps = SHAPES[shape]
    flow = build(add_sleeper, durations, deps)
    result = await flow.run()
    assert result.ok
    assert result.duration == critical_path(durations, deps)
    assert_asap(result, deps)
    for name, seconds in durations.items():
        assert result.steps[name].duration == seconds


@pytest.mark.trio
async def test_duration_is_the_critical_path_with_an_after_edge(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "a", 2)
    add_sleeper(flow, "b", 1)
    add_sleeper(flow, "c", 3, after=["a"])
    result = await flow.run()
    assert result.duration == 5
    assert result.steps["c"].started_at == result.steps["a"].finished_at == 2


@pytest.mark.trio
async def test_duration_is_the_critical_path_with_a_map_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("f")

    @flow.step
    async def items() -> list[int]:
        await trio.sleep(1)
        return [3, 1, 4, 1, 5, 2]

    @flow.step(map_over="items")
    async def work(items: int) -> int:
        await trio.sleep(items)
        return items * 10

    @flow.step
    async def other() -> str:
        await trio.sleep(4)
        return "other"

    @flow.step
    async def join(work: list[int], other: str) -> int:
        await trio.sleep(1)
        return sum(work)

    result = await flow.run()
    assert result["work"] == [30, 10, 40, 10, 50, 20]
    assert result["join"] == 160
    assert result.duration == 1 + 5 + 1
    assert result.steps["work"].started_at == result.steps["items"].finished_at == 1
    assert result.steps["work"].finished_at == 6
    assert result.steps["join"].started_at == 6


@pytest.mark.trio
async def test_a_fast_branch_does_not_wait_for_a_slow_sibling(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    # no supersteps: b2 starts at 1 even though its "level" sibling a1 runs until 10
    flow = Flow("f")
    add_sleeper(flow, "a1", 10)
    add_sleeper(flow, "b1", 1)
    add_sleeper(flow, "b2", 1, ["b1"])
    result = await flow.run()
    assert result.steps["b2"].started_at == 1
    assert result.steps["b2"].finished_at == 2


# -- priority when capacity is short -------------------------------------------------------


@pytest.mark.trio
async def test_longest_remaining_path_goes_first_m2(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "A", 1)
    add_sleeper(flow, "X", 1)
    add_sleeper(flow, "B", 1)
    add_sleeper(flow, "C", 2, ["B"])
    result = await flow.run(max_concurrent=2)
    assert result.duration == 3
    assert result.steps["B"].started_at == 0
    assert result.steps["C"].started_at == 1


@pytest.mark.trio
@pytest.mark.parametrize(("with_cost", "expected"), [(True, 4), (False, 5)])
async def test_cost_weighted_priority(
    with_cost: bool,
    expected: float,
    autojump_clock: trio.testing.MockClock,
    add_sleeper: Callable[..., None],
) -> None:
    # ranks with costs: A=2, X=2, B=1+3=4, C=3 -> C goes before X at t=1 and the run takes 4 s;
    # with the default cost 1 everywhere X (declared first) beats C and the run takes 5 s
    def cost(c: float) -> dict[str, Any]:
        return {"cost": c} if with_cost else {}

    flow = Flow("f")
    add_sleeper(flow, "A", 2, **cost(2))
    add_sleeper(flow, "X", 2, **cost(2))
    add_sleeper(flow, "B", 1)
    add_sleeper(flow, "C", 3, ["B"], **cost(3))
    result = await flow.run(max_concurrent=2)
    assert result.duration == expected


@pytest.mark.trio
async def test_ties_break_by_declaration_order(
    autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    order: list[str] = []
    flow = Flow("f")
    for name in ["p", "q", "r", "s"]:
        flow.add(step_factory(name, (), functools.partial(_log_and_sleep, order, name, 1)))
    await flow.run(max_concurrent=1)
    assert order == ["p", "q", "r", "s"]


@pytest.mark.trio
async def test_higher_cost_runs_first_in_sequential_mode(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "cheap", 1)
    add_sleeper(flow, "pricey", 1, cost=5)
    result = await flow.run(max_concurrent=1)
    assert result.steps["pricey"].started_at == 0
    assert result.steps["cheap"].started_at == 1


@pytest.mark.trio
@pytest.mark.parametrize("m", [1, 2, 3, 5])
async def test_within_grahams_bound(
    m: int, autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    durations = {f"s{i}": float((i * 7) % 5 + 1) for i in range(20)}
    deps = {f"s{i}": tuple(f"s{j}" for j in range(i) if (i * j) % 7 == 1) for i in range(20)}
    flow = build(add_sleeper, durations, deps)
    result = await flow.run(max_concurrent=m)
    assert result.ok
    cp = critical_path(durations, deps)
    assert cp <= result.duration <= sum(durations.values()) / m + cp


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("m", [1, 2, 3])
async def test_max_concurrent_is_never_exceeded(
    m: int, autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    tracker = InFlight()
    flow = Flow("f")
    for i in range(10):
        tracker.add(flow, f"s{i}", i % 3 + 1, make_step=step_factory)
    tracker.add(flow, "c1", 1, ("s0",), make_step=step_factory)
    tracker.add(flow, "c2", 1, ("c1", "s9"), make_step=step_factory)
    result = await flow.run(max_concurrent=m)
    assert result.ok
    assert tracker.peak["all"] == m


@pytest.mark.trio
async def test_named_int_limiter(
    autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    tracker = InFlight()
    flow = Flow("f")
    for i in range(6):
        tracker.add(flow, f"llm{i}", 1, labels=("llm",), make_step=step_factory, limiter="llm")
    for i in range(4):
        tracker.add(flow, f"free{i}", 1, make_step=step_factory)
    result = await flow.run(limiters={"llm": 2})
    assert tracker.peak["llm"] == 2
    assert tracker.peak["all"] == 6  # the free steps are not held back
    assert result.duration == 3


@pytest.mark.trio
async def test_two_named_limiters_on_one_step(
    autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    tracker = InFlight()
    flow = Flow("f")
    for i in range(4):
        tracker.add(flow, f"ab{i}", 1, labels=("a", "b"), make_step=step_factory, limiter=["a", "b"])
    for i in range(4):
        tracker.add(flow, f"a{i}", 1, labels=("a",), make_step=step_factory, limiter="a")
    await flow.run(limiters={"a": 3, "b": 1})
    assert tracker.peak["a"] == 3
    assert tracker.peak["b"] == 1


@pytest.mark.trio
async def test_named_capacity_limiter_object(
    autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    tracker = InFlight()
    limiter = trio.CapacityLimiter(2)
    flow = Flow("f")
    for i in range(5):
        tracker.add(flow, f"s{i}", 1, labels=("llm",), make_step=step_factory, limiter="llm")
    result = await flow.run(limiters={"llm": limiter})
    assert tracker.peak["llm"] == 2
    assert result.duration == 3
    assert limiter.borrowed_tokens == 0


@pytest.mark.trio
async def test_shared_limiter_across_two_concurrent_runs(
    autojump_clock: trio.testing.MockClock, step_factory: Callable[..., Any]
) -> None:
    tracker = InFlight()
    limiter = trio.CapacityLimiter(2)
    flow = Flow("f")
    for i in range(4):
        tracker.add(flow, f"s{i}", 1, make_step=step_factory)
    results = []

    async def one() -> None:
        results.append(await flow.run(limiter=limiter))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert tracker.peak["all"] == 2
    assert trio.current_time() == 4
    assert [r.ok for r in results] == [True, True]
    assert limiter.borrowed_tokens == 0


@pytest.mark.trio
async def test_map_step_max_concurrent(autojump_clock: trio.testing.MockClock) -> None:
    tracker = InFlight()
    flow = Flow("f")

    @flow.step(map_over="xs", max_concurrent=2)
    async def work(xs: int) -> int:
        tracker.enter()
        try:
            await trio.sleep(1)
        finally:
            tracker.exit()
        return xs

    result = await flow.run({"xs": list(range(6))})
    assert result["work"] == list(range(6))
    assert tracker.peak["all"] == 2
    assert result.duration == 3


@pytest.mark.trio
async def test_map_items_count_against_the_run_limit(autojump_clock: trio.testing.MockClock) -> None:
    tracker = InFlight()
    flow = Flow("f")

    @flow.step(map_over="xs", max_concurrent=4)
    async def work(xs: int) -> int:
        tracker.enter()
        try:
            await trio.sleep(1)
        finally:
            tracker.exit()
        return xs

    @flow.step
    async def side() -> None:
        tracker.enter()
        try:
            await trio.sleep(1)
        finally:
            tracker.exit()

    result = await flow.run({"xs": list(range(6))}, max_concurrent=3)
    assert result.ok
    assert tracker.peak["all"] == 3
    assert result.duration == 3  # 7 one-second units, 3 at a time


@pytest.mark.trio
async def test_a_step_waiting_on_dependencies_holds_no_named_slot(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "a", 2)
    add_sleeper(flow, "b", 1, ["a"], limiter="llm")
    add_sleeper(flow, "c", 1, limiter="llm")
    add_sleeper(flow, "d", 1, limiter="llm")
    result = await flow.run(limiters={"llm": 1})
    assert result.duration == 3
    assert result.steps["b"].started_at == 2


@pytest.mark.trio
async def test_a_step_waiting_on_dependencies_holds_no_run_slot(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "slow", 3)
    add_sleeper(flow, "a", 1)
    add_sleeper(flow, "b", 1, ["a"])
    add_sleeper(flow, "c", 1, ["b"])
    result = await flow.run(max_concurrent=2)
    assert result.duration == 3


@pytest.mark.trio
async def test_a_step_waiting_on_dependencies_holds_no_shared_slot(
    autojump_clock: trio.testing.MockClock, add_sleeper: Callable[..., None]
) -> None:
    flow = Flow("f")
    add_sleeper(flow, "slow", 3)
    add_sleeper(flow, "a", 1)
    add_sleeper(flow, "b", 1, ["a"])
    add_sleeper(flow, "c", 1, ["b"])
    result = await flow.run(limiter=trio.CapacityLimiter(2))
    assert result.duration == 3


@pytest.mark.trio
async def test_nested_run_sharing_a_limiter_of_one_does_not_deadlock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = trio.CapacityLimiter(1)
    inner = Flow("inner")

    @inner.step
    async def x() -> int:
        await trio.sleep(1)
        return 1

    @inner.step
    async def y() -> int:
        await trio.sleep(1)
        return 2

    outer = Flow("outer")

    @outer.step
    async def parent() -> int:
        result = await inner.run(limiter=limiter)
        return result["x"] + result["y"]

    with trio.fail_after(100):
        result = await outer.run(limiter=limiter)
    assert result["parent"] == 3
    assert result.duration == 2  # the nested steps took the parent's one slot in turn
    assert limiter.borrowed_tokens == 0


@pytest.mark.trio
async def test_concurrent_nested_runs_sharing_a_limiter_of_one_stay_within_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # a step holding the only slot of `limiter` starts two nested runs at once; both may borrow
    # the parent's slot, but not both at the same time: the limit of 1 still holds
    limiter = trio.CapacityLimiter(1)
    tracker = InFlight()
    inner = Flow("inner")

    @inner.step
    async def x() -> None:
        tracker.enter()
        try:
            await trio.sleep(1)
        finally:
            tracker.exit()

    outer = Flow("outer")

    @outer.step
    async def parent() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(inner.run, limiter=limiter))
            nursery.start_soon(functools.partial(inner.run, limiter=limiter))

    with trio.fail_after(100):
        result = await outer.run(limiter=limiter)
    assert result.ok
    assert tracker.peak["all"] == 1
    assert result.duration == 2


@pytest.mark.trio
async def test_nested_run_sharing_a_named_limiter_of_one_does_not_deadlock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = trio.CapacityLimiter(1)
    inner = Flow("inner")

    @inner.step(limiter="llm")
    async def x() -> int:
        return 1

    outer = Flow("outer")

    @outer.step(limiter="llm")
    async def parent() -> int:
        return (await inner.run(limiters={"llm": limiter}))["x"]

    with trio.fail_after(100):
        result = await outer.run(limiters={"llm": limiter})
    assert result["parent"] == 1


# -- fail_fast ---------------------------------------------------------------------------------


def _fail_fast_flow(log: dict[str, Any]) -> Flow:
    flow = Flow("f")

    @flow.step
    async def boom() -> None:
        await trio.sleep(1)
        raise ValueError("boom")

    @flow.step
    async def sleeper() -> None:
        try:
            await trio.sleep(1000)
        finally:
            log["sleeper_finally"] = trio.current_time()
            log["nursery"] = trio.lowlevel.current_task().parent_nursery

    @flow.step
    async def after_boom(boom: None) -> None:
        log["after_boom ran"] = True

    @flow.step
    async def after_sleeper(sleeper: None) -> None:
        log["after_sleeper ran"] = True

    return flow


@pytest.mark.trio
async def test_fail_fast_cancels_in_flight_siblings_at_once(autojump_clock: trio.testing.MockClock) -> None:
    log: dict[str, Any] = {}
    flow = _fail_fast_flow(log)
    start = trio.current_time()
    with pytest.raises(FlowError) as info:
        await flow.run()
    assert trio.current_time() - start == 1
    assert log["sleeper_finally"] - start == 1
    assert "after_boom ran" not in log
    assert "after_sleeper ran" not in log
    result = info.value.result
    assert {n: s.status for n, s in result.steps.items()} == {
        "boom": StepStatus.FAILED,
        "sleeper": StepStatus.CANCELLED,
        "after_boom": StepStatus.CANCELLED,
        "after_sleeper": StepStatus.CANCELLED,
    }
    assert result.failed == ["boom"]
    assert result.cancelled == ["sleeper", "after_boom", "after_sleeper"]
    assert result.skipped == []
    assert result.steps["sleeper"].started_at == start
    assert result.steps["sleeper"].finished_at is None
    assert result.steps["after_boom"].started_at is None
    assert result.duration == 1


@pytest.mark.trio
async def test_no_task_outlives_a_failed_run(autojump_clock: trio.testing.MockClock) -> None:
    log: dict[str, Any] = {}
    before = list(trio.lowlevel.current_task().child_nurseries)
    with pytest.raises(FlowError):
        await _fail_fast_flow(log).run()
    assert "sleeper_finally" in log
    assert log["nursery"].child_tasks == frozenset()
    assert trio.lowlevel.current_task().child_nurseries == before


@pytest.mark.trio
async def test_flow_error_is_an_exception_group_with_notes(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=3))
    async def boom() -> None:
        raise ValueError("boom")

    @flow.step
    async def other() -> None:
        await trio.sleep(1)

    with pytest.raises(FlowError) as info:
        await flow.run()
    exc = info.value
    assert isinstance(exc, ExceptionGroup)
    assert isinstance(exc, trioflow.TrioflowError)
    assert exc.message == "1 step of flow 'f' failed: 'boom'; 1 cancelled"
    assert str(exc) == "1 step of flow 'f' failed: 'boom'; 1 cancelled (1 sub-exception)"
    (error,) = exc.exceptions
    assert type(error) is ValueError
    assert str(error) == "boom"
    assert error.__notes__ == ["trioflow: step 'boom' failed on attempt 3"]
    assert exc.result.steps["boom"].error is error
    assert exc.result.steps["boom"].attempts == 3


@pytest.mark.trio
async def test_except_star_keeps_the_type_and_result() -> None:
    flow = Flow("f")

    @flow.step
    async def bad_value() -> None:
        raise ValueError("v")

    @flow.step
    async def bad_key() -> None:
        raise KeyError("k")

    caught: list[BaseException] = []
    try:
        await flow.run(error_handling="continue")
    except* ValueError as group:
        caught.append(group)
    except* KeyError as group:
        caught.append(group)
    value_group, key_group = caught
    for group in caught:
        assert isinstance(group, FlowError)
        assert group.result.failed == ["bad_value", "bad_key"]
    assert [type(e) for e in value_group.exceptions] == [ValueError]
    assert [type(e) for e in key_group.exceptions] == [KeyError]


@pytest.mark.trio
async def test_split_and_subgroup_keep_the_type_and_result() -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        raise ValueError("a")

    @flow.step
    async def b() -> None:
        raise TypeError("b")

    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue")
    match, rest = info.value.split(ValueError)
    assert isinstance(match, FlowError)
    assert isinstance(rest, FlowError)
    assert match.result is info.value.result
    assert rest.result is info.value.result
    sub = info.value.subgroup(TypeError)
    assert isinstance(sub, FlowError)
    assert sub.result is info.value.result


@pytest.mark.trio
async def test_two_steps_failing_at_the_same_moment_are_both_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("f")

    @flow.step
    async def one() -> None:
        await trio.sleep(1)
        raise ValueError("one")

    @flow.step
    async def two() -> None:
        await trio.sleep(1)
        raise ValueError("two")

    @flow.step
    async def slow() -> None:
        await trio.sleep(5)

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert [str(e) for e in info.value.exceptions] == ["one", "two"]
    assert [e.__notes__ for e in info.value.exceptions] == [
        ["trioflow: step 'one' failed on attempt 1"],
        ["trioflow: step 'two' failed on attempt 1"],
    ]
    assert info.value.message == "2 steps of flow 'f' failed: 'one', 'two'; 1 cancelled"
    assert info.value.result.failed == ["one", "two"]
    assert trio.current_time() == 1


@pytest.mark.anyio
async def test_two_steps_woken_together_and_failing_are_both_reported(anyio_backend: Any) -> None:
    go = anyio.Event()
    flow = Flow("f")

    @flow.step
    async def one() -> None:
        await go.wait()
        raise ValueError("one")

    @flow.step
    async def two() -> None:
        await go.wait()
        raise ValueError("two")

    @flow.step
    async def trigger() -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        go.set()
        await anyio.sleep_forever()

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert sorted(str(e) for e in info.value.exceptions) == ["one", "two"]
    assert info.value.result.failed == ["one", "two"]
    assert info.value.result.cancelled == ["trigger"]


@pytest.mark.trio
async def test_flow_error_holds_no_cancelled() -> None:
    flow = Flow("f")

    @flow.step
    async def boom() -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("boom")

    for i in range(5):

        async def forever() -> None:
            await trio.sleep_forever()

        flow.add(forever, name=f"forever{i}")

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert [type(e) for e in info.value.exceptions] == [ValueError]


@pytest.mark.trio
async def test_fail_fast_starts_nothing_new_after_the_failure(autojump_clock: trio.testing.MockClock) -> None:
    # b finishes after the instant a failed (its wait is shielded from the
    # cancellation); its dependent c must not start. (A dependent that becomes
    # ready at the very instant of the failure does begin: see test_issue9_instant.)
    go = trio.Event()
    ran: list[str] = []
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        await trio.sleep(1)
        go.set()
        raise ValueError("a")

    @flow.step
    async def b() -> int:
        await go.wait()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.5)
        return 1

    @flow.step
    async def c(b: int) -> None:
        ran.append("c")

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert ran == []
    assert info.value.result.steps["c"].status is StepStatus.CANCELLED
    assert info.value.result.steps["c"].started_at is None
    assert info.value.result.duration == 1.5


@pytest.mark.trio
async def test_failure_during_another_steps_retry_backoff_cancels_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    flow = Flow("f")

    @flow.step(retry=Retry(max_attempts=5, wait=10))
    async def flaky() -> None:
        attempts.append(trio.current_time())
        raise ConnectionError("down")

    @flow.step
    async def boom() -> None:
        await trio.sleep(3)
        raise ValueError("boom")

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert attempts == [0]
    assert trio.current_time() == 3
    assert info.value.result.steps["flaky"].status is StepStatus.CANCELLED
    assert [type(e) for e in info.value.exceptions] == [ValueError]


# -- continue ---------------------------------------------------------------------------------


@pytest.mark.trio
async def test_continue_skips_exactly_the_descendants(autojump_clock: trio.testing.MockClock) -> None:
    ran: list[str] = []
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        await trio.sleep(1)
        raise ValueError("a")

    @flow.step
    async def b(a: None) -> None:
        ran.append("b")

    @flow.step(after="a")
    async def c() -> None:
        ran.append("c")

    @flow.step
    async def d(b: None) -> None:
        ran.append("d")

    @flow.step
    async def e() -> str:
        await trio.sleep(2)
        ran.append("e")
        return "e"

    @flow.step
    async def f(e: str) -> str:
        await trio.sleep(1)
        ran.append("f")
        return e + "f"

    @flow.step
    async def g(a: None, e: str) -> None:
        ran.append("g")

    @flow.step(after="c")
    async def h() -> None:
        ran.append("h")

    events: list[Any] = []
    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue", on_event=events.append)
    assert ran == ["e", "f"]
    assert trio.current_time() == 3
    result = info.value.result
    assert result.failed == ["a"]
    assert result.skipped == ["b", "c", "d", "g", "h"]
    assert result.cancelled == []
    assert dict(result.outputs) == {"e": "e", "f": "ef"}
    assert info.value.message == "1 step of flow 'f' failed: 'a'; 5 skipped"
    skipped = [ev for ev in events if isinstance(ev, trioflow.StepSkipped)]
    assert skipped == [trioflow.StepSkipped(n, 1.0, "a") for n in ["b", "c", "d", "g", "h"]]
    for name in result.skipped:
        step = result.steps[name]
        assert (step.started_at, step.finished_at, step.attempts, step.error) == (None, None, 0, None)


@pytest.mark.trio
async def test_continue_reports_every_failure_at_the_end(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step
    async def late() -> None:
        await trio.sleep(2)
        raise KeyError("late")

    @flow.step
    async def early() -> None:
        await trio.sleep(1)
        raise ValueError("early")

    @flow.step
    async def fine() -> int:
        await trio.sleep(5)
        return 5

    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue")
    assert trio.current_time() == 5
    assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]  # declaration order
    assert info.value.result.failed == ["late", "early"]
    assert info.value.result["fine"] == 5
    assert info.value.message == "2 steps of flow 'f' failed: 'late', 'early'"


# -- cancellation checklist ------------------------------------------------------------------


@pytest.mark.trio
async def test_pre_cancelled_scope_runs_no_step(autojump_clock: trio.testing.MockClock) -> None:
    ran: list[str] = []
    events: list[Any] = []
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        ran.append("a")

    @flow.step
    async def b(a: None) -> None:
        ran.append("b")

    with trio.CancelScope() as scope:
        scope.cancel()
        await flow.run(on_event=events.append)
    assert scope.cancelled_caught
    assert ran == []
    assert events == [
        trioflow.RunStarted("f", None, 0.0, ("a", "b")),
        trioflow.StepCancelled("a", 0.0, False),
        trioflow.StepCancelled("b", 0.0, False),
        trioflow.RunFinished("f", 0.0, 0.0, False, (), "cancelled"),
    ]


@pytest.mark.trio
async def test_move_on_after_cancels_every_step_and_leaves_no_orphan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finally_at: dict[str, float] = {}
    nurseries: set[Any] = set()
    events: list[Any] = []
    flow = Flow("f")

    caller = trio.lowlevel.current_task()

    def make(i: int) -> Callable[[], Any]:
        async def step() -> None:
            task = trio.lowlevel.current_task()
            if task is not caller:  # (the run's first step may run in the caller's own task)
                nurseries.add(task.parent_nursery)
            try:
                await trio.sleep(10 * (i + 1))
            finally:
                finally_at[f"s{i}"] = trio.current_time()

        return step

    for i in range(4):
        flow.add(make(i), name=f"s{i}")

    @flow.step
    async def after(s0: None) -> None:
        raise AssertionError("never runs")

    with trio.move_on_after(5) as scope:
        await flow.run(on_event=events.append)
    assert scope.cancelled_caught
    assert trio.current_time() == 5
    assert finally_at == {f"s{i}": 5 for i in range(4)}
    assert all(n.child_tasks == frozenset() for n in nurseries)
    cancelled = [ev for ev in events if isinstance(ev, trioflow.StepCancelled)]
    assert cancelled == [trioflow.StepCancelled(f"s{i}", 5.0, True) for i in range(4)] + [
        trioflow.StepCancelled("after", 5.0, False)
    ]
    # issue 11 item 6: RunFinished is sent on every outcome, outside cancellation included
    assert events[-1] == trioflow.RunFinished("f", 5.0, 5.0, False, (), "cancelled")


@pytest.mark.trio
async def test_fail_after_around_a_run_raises_too_slow(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    @flow.step
    async def slow() -> None:
        await trio.sleep(10)

    with pytest.raises(trio.TooSlowError), trio.fail_after(2):
        await flow.run()
    assert trio.current_time() == 2


@pytest.mark.trio
async def test_outside_cancellation_is_not_a_flow_error_even_after_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("f")

    @flow.step
    async def bad() -> None:
        await trio.sleep(1)
        raise ValueError("bad")

    @flow.step
    async def slow() -> None:
        await trio.sleep(10)

    with trio.move_on_after(5) as scope:
        await flow.run(error_handling="continue")
    assert scope.cancelled_caught
    assert trio.current_time() == 5


@pytest.mark.trio
async def test_shielded_cleanup_inside_a_step_runs(autojump_clock: trio.testing.MockClock) -> None:
    cleaned: list[float] = []
    flow = Flow("f")

    @flow.step
    async def careful() -> None:
        try:
            await trio.sleep(100)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(2)
                cleaned.append(trio.current_time())

    @flow.step
    async def boom() -> None:
        await trio.sleep(1)
        raise ValueError("boom")

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert cleaned == [3]
    assert trio.current_time() == 3
    assert info.value.result.steps["careful"].status is StepStatus.CANCELLED

    cleaned.clear()
    with trio.move_on_after(1):
        await flow.run()
    assert cleaned == [6]


@pytest.mark.trio
async def test_step_swallowing_nothing_outside_cancellation_propagates_cancelled() -> None:
    flow = Flow("f")

    @flow.step
    async def forever() -> None:
        await trio.sleep_forever()

    with trio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_soon)
            with pytest.raises(trio.Cancelled) as info:
                await flow.run()
            assert type(info.value) is trio.Cancelled  # cancellation, not a group of it (issue 9 item 5)
            await trio.lowlevel.checkpoint()  # the scope is still cancelled
            raise AssertionError("unreachable")  # pragma: no cover
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_outside_cancellation_of_a_wide_fan_out_of_mixed_steps(anyio_backend: Any) -> None:
    # a plain step's worker ends quietly with its step's cancellation (trio), a
    # retrying step's raises it: either way the caller's scope gets one plain
    # cancellation, after every step's cleanup, and every step is cancelled
    cleaned: list[str] = []
    events: list[trioflow.Event] = []
    flow = Flow("wide")

    def sleeper(name: str) -> Callable[[], Any]:
        async def step() -> None:
            try:
                await anyio.sleep(100)
            finally:
                cleaned.append(name)

        return step

    for i in range(40):
        name = f"s{i}"
        flow.add(sleeper(name), name=name, retry=Retry(max_attempts=2) if i % 7 == 0 else None)
    caught: list[BaseException] = []
    with anyio.move_on_after(0.05) as scope:
        try:
            await flow.run(on_event=events.append)
        except BaseException as exc:
            caught.append(exc)
            raise
    assert scope.cancelled_caught
    assert [type(exc) for exc in caught] == [anyio.get_cancelled_exc_class()]
    assert sorted(cleaned) == sorted(f"s{i}" for i in range(40))
    cancelled = [e for e in events if isinstance(e, trioflow.StepCancelled)]
    assert sorted(e.step for e in cancelled) == sorted(f"s{i}" for i in range(40))
    assert all(e.started for e in cancelled)
    assert [e.status for e in events if isinstance(e, trioflow.RunFinished)] == ["cancelled"]
    await anyio.lowlevel.checkpoint()  # the caller's task goes on, not cancelled


# -- sequential == parallel; both backends --------------------------------------------------


def _deterministic_flow() -> Flow:
    flow = Flow("det")

    @flow.step
    async def seed(n: int) -> list[int]:
        trioflow.current_step().add_usage(calls=1)
        await anyio.lowlevel.checkpoint()
        return list(range(n))

    @flow.step(retry=Retry(max_attempts=3))
    async def flaky(seed: list[int]) -> int:
        step = trioflow.current_step()
        step.add_usage(calls=1, tokens=10)
        await anyio.lowlevel.checkpoint()
        if step.attempt < 2:
            raise ConnectionError("first attempt fails")
        return sum(seed)

    @flow.step(map_over="seed")
    async def square(seed: int) -> int:
        trioflow.current_step().add_usage(tokens=seed)
        await anyio.lowlevel.checkpoint()
        return seed * seed

    @flow.step
    async def broken(seed: list[int]) -> int:
        await anyio.lowlevel.checkpoint()
        raise ValueError("always")

    @flow.step
    async def after_broken(broken: int) -> int:
        return broken

    @flow.step
    async def join(flaky: int, square: list[int], seed: list[int]) -> dict[str, Any]:
        trioflow.current_step().add_usage(calls=2)
        seed.append(-1)  # mutates its own copy
        return {"flaky": flaky, "square": square, "seed": seed}

    return flow


def _summary(result: trioflow.RunResult) -> Any:
    return (
        dict(result.outputs),
        {n: (s.status, s.attempts, dict(s.usage), type(s.error)) for n, s in result.steps.items()},
        dict(result.usage),
    )


async def _run_summary(**kwargs: Any) -> Any:
    with pytest.raises(FlowError) as info:
        await _deterministic_flow().run({"n": 5}, error_handling="continue", **kwargs)
    return _summary(info.value.result)


@pytest.mark.anyio
async def test_sequential_equals_parallel(anyio_backend: Any) -> None:
    parallel = await _run_summary()
    for m in [1, 2, 3]:
        assert await _run_summary(max_concurrent=m) == parallel
    outputs, steps, usage = parallel
    assert outputs["join"] == {"flaky": 10, "square": [0, 1, 4, 9, 16], "seed": [0, 1, 2, 3, 4, -1]}
    assert outputs["seed"] == [0, 1, 2, 3, 4]
    assert steps["flaky"] == (StepStatus.SUCCEEDED, 2, {"calls": 2, "tokens": 20}, type(None))
    assert steps["broken"][0] is StepStatus.FAILED
    assert steps["after_broken"][0] is StepStatus.SKIPPED
    assert usage == {"calls": 5, "tokens": 30}


def test_trio_and_asyncio_give_the_same_result() -> None:
    on_trio = trio.run(_run_summary)
    on_asyncio = anyio.run(_run_summary, backend="asyncio")
    assert on_trio == on_asyncio


@pytest.mark.anyio
async def test_fail_fast_on_both_backends(anyio_backend: Any) -> None:
    finished: list[str] = []
    started = anyio.Event()
    flow = Flow("f")

    @flow.step
    async def boom() -> None:
        await started.wait()
        raise ValueError("boom")

    @flow.step
    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            finished.append("forever")

    @flow.step
    async def child(boom: None) -> None:
        finished.append("child")

    with pytest.raises(FlowError) as info:
        await flow.run()
    assert finished == ["forever"]
    assert {n: s.status.value for n, s in info.value.result.steps.items()} == {
        "boom": "failed",
        "forever": "cancelled",
        "child": "cancelled",
    }
    assert [str(e) for e in info.value.exceptions] == ["boom"]


@pytest.mark.anyio
async def test_outside_cancellation_on_both_backends(anyio_backend: Any) -> None:
    started = anyio.Event()
    finished: list[str] = []
    flow = Flow("f")

    @flow.step
    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            finished.append("forever")

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            with anyio.CancelScope() as scope:
                tg.cancel_scope_holder = scope  # type: ignore[attr-defined]
                await flow.run()
            assert scope.cancelled_caught

        tg.start_soon(run)
        await started.wait()
        tg.cancel_scope_holder.cancel()  # type: ignore[attr-defined]
    assert finished == ["forever"]


@pytest.mark.anyio
async def test_limits_on_both_backends(anyio_backend: Any, step_factory: Callable[..., Any]) -> None:
    tracker = InFlight()
    flow = Flow("f")
    for i in range(8):

        async def body(**kwargs: Any) -> int:
            tracker.enter("llm")
            try:
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()
            finally:
                tracker.exit("llm")
            return 1

        flow.add(step_factory(f"s{i}", (), body), limiter="llm")
    result = await flow.run(max_concurrent=3, limiters={"llm": 2})
    assert result.ok
    assert tracker.peak["llm"] <= 2
    result = await flow.run(limiter=anyio.CapacityLimiter(1), limiters={"llm": 2})
    assert tracker.peak["all"] <= 2


def test_run_inside_trio_run_with_partial() -> None:
    flow = Flow("f")

    @flow.step
    async def a(x: int) -> int:
        return x + 1

    result = trio.run(functools.partial(flow.run, {"x": 1}, max_concurrent=1))
    assert result["a"] == 2


# -- limits on random graphs ----------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("seed", range(12))
async def test_limits_hold_on_random_graphs(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    rng = random.Random(seed)
    tracker = InFlight()
    n = rng.randint(5, 25)
    limiter_sizes = {"x": rng.randint(1, 3), "y": rng.randint(1, 2)}
    m = rng.choice([None, 1, 2, 3, 5])
    shared = rng.choice([None, trio.CapacityLimiter(rng.randint(1, 4))])
    flow = Flow(f"random{seed}")
    map_limits: dict[str, int] = {}
    expected: dict[str, Any] = {}

    def make(name: str, deps: list[str], labels: tuple[str, ...], seconds: float, mapped: bool) -> Any:
        async def body(**kwargs: Any) -> Any:
            tracker.enter(*labels)
            try:
                await trio.sleep(seconds)
            finally:
                tracker.exit(*labels)
            return kwargs.get("items") if mapped else name

        params = [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
        if mapped:
            params.append(inspect.Parameter("items", inspect.Parameter.KEYWORD_ONLY))
        body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return body

    items = list(range(rng.randint(0, 6)))
    for i in range(n):
        name = f"s{i}"
        deps = [f"s{j}" for j in range(i) if rng.random() < 0.2]
        after = [f"s{j}" for j in range(i) if rng.random() < 0.1 and f"s{j}" not in deps]
        names = tuple(lim for lim in ("x", "y") if rng.random() < 0.4)
        mapped = rng.random() < 0.2
        labels = tuple(names)
        options: dict[str, Any] = {"limiter": list(names), "after": after, "cost": rng.choice([0.5, 1, 3])}
        if mapped:
            options["map_over"] = "items"
            if rng.random() < 0.5:
                map_limits[name] = rng.randint(1, 2)
                options["max_concurrent"] = map_limits[name]
                labels = (*labels, f"map:{name}")
        flow.add(make(name, deps, labels, rng.choice([0.5, 1, 2]), mapped), name=name, **options)
        expected[name] = items if mapped else name

    with trio.fail_after(10_000):
        inputs = {"items": items} if any(v is items for v in expected.values()) else {}
        used = {name for name in limiter_sizes if any(name in s.limiters for s in flow._specs)}
        result = await flow.run(  # only limiters some step uses (issue 9 item 19)
            inputs, max_concurrent=m, limiter=shared, limiters={k: limiter_sizes[k] for k in used}
        )
    assert dict(result.outputs) == expected
    caps = [c for c in (m, None if shared is None else shared.total_tokens) if c is not None]
    if caps:
        assert tracker.peak.get("all", 0) <= min(caps)
    for name, size in limiter_sizes.items():
        assert tracker.peak.get(name, 0) <= size
    for name, size in map_limits.items():
        assert tracker.peak.get(f"map:{name}", 0) <= size


@pytest.mark.trio
async def test_a_step_after_a_failed_one_starts_when_it_starts(autojump_clock: trio.testing.MockClock) -> None:
    # a worker reuses the end of the step before as the start of the next one
    # only when that step succeeded just now (issue 16: one clock read per step)
    flow = Flow("f")

    @flow.step
    async def a() -> None:
        await trio.sleep(1)

    @flow.step
    async def b() -> None:
        await trio.sleep(2)
        raise ValueError("b")

    @flow.step
    async def c() -> None:
        return None

    with pytest.raises(FlowError) as info:
        await flow.run(max_concurrent=1, error_handling="continue")
    steps = info.value.result.steps
    assert (steps["a"].started_at, steps["a"].finished_at) == (0, 1)
    assert (steps["b"].started_at, steps["b"].finished_at) == (1, 3)
    assert (steps["c"].started_at, steps["c"].finished_at) == (3, 3)
