"""trioflow.map (issue 3), and map steps inside flows.

Tests marked ``anyio`` run on trio (virtual time, ``MockClock``) and on asyncio
(real time: there they wait on events and checkpoints, never on the clock).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel
import trio.testing
from _backends import on_trio

import trioflow
from trioflow import FlowError, GraphError, Retry, StepStatus

pytestmark = pytest.mark.anyio


def live_tasks() -> int:
    """Tasks alive in this run, on either backend."""
    if not on_trio():
        return len(asyncio.all_tasks())
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def checkpoints(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


async def echo(x: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return x


# -- results and items --------------------------------------------------------------


async def test_results_keep_item_order_whatever_the_completion_order() -> None:
    finished: list[int] = []

    async def slow_first(x: int) -> int:
        await checkpoints(10 - x)  # item 0 finishes last
        finished.append(x)
        return x * x

    assert await trioflow.map(slow_first, range(10), max_concurrent=10) == [x * x for x in range(10)]
    assert finished == list(reversed(range(10)))


@pytest.mark.parametrize(
    "make_items",
    [
        lambda: [1, 2, 3],
        lambda: (1, 2, 3),
        lambda: range(1, 4),
        lambda: (x for x in [1, 2, 3]),
        lambda: iter([1, 2, 3]),
    ],
    ids=["list", "tuple", "range", "generator", "iterator"],
)
async def test_any_iterable_of_items(make_items: Any) -> None:
    assert await trioflow.map(echo, make_items(), max_concurrent=2) == [1, 2, 3]


async def test_async_generator_items() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(7):
            await anyio.lowlevel.checkpoint()  # workers contend for the next item here
            yield i

    assert await trioflow.map(echo, numbers(), max_concurrent=3) == list(range(7))


async def test_async_iterable_that_is_not_a_generator() -> None:
    class Countdown:
        def __init__(self, n: int) -> None:
            self.n = n

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> int:
            await anyio.lowlevel.checkpoint()
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return self.n

    assert await trioflow.map(echo, Countdown(4)) == [3, 2, 1, 0]


async def test_no_items_is_an_empty_list_and_still_a_checkpoint() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await trioflow.map(echo, [])
        pytest.fail("map did not checkpoint")  # pragma: no cover
    assert await trioflow.map(echo, []) == []


async def test_items_are_passed_as_they_are() -> None:
    box: list[int] = []

    async def same(x: list[int]) -> bool:
        return x is box

    assert await trioflow.map(same, [box]) == [True]


# -- limits and the memory bound ------------------------------------------------------


async def test_at_most_max_concurrent_items_in_flight() -> None:
    in_flight = peak = 0

    async def work(x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await checkpoints(1 + x % 3)
        in_flight -= 1
        return x

    assert await trioflow.map(work, range(50), max_concurrent=4) == list(range(50))
    assert peak == 4


async def test_max_concurrent_one_is_sequential_and_gives_the_same_result() -> None:
    order: list[str] = []

    async def work(x: int) -> int:
        order.append(f"start {x}")
        await checkpoints(2)
        order.append(f"end {x}")
        return -x

    assert await trioflow.map(work, range(3), max_concurrent=1) == [0, -1, -2]
    assert order == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]


async def test_hundred_thousand_item_generator_keeps_tasks_and_in_flight_items_bounded() -> None:
    """Issue 3: O(max_concurrent) memory for in-flight work, counted in tasks and items."""
    limit = 10
    total = 100_000
    baseline = live_tasks()
    state = {"taken": 0, "done": 0, "in_flight": 0, "peak_in_flight": 0, "peak_tasks": 0, "lag": 0}

    def items() -> Iterator[int]:
        for i in range(total):
            state["taken"] += 1
            # items are taken lazily: never more than `limit` ahead of the finished ones
            state["lag"] = max(state["lag"], state["taken"] - state["done"])
            yield i

    async def work(x: int) -> int:
        state["in_flight"] += 1
        state["peak_in_flight"] = max(state["peak_in_flight"], state["in_flight"])
        if x % 997 == 0:
            state["peak_tasks"] = max(state["peak_tasks"], live_tasks() - baseline)
        await anyio.lowlevel.checkpoint()
        state["in_flight"] -= 1
        state["done"] += 1
        return x

    results = await trioflow.map(work, items(), max_concurrent=limit)
    assert len(results) == total
    assert results[:3] == [0, 1, 2]
    assert results[-1] == total - 1
    assert state["peak_in_flight"] == limit
    assert state["lag"] <= limit
    assert 0 < state["peak_tasks"] <= limit
    assert live_tasks() == baseline  # no orphans


async def test_sized_items_start_no_more_workers_than_items() -> None:
    peak = 0

    async def work(x: int) -> int:
        nonlocal peak
        peak = max(peak, live_tasks())
        await anyio.lowlevel.checkpoint()
        return x

    baseline = live_tasks()
    await trioflow.map(work, [1, 2], max_concurrent=50)
    assert peak - baseline == 2


@pytest.mark.trio_only
async def test_timing_is_exact_in_virtual_time(anyio_backend: Any) -> None:

    async def nap(x: int) -> int:
        await trio.sleep(1)
        return x

    start = trio.current_time()
    await trioflow.map(nap, range(10), max_concurrent=4)
    assert trio.current_time() - start == 3  # ceil(10 / 4) waves of 1 s


# -- retries -------------------------------------------------------------------------


async def test_each_item_has_its_own_retry_counter() -> None:
    """Issue 3: two items retrying at once never share a counter (the old cur_retry bug)."""
    seen: dict[int, list[int]] = {}
    failures_wanted = {0: 2, 1: 0, 2: 1, 3: 2}

    async def flaky(x: int) -> int:
        attempt = trioflow.current_step().attempt
        seen.setdefault(x, []).append(attempt)
        await anyio.lowlevel.checkpoint()
        if attempt <= failures_wanted[x]:
            raise ConnectionError(f"item {x} attempt {attempt}")
        return x

    result = await trioflow.map(flaky, range(4), max_concurrent=4, retry=Retry(max_attempts=3))
    assert result == [0, 1, 2, 3]
    assert seen == {0: [1, 2, 3], 1: [1], 2: [1, 2], 3: [1, 2, 3]}


async def test_retry_exhausted_fails_with_the_attempt_count() -> None:
    async def broken(x: int) -> int:
        raise ValueError(f"bad {x}")

    with pytest.raises(FlowError) as info:
        await trioflow.map(broken, [7], retry=Retry(max_attempts=3))
    step = info.value.result.steps["broken[0]"]
    assert step.status is StepStatus.FAILED
    assert step.attempts == 3
    assert info.value.exceptions[0].__notes__ == [
        "trioflow: map item 0 ('broken[0]') of trioflow.map(broken) failed on attempt 3"
    ]


async def test_retry_on_filters_exceptions() -> None:
    calls = 0

    async def wrong(x: int) -> int:
        nonlocal calls
        calls += 1
        raise KeyError(x)

    with pytest.raises(FlowError):
        await trioflow.map(wrong, [1], retry=Retry(max_attempts=5, retry_on=ConnectionError))
    assert calls == 1


@pytest.mark.trio_only
async def test_backoff_is_per_item_and_exact_in_virtual_time() -> None:
    finished: dict[int, float] = {}

    async def flaky(x: int) -> int:
        if trioflow.current_step().attempt <= x:
            raise ConnectionError
        finished[x] = trio.current_time()
        return x

    start = trio.current_time()
    await trioflow.map(flaky, range(3), retry=Retry(max_attempts=3, wait=1, backoff=2))
    # item k fails k times: waits 1 s, then 2 s
    assert {k: t - start for k, t in finished.items()} == {0: 0, 1: 1, 2: 3}


async def test_cancellation_during_retry_backoff_propagates() -> None:
    attempts = 0

    async def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        raise ConnectionError

    retry = Retry(max_attempts=5, wait=10)
    if on_trio():
        with trio.move_on_after(5) as scope:
            await trioflow.map(flaky, [1], retry=retry)
        assert scope.cancelled_caught
    else:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await checkpoints(5)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_soon)
            await trioflow.map(flaky, [1], retry=retry)
    assert attempts == 1


# -- errors ----------------------------------------------------------------------------


async def test_fail_fast_cancels_running_items_mid_await() -> None:
    cancelled: list[int] = []
    never = anyio.Event()
    taken: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            taken.append(i)
            yield i

    async def work(x: int) -> int:
        if x == 2:
            await checkpoints(3)
            raise ValueError("item 2 broke")
        try:
            await never.wait()  # would wait forever if not cancelled
        except anyio.get_cancelled_exc_class():
            cancelled.append(x)
            raise
        return x

    with anyio.fail_after(30):
        with pytest.raises(FlowError) as info:
            await trioflow.map(work, items(), max_concurrent=5)
    err = info.value
    # in virtual time (trio here) item 2 fails at the instant the call began, so
    # item 5, due then (item 2's worker is free), begins too, as a flow's step
    # would; in real time it fails later, and nothing begins after the failure
    due = [5] if on_trio() else []
    assert sorted(cancelled) == [0, 1, 3, 4, *due]
    assert taken == [0, 1, 2, 3, 4, *due]  # nothing more was taken from the generator
    assert [type(e) for e in err.exceptions] == [ValueError]
    assert str(err) == (
        f"trioflow.map(work): 1 item failed: 'work[2]'; {4 + len(due)} cancelled (1 sub-exception)"
    )
    statuses = {name: s.status.value for name, s in err.result.steps.items()}
    assert statuses == {
        "work[0]": "cancelled",
        "work[1]": "cancelled",
        "work[2]": "failed",
        "work[3]": "cancelled",
        "work[4]": "cancelled",
        **{f"work[{i}]": "cancelled" for i in due},
    }


async def test_items_failing_at_the_same_moment_are_all_reported() -> None:
    go = anyio.Event()

    async def work(x: int) -> int:
        if x == 0:
            await checkpoints(2)
            go.set()
            return 0
        await go.wait()
        if x in (1, 3):
            raise ValueError(x)
        await anyio.sleep_forever()
        return x  # pragma: no cover

    with pytest.raises(FlowError) as info:
        await trioflow.map(work, range(5))
    assert [e.args for e in info.value.exceptions] == [(1,), (3,)]


async def test_continue_tries_every_item_and_reports_every_failure() -> None:
    tried: list[int] = []

    async def odd_fails(x: int) -> int:
        tried.append(x)
        await checkpoints(x % 3)
        if x % 2:
            raise ValueError(f"odd {x}")
        return x * 10

    with pytest.raises(FlowError) as info:
        await trioflow.map(odd_fails, range(6), max_concurrent=2, error_handling="continue")
    err = info.value
    assert sorted(tried) == list(range(6))
    assert [str(e) for e in err.exceptions] == ["odd 1", "odd 3", "odd 5"]
    assert [e.__notes__ for e in err.exceptions] == [
        [f"trioflow: map item {i} ('odd_fails[{i}]') of trioflow.map(odd_fails) failed on attempt 1"]
        for i in (1, 3, 5)
    ]
    assert dict(err.result.outputs) == {"odd_fails[0]": 0, "odd_fails[2]": 20, "odd_fails[4]": 40}
    assert err.result.failed == ["odd_fails[1]", "odd_fails[3]", "odd_fails[5]"]
    assert str(err) == (
        "trioflow.map(odd_fails): 3 items failed: 'odd_fails[1]', 'odd_fails[3]', "
        "'odd_fails[5]' (3 sub-exceptions)"
    )


async def test_flow_error_works_with_except_star() -> None:
    async def boom(x: int) -> int:
        raise KeyError(x)

    caught: list[BaseException] = []
    try:
        await trioflow.map(boom, [1, 2], error_handling="continue")
    except* KeyError as group:
        caught.append(group)
    assert isinstance(caught[0], FlowError)
    assert isinstance(caught[0], trioflow.TrioflowError)
    assert caught[0].result.failed == ["boom[0]", "boom[1]"]


async def test_an_error_while_iterating_the_items_is_reported() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    async def work(x: int) -> int:
        await checkpoints(3)
        return x

    with pytest.raises(FlowError) as info:
        await trioflow.map(work, items(), max_concurrent=1, error_handling="continue")
    err = info.value
    assert [type(e) for e in err.exceptions] == [OSError]
    assert err.exceptions[0].__notes__ == [
        "trioflow: trioflow.map(work) stopped taking items: iterating over the items raised after 2 items"
    ]
    assert dict(err.result.outputs) == {"work[0]": 1, "work[1]": 2}


async def test_cancellation_from_outside_propagates_and_leaves_no_task() -> None:
    started = 0
    baseline = live_tasks()

    async def forever(x: int) -> int:
        nonlocal started
        started += 1
        await anyio.sleep_forever()
        return x  # pragma: no cover

    with anyio.CancelScope() as scope:

        async def cancel_when_all_started() -> None:
            while started < 3:
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_all_started)
            await trioflow.map(forever, range(3))
    assert scope.cancel_called
    assert live_tasks() == baseline


async def test_pre_cancelled_scope_never_calls_fn() -> None:
    called = False

    async def work(x: int) -> int:
        nonlocal called
        called = True
        return x

    with anyio.CancelScope() as scope:
        scope.cancel()
        await trioflow.map(work, [1, 2])
    assert not called


# -- current_step ----------------------------------------------------------------------


async def test_current_step_inside_map_outside_a_flow() -> None:
    async def who(x: str) -> tuple[str, int | None, int, str | None]:
        step = trioflow.current_step()
        return step.name, step.item, step.attempt, step.run_id

    assert await trioflow.map(who, ["a", "b"]) == [("who", 0, 1, None), ("who", 1, 1, None)]
    with pytest.raises(RuntimeError, match=r"called outside a step"):
        trioflow.current_step()


async def test_usage_of_failed_items_is_on_the_result() -> None:
    async def spend(x: int) -> int:
        trioflow.current_step().add_usage(tokens=x)
        if x == 2:
            raise ValueError
        return x

    with pytest.raises(FlowError) as info:
        await trioflow.map(spend, [1, 2, 3], error_handling="continue")
    assert info.value.result.usage == {"tokens": 6}
    assert dict(info.value.result.steps["spend[1]"].usage) == {"tokens": 2}


# -- validation ------------------------------------------------------------------------


def plain(x: int) -> int:
    return x


async def test_a_plain_function_is_a_type_error_that_shows_the_fix() -> None:
    with pytest.raises(
        TypeError,
        match=r"^trioflow.map\(plain\) expects a callable that returns an awaitable .* but "
        r"plain\(1\) returned 1 that is a int; define the function with 'async def'$",
    ):
        await trioflow.map(plain, [1, 2])  # type: ignore[arg-type]


async def test_a_lambda_returning_a_coroutine_works_issue_11_item_5() -> None:
    assert await trioflow.map(lambda x: echo(x), [1, 2]) == [1, 2]


async def test_a_coroutine_object_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"got a coroutine object .*pass the async function itself"):
        await trioflow.map(echo(1), [1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, GraphError, "trioflow.map(max_concurrent=0) must be at least 1"),
        (-3, GraphError, "trioflow.map(max_concurrent=-3) must be at least 1"),
        (
            None,
            TypeError,
            "trioflow.map(max_concurrent=...) must be an int >= 1 (got None that is a NoneType); "
            "items are taken lazily by that many workers",
        ),
        (
            2.5,
            TypeError,
            "trioflow.map(max_concurrent=...) must be an int >= 1 (got 2.5 that is a float); "
            "items are taken lazily by that many workers",
        ),
        (
            True,
            TypeError,
            "trioflow.map(max_concurrent=...) must be an int >= 1 (got True that is a bool); "
            "items are taken lazily by that many workers",
        ),
    ],
)
async def test_max_concurrent_is_validated(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        await trioflow.map(echo, [1], max_concurrent=value)
    assert str(info.value) == message


async def test_max_concurrent_has_no_upper_cap() -> None:
    assert await trioflow.map(echo, range(3), max_concurrent=1000) == [0, 1, 2]


async def test_retry_and_error_handling_are_validated() -> None:
    with pytest.raises(TypeError, match=r"retry=trioflow\.Retry\(max_attempts=3\)"):
        await trioflow.map(echo, [1], retry=3)  # type: ignore[arg-type]
    with pytest.raises(GraphError) as info:
        await trioflow.map(echo, [1], error_handling="ignore")  # type: ignore[arg-type]
    assert str(info.value) == "trioflow.map(error_handling='ignore') must be 'fail_fast' or 'continue'"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("abc", "trioflow.map maps over an iterable of items, but got 'abc' that is a str; wrap it in a list"),
        ({"a": 1}, "but got {'a': 1} that is a dict; pass list(mapping) for its keys or mapping.items()"),
        (42, "trioflow.map takes an iterable or async iterable of items (got 42 that is a int)"),
    ],
)
async def test_items_are_validated(items: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        await trioflow.map(echo, items)
    assert message in str(info.value)


async def test_validation_happens_before_any_call() -> None:
    called = False

    async def work(x: int) -> int:
        nonlocal called
        called = True
        return x

    with pytest.raises(GraphError):
        await trioflow.map(work, [1], error_handling="nope")  # type: ignore[arg-type]
    assert not called


async def test_partial_and_callable_objects_are_accepted() -> None:
    async def scale(factor: int, x: int) -> int:
        return factor * x

    class Adder:
        async def __call__(self, x: int) -> int:
            return x + 1

    assert await trioflow.map(functools.partial(scale, 3), [1, 2]) == [3, 6]
    assert await trioflow.map(Adder(), [1, 2]) == [2, 3]


# -- determinism under the schedule harness ------------------------------------------


def test_results_do_not_depend_on_the_schedule() -> None:
    from trioflow.testing import check_deterministic

    async def jittery(x: int) -> int:
        for _ in range(x % 4):
            await trio.lowlevel.checkpoint()
        return x * 3

    async def main() -> list[int]:
        return await trioflow.map(jittery, range(12), max_concurrent=3)

    assert check_deterministic(main, runs=20) == [x * 3 for x in range(12)]


# -- map steps inside flows ------------------------------------------------------------


async def test_map_step_results_in_item_order_over_an_input() -> None:
    flow = trioflow.Flow("m")

    @flow.step(map_over="docs", max_concurrent=3)
    async def summary(docs: str) -> str:
        await checkpoints(len(docs))
        return docs.upper()

    result = await flow.run({"docs": ["ccc", "a", "bb"]})
    assert result["summary"] == ["CCC", "A", "BB"]


async def test_map_step_items_count_against_step_and_run_limits() -> None:
    in_flight = peak = 0

    async def tracked() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await checkpoints(3)
        in_flight -= 1

    flow = trioflow.Flow("limits")

    @flow.step
    async def docs() -> list[int]:
        return list(range(12))

    @flow.step(map_over="docs", max_concurrent=5)
    async def per_item(docs: int) -> int:
        await tracked()
        return docs

    await flow.run()
    assert peak == 5
    peak = 0
    await flow.run(max_concurrent=2)
    assert peak == 2


async def test_map_step_items_share_a_named_limiter() -> None:
    in_flight = peak = 0
    flow = trioflow.Flow("named")

    @flow.step(map_over="xs", limiter="llm")
    async def call(xs: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await checkpoints(2)
        in_flight -= 1
        return xs

    result = await flow.run({"xs": list(range(9))}, limiters={"llm": 3})
    assert result["call"] == list(range(9))
    assert peak == 3


async def test_map_step_retries_per_item_with_events_naming_the_item() -> None:
    events: list[Any] = []
    flow = trioflow.Flow("retries")

    @flow.step(map_over="xs", retry=Retry(max_attempts=3))
    async def flaky(xs: int) -> int:
        step = trioflow.current_step()
        assert step.item == xs
        await anyio.lowlevel.checkpoint()
        if step.attempt <= xs:
            raise ConnectionError(xs)
        return xs

    result = await flow.run({"xs": [0, 1, 2]}, on_event=events.append)
    assert result["flaky"] == [0, 1, 2]
    assert result.steps["flaky"].attempts == 3  # the largest over items
    retries = sorted((e.item, e.attempt) for e in events if isinstance(e, trioflow.StepRetrying))
    assert retries == [(1, 1), (2, 1), (2, 2)]
    started = sorted((e.item, e.attempt) for e in events if isinstance(e, trioflow.StepStarted))
    assert started == [(0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    done = sorted(e.item for e in events if isinstance(e, trioflow.StepSucceeded))
    assert done == [0, 1, 2]


async def test_map_step_items_are_isolated() -> None:
    flow = trioflow.Flow("iso")

    @flow.step
    async def shared() -> dict[str, list[int]]:
        return {"seen": []}

    @flow.step
    async def rows() -> list[list[int]]:
        return [[0], [0], [0]]

    @flow.step(map_over="rows")
    async def mutate(rows: list[int], shared: dict[str, list[int]]) -> tuple[int, int]:
        rows.append(1)
        shared["seen"].append(1)
        await checkpoints(2)
        return len(rows), len(shared["seen"])

    result = await flow.run()
    assert result["mutate"] == [(2, 1), (2, 1), (2, 1)]  # no item saw a sibling's change
    assert result["rows"] == [[0], [0], [0]]
    assert result["shared"] == {"seen": []}


async def test_map_step_continue_tries_every_item_then_fails() -> None:
    tried: list[int] = []
    flow = trioflow.Flow("cont")

    @flow.step(map_over="xs")
    async def check(xs: int) -> int:
        tried.append(xs)
        await checkpoints(xs)
        if xs in (1, 3):
            raise ValueError(xs)
        return xs

    @flow.step
    async def after(check: list[int]) -> int:
        return sum(check)  # pragma: no cover

    with pytest.raises(FlowError) as info:
        await flow.run({"xs": [0, 1, 2, 3, 4]}, error_handling="continue")
    assert sorted(tried) == [0, 1, 2, 3, 4]
    assert [e.args for e in info.value.exceptions] == [(1,), (3,)]
    assert info.value.result.steps["check"].status is StepStatus.FAILED
    assert info.value.result.skipped == ["after"]


async def test_map_step_fail_fast_cancels_running_items() -> None:
    cancelled: list[int] = []
    started: list[int] = []
    flow = trioflow.Flow("ff")

    @flow.step(map_over="xs")
    async def work(xs: int) -> int:
        started.append(xs)
        if xs == 0:
            while len(started) < 4:  # fail once every item is running
                await anyio.lowlevel.checkpoint()
            raise ValueError("first")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(xs)
            raise
        return xs  # pragma: no cover

    with anyio.fail_after(30), pytest.raises(FlowError) as info:
        await flow.run({"xs": [0, 1, 2, 3]})
    assert sorted(cancelled) == [1, 2, 3]
    assert info.value.result.steps["work"].status is StepStatus.FAILED


@pytest.mark.trio_only
async def test_map_step_timing_in_virtual_time() -> None:
    flow = trioflow.Flow("timing")

    @flow.step(map_over="xs", max_concurrent=3)
    async def nap(xs: float) -> float:
        await trio.sleep(xs)
        return xs

    result = await flow.run({"xs": [1.0] * 7})
    assert result.duration == math.ceil(7 / 3) * 1.0


async def test_map_inside_a_step_reports_the_step_and_sums_usage_into_it() -> None:
    flow = trioflow.Flow("nested")

    async def call(x: int) -> tuple[str, int | None]:
        step = trioflow.current_step()
        step.add_usage(calls=1, tokens=x)
        return step.name, step.item

    @flow.step
    async def fan(n: int) -> list[tuple[str, int | None]]:
        trioflow.current_step().add_usage(calls=1)
        return await trioflow.map(call, range(n), max_concurrent=3)

    result = await flow.run({"n": 4}, run_id="r1")
    assert result["fan"] == [("fan", 0), ("fan", 1), ("fan", 2), ("fan", 3)]
    assert dict(result.steps["fan"].usage) == {"calls": 5, "tokens": 6}
