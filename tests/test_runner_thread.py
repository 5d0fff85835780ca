"""``runner="thread"`` (issue 14 item 1): plain functions in worker threads."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import anyio
import pytest

import trioflow
from trioflow import Flow, FlowError, Retry, StepStatus

pytestmark = pytest.mark.anyio


def raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


async def test_plain_function_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    flow = Flow("f")

    @flow.step(runner="thread")
    def parse(text: str) -> tuple[str, bool]:
        return text.upper(), threading.get_ident() != loop_thread

    @flow.step
    async def use(parse: tuple[str, bool]) -> str:
        return parse[0] + "!"

    result = await flow.run({"text": "doc"})
    assert result["parse"] == ("DOC", True)
    assert result["use"] == "DOC!"
    assert result.steps["parse"].status is StepStatus.SUCCEEDED


async def test_current_step_inside_a_thread_step() -> None:
    flow = Flow("f")

    @flow.step(runner="thread", retry=Retry(max_attempts=2))
    def one() -> tuple[str, int, int | None, str | None]:
        step = trioflow.current_step()
        if step.attempt == 1:
            raise ConnectionError("flaky")
        return step.name, step.attempt, step.item, step.run_id

    @flow.step(runner="thread", map_over="xs")
    def each(xs: int) -> tuple[str, int | None]:
        step = trioflow.current_step()
        return step.name, step.item

    result = await flow.run({"xs": [10, 20, 30]}, run_id="r1", store=trioflow.MemoryStore())
    assert result["one"] == ("one", 2, None, "r1")
    assert result["each"] == [("each", 0), ("each", 1), ("each", 2)]
    assert result.steps["one"].attempts == 2


async def test_add_usage_from_many_threads_at_once_sums_exactly() -> None:
    flow = Flow("f")
    barrier = threading.Barrier(8, timeout=30)

    @flow.step(runner="thread", map_over="xs")
    def count(xs: int) -> int:
        barrier.wait()  # every item is in its thread before any adds usage
        step = trioflow.current_step()
        for _ in range(2000):
            step.add_usage(calls=1, tokens=xs)
        return xs

    result = await flow.run({"xs": list(range(8))})
    assert result.steps["count"].usage == {"calls": 8 * 2000, "tokens": sum(range(8)) * 2000}
    assert result.usage == {"calls": 16000, "tokens": 56000}


async def test_thread_limiter_is_sized_to_the_run_not_anyio_default_of_40() -> None:
    # 60 items that can only finish when all 60 are in a thread at once
    flow = Flow("f")
    barrier = threading.Barrier(60, timeout=30)

    @flow.step(runner="thread", map_over="xs")
    def meet(xs: int) -> int:
        barrier.wait()
        return xs

    result = await flow.run({"xs": list(range(60))})
    assert result["meet"] == list(range(60))


async def test_max_concurrent_and_limiters_count_thread_steps() -> None:
    flow = Flow("f")
    lock = threading.Lock()
    running = 0
    peak = 0

    def body(x: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return x

    @flow.step(runner="thread", map_over="xs")
    def a(xs: int) -> int:
        return body(xs)

    @flow.step(runner="thread", map_over="ys", limiter="cpu")
    def b(ys: int) -> int:
        return body(ys)

    result = await flow.run({"xs": list(range(6)), "ys": list(range(6))}, max_concurrent=3, limiters={"cpu": 1})
    assert result["a"] == list(range(6))
    assert result["b"] == list(range(6))
    assert 1 <= peak <= 3


async def test_a_failing_thread_step_fails_the_run_with_its_exception() -> None:
    flow = Flow("f")

    @flow.step(runner="thread")
    def bad() -> None:
        raise KeyError("missing")

    with pytest.raises(FlowError) as info:
        await flow.run()
    (error,) = info.value.exceptions
    assert isinstance(error, KeyError)
    assert error.args == ("missing",)
    assert "trioflow: step 'bad' failed on attempt 1" in error.__notes__


async def test_fail_fast_waits_for_the_running_thread_and_cancels_the_step() -> None:
    flow = Flow("f")
    started = threading.Event()
    finished = threading.Event()

    @flow.step(runner="thread")
    def slow() -> str:
        started.set()
        time.sleep(0.3)
        finished.set()
        return "done"

    @flow.step
    async def fails() -> None:
        await anyio.to_thread.run_sync(started.wait)
        raise ValueError("boom")

    with pytest.raises(FlowError) as info:
        await flow.run()
    # the run returned only once the thread had returned: no orphan thread
    assert finished.is_set()
    result = info.value.result
    assert result.steps["slow"].status is StepStatus.CANCELLED
    assert result.steps["fails"].status is StepStatus.FAILED


async def test_cancellation_from_outside_waits_for_the_thread() -> None:
    flow = Flow("f")
    started = threading.Event()
    finished = threading.Event()

    @flow.step(runner="thread")
    def slow() -> str:
        started.set()
        time.sleep(0.3)
        finished.set()
        return "done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(flow.run)
        await anyio.to_thread.run_sync(started.wait)
        tg.cancel_scope.cancel()
    assert finished.is_set()


async def test_timeout_of_a_thread_step_fires_when_the_thread_returns() -> None:
    flow = Flow("f")
    finished = threading.Event()

    @flow.step(runner="thread", timeout=0.01)
    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "late"

    with pytest.raises(FlowError) as info:
        await flow.run()
    (error,) = info.value.exceptions
    assert isinstance(error, TimeoutError)
    assert str(error) == "step 'slow' timed out after 0.01s (attempt 1)"
    assert finished.is_set()


def test_a_thread_step_must_be_a_plain_function() -> None:
    flow = Flow("f")

    async def fetch() -> str:
        return "x"

    with raises(
        TypeError,
        "step 'fetch': runner='thread' runs plain functions, but 'fetch' is an async function; "
        "drop runner= to run it on the event loop, or define it with 'def'",
    ):
        flow.add(fetch, runner="thread")
    assert flow.steps == ()


def test_unknown_runner_names_the_choices() -> None:
    flow = Flow("f")

    def parse() -> None:
        pass

    with raises(
        TypeError,
        "runner='threads' is not a runner; use runner='thread' (blocking code), "
        "runner='process' (CPU-bound code) or runner=trioflow.DaskRunner(...)",
    ):
        flow.add(parse, runner="threads")
    with raises(TypeError, "runner= takes 'thread', 'process' or a trioflow.DaskRunner (got 3 that is a int)"):
        flow.add(parse, runner=3)


async def test_thread_step_with_cache_runs_once() -> None:
    flow = Flow("f")
    calls = []

    @flow.step(runner="thread", map_over="xs", cache=trioflow.Cache())
    def square(xs: int) -> int:
        calls.append(xs)
        return xs * xs

    result = await flow.run({"xs": [3, 3, 4]}, max_concurrent=1)
    assert result["square"] == [9, 9, 16]
    assert sorted(calls) == [3, 4]


async def test_sequential_and_parallel_thread_runs_agree() -> None:
    flow = Flow("f")

    @flow.step(runner="thread", map_over="xs")
    def double(xs: int) -> int:
        trioflow.current_step().add_usage(n=1)
        return 2 * xs

    @flow.step(runner="thread")
    def total(double: list[int]) -> int:
        return sum(double)

    one = await flow.run({"xs": list(range(20))}, max_concurrent=1)
    many = await flow.run({"xs": list(range(20))})
    assert one.outputs == many.outputs == {"double": [2 * x for x in range(20)], "total": 380}
    assert one.usage == many.usage == {"n": 20}


def test_describe_shows_where_a_step_runs() -> None:
    flow = Flow("f")

    @flow.step(runner="thread")
    def parse(text: str) -> str:
        return text

    @flow.step
    async def use(parse: str) -> str:
        return parse

    lines = flow.describe().splitlines()
    assert lines[1] == "  1. parse (no dependencies; inputs: text; runs in: thread)"
    assert lines[2] == "  2. use (depends on: parse)"
