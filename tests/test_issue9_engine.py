"""Issue 9, the engine's items: failures arrive whole and the same under every schedule.

Each test is named after the item it covers. Async tests run on trio (in
virtual time) and on asyncio (in real time, short sleeps).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import anyio
import pytest
import trio
import trio.lowlevel
import trio.testing
from _backends import on_trio

import trioflow
from trioflow.testing import check_deterministic

pytestmark = pytest.mark.anyio

TICK = 0.01  # seconds: virtual on trio, real on asyncio


def _outcome(err: trioflow.FlowError) -> tuple[Any, ...]:
    """Statuses, attempts and the exceptions of a FlowError, comparable across runs."""
    steps = tuple((name, s.status.value, s.attempts) for name, s in err.result.steps.items())
    return steps, tuple(repr(e) for e in err.exceptions)


# -- item 1: fail_fast with retries does not depend on the schedule ----------------------


def _retry_and_fail_flow(gate: anyio.Event, reverse: bool = False) -> trioflow.Flow:
    """Two steps fail at the same instant (woken by one event); one of them would retry."""
    flow = trioflow.Flow("retry_and_fail")

    async def flaky() -> None:
        await gate.wait()
        raise ValueError("flaky")

    async def broken() -> None:
        await gate.wait()
        raise KeyError("broken")

    async def opener() -> str:
        await anyio.sleep(TICK)
        gate.set()
        return "open"

    async def slow() -> str:
        await anyio.sleep(10 * TICK)
        return "slow"

    failing: list[tuple[Any, dict[str, Any]]] = [
        (flaky, {"retry": trioflow.Retry(max_attempts=3, wait=1)}),
        (broken, {}),
    ]
    for fn, options in reversed(failing) if reverse else failing:  # either one runs first
        flow.add(fn, **options)
    flow.add(opener)
    flow.add(slow)
    return flow


def _by_name(err: trioflow.FlowError) -> tuple[Any, ...]:
    steps = {name: (s.status.value, s.attempts) for name, s in err.result.steps.items()}
    return steps, sorted(repr(e) for e in err.exceptions)


async def _flow_outcome(max_concurrent: int | None = None, reverse: bool = False) -> tuple[Any, ...]:
    with pytest.raises(trioflow.FlowError) as info:
        await _retry_and_fail_flow(anyio.Event(), reverse).run(max_concurrent=max_concurrent)
    return _by_name(info.value)


async def _map_outcome(reverse: bool = False) -> tuple[Any, ...]:
    gate = anyio.Event()
    xs = [1, 0] if reverse else [0, 1]

    async def item(x: int) -> None:
        await gate.wait()
        if x == 0:
            raise KeyError(x)
        raise ValueError(x)

    async def opener() -> None:
        await anyio.sleep(TICK)
        gate.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(opener)
        with pytest.raises(trioflow.FlowError) as info:
            await trioflow.map(item, xs, retry=trioflow.Retry(max_attempts=3, wait=1, retry_on=ValueError))
    steps = info.value.result.steps
    by_x = {x: (steps[f"item[{i}]"].status.value, steps[f"item[{i}]"].attempts) for i, x in enumerate(xs)}
    return by_x, sorted(repr(e) for e in info.value.exceptions)


EXPECTED_FLOW = (
    {"flaky": ("failed", 1), "broken": ("failed", 1), "opener": ("succeeded", 1), "slow": ("cancelled", 1)},
    ["KeyError('broken')", "ValueError('flaky')"],
)
EXPECTED_MAP = ({0: ("failed", 1), 1: ("failed", 1)}, ["KeyError(0)", "ValueError(1)"])


@pytest.mark.parametrize("max_concurrent", [None, 4])
async def test_issue9_item1_failfast_retry_schedule_independent(max_concurrent: int | None) -> None:
    # trio also reverses each scheduling batch at random: 20 runs reach both orders
    for i in range(20 if on_trio() else 4):
        assert await _flow_outcome(max_concurrent, reverse=bool(i % 2)) == EXPECTED_FLOW


async def test_issue9_item1_map_failfast_retry_schedule_independent() -> None:
    for i in range(20 if on_trio() else 4):
        assert await _map_outcome(reverse=bool(i % 2)) == EXPECTED_MAP


def test_issue9_item1_check_deterministic_passes_on_failfast_retry_flow() -> None:
    assert check_deterministic(_flow_outcome, runs=40) == EXPECTED_FLOW


def test_issue9_item1_check_deterministic_passes_on_failfast_retry_map() -> None:
    assert check_deterministic(_map_outcome, runs=40) == EXPECTED_MAP


def test_issue9_item1_zero_wait_retry_is_schedule_independent_under_the_harness() -> None:
    flow = trioflow.Flow("zero_wait")

    @flow.step(retry=trioflow.Retry(max_attempts=3, wait=0))
    async def flaky() -> None:
        await trio.sleep(1)
        raise ValueError("flaky")

    @flow.step
    async def broken() -> None:
        await trio.sleep(1)
        await trio.lowlevel.checkpoint()  # fails one scheduling batch later, at the same instant
        raise KeyError("broken")

    async def outcome() -> tuple[Any, ...]:
        with pytest.raises(trioflow.FlowError) as info:
            await flow.run()
        return _outcome(info.value)

    assert check_deterministic(outcome, runs=40) == (
        (("flaky", "failed", 1), ("broken", "failed", 1)),
        ("ValueError('flaky')", "KeyError('broken')"),
    )


async def test_issue9_item1_a_retry_pending_from_an_earlier_instant_is_cancelled() -> None:
    flow = trioflow.Flow("earlier")

    @flow.step(retry=trioflow.Retry(max_attempts=3, wait=100 * TICK))
    async def flaky() -> None:
        await anyio.sleep(TICK)
        raise ValueError("flaky")

    @flow.step
    async def broken() -> None:
        await anyio.sleep(5 * TICK)
        raise KeyError("broken")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    assert _outcome(info.value) == (
        (("flaky", "cancelled", 1), ("broken", "failed", 1)),
        ("KeyError('broken')",),
    )


# -- item 2: attempts counts the attempts that began --------------------------------------


async def test_issue9_item2_cancelled_while_waiting_to_retry_counts_its_attempt() -> None:
    flow = trioflow.Flow("attempts")

    @flow.step(retry=trioflow.Retry(max_attempts=5, wait=30 * TICK))
    async def flaky() -> None:
        await anyio.sleep(TICK)
        raise ValueError("flaky")

    @flow.step
    async def broken() -> None:
        await anyio.sleep(10 * TICK)  # while flaky waits to retry after its first attempt
        raise KeyError("broken")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    flaky_result = info.value.result.steps["flaky"]
    assert flaky_result.status == "cancelled"
    assert flaky_result.attempts == 1
    assert flaky_result.started_at is not None


async def test_issue9_item2_cancelled_in_its_second_attempt_counts_two() -> None:
    flow = trioflow.Flow("attempts2")

    @flow.step(retry=trioflow.Retry(max_attempts=5, wait=TICK))
    async def flaky() -> None:
        if trioflow.current_step().attempt == 1:
            raise ValueError("flaky")
        await anyio.sleep(100 * TICK)

    @flow.step
    async def broken() -> None:
        await anyio.sleep(20 * TICK)  # while flaky runs its second attempt
        raise KeyError("broken")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    assert (info.value.result.steps["flaky"].status, info.value.result.steps["flaky"].attempts) == (
        "cancelled",
        2,
    )


async def test_issue9_item2_map_item_attempts_count_the_same_way() -> None:
    async def item(x: int) -> None:
        if x == 0:
            await anyio.sleep(10 * TICK)
            raise KeyError(x)
        await anyio.sleep(TICK)
        raise ValueError(x)

    retry = trioflow.Retry(max_attempts=5, wait=30 * TICK, retry_on=ValueError)
    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.map(item, [0, 1], retry=retry)
    steps = info.value.result.steps
    assert (steps["item[1]"].status, steps["item[1]"].attempts) == ("cancelled", 1)

    flow = trioflow.Flow("map_attempts")

    @flow.step
    async def items() -> list[int]:
        return [0, 1]

    @flow.step(map_over="items", retry=retry)
    async def each(items: int) -> None:
        await item(items)

    with pytest.raises(trioflow.FlowError) as finfo:
        await flow.run()
    assert (finfo.value.result.steps["each"].status, finfo.value.result.steps["each"].attempts) == ("failed", 1)
    assert finfo.value.result.steps["each"].error is not None


# -- item 4: a value that cannot be copied fails its step, named ------------------------


async def test_issue9_item4_uncopyable_input_fails_the_step_with_a_clear_error() -> None:
    flow = trioflow.Flow("uncopyable")
    ran: list[str] = []

    @flow.step
    async def use(lock: Any) -> str:
        ran.append("use")
        return "used"

    @flow.step
    async def other() -> str:
        return "other"

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run({"lock": threading.Lock()})
    err = info.value
    assert len(err.exceptions) == 1
    exc = err.exceptions[0]
    assert type(exc) is TypeError
    assert str(exc).startswith("step 'use' cannot get its own copy of 'lock': a _thread.lock cannot be deep-copied")
    assert "isolation='share'" in str(exc)
    assert "resources=" in str(exc)
    assert err.result.steps["use"].status == "failed"
    assert err.result.steps["use"].attempts == 0  # the function was never called
    assert ran == []


async def test_issue9_item4_uncopyable_upstream_output_under_continue() -> None:
    flow = trioflow.Flow("uncopyable_output")

    @flow.step
    async def make() -> Any:
        return threading.Lock()

    @flow.step(retry=trioflow.Retry(max_attempts=3))
    async def use(make: Any) -> str:
        return "used"

    @flow.step(isolation="share")
    async def shared(make: Any) -> str:
        return "shared"

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run(error_handling="continue")
    result = info.value.result
    assert result.failed == ["use"]
    assert result["shared"] == "shared"
    assert "'use' cannot get its own copy of 'make'" in str(info.value.exceptions[0])


# -- item 5: nothing leaves as a bare group ----------------------------------------------


async def test_issue9_item5_outside_cancellation_is_plain_cancellation() -> None:
    flow = trioflow.Flow("cancelled")
    for name in ("a", "b", "c"):

        async def step() -> None:
            await anyio.sleep(100)

        step.__name__ = name
        flow.add(step)

    async def forever(x: int) -> None:
        await anyio.sleep(100)

    cancelled = anyio.get_cancelled_exc_class()
    async def forever0() -> None:
        await anyio.sleep(100)

    for call in (
        flow.run,
        lambda: trioflow.map(forever, range(3)),
        _gather3,
        lambda: trioflow.race(forever0, forever0),
    ):
        caught: list[BaseException] = []
        with anyio.move_on_after(TICK):
            try:
                await call()
            except BaseException as exc:
                caught.append(exc)
                raise
        assert len(caught) == 1
        assert type(caught[0]) is cancelled


async def _gather3() -> None:
    async def forever() -> None:
        await anyio.sleep(100)

    await trioflow.gather(forever, forever, forever)


# trio only: asyncio's tasks hand a KeyboardInterrupt or SystemExit straight to the event
# loop, which stops with it whatever the task's awaiter does
@pytest.mark.trio_only
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
async def test_issue9_item5_keyboard_interrupt_and_system_exit_come_out_as_themselves(
    kind: type[BaseException],
) -> None:
    await _comes_out_as_itself(kind)


async def _comes_out_as_itself(kind: type[BaseException]) -> None:
    flow = trioflow.Flow("interrupted")

    @flow.step
    async def boom() -> None:
        await anyio.sleep(TICK)
        raise kind()

    @flow.step
    async def slow() -> None:
        await anyio.sleep(100)

    with pytest.raises(kind) as info:
        await flow.run()
    assert type(info.value) is kind

    async def item(x: int) -> None:
        await anyio.sleep(TICK * x)
        if x == 1:
            raise kind()

    with pytest.raises(kind) as minfo:
        await trioflow.map(item, [1, 100])
    assert type(minfo.value) is kind

    async def interrupt() -> None:
        await anyio.sleep(TICK)
        raise kind()

    async def laggard() -> None:
        await anyio.sleep(100)

    with pytest.raises(kind) as rinfo:
        await trioflow.race(interrupt, laggard)
    assert type(rinfo.value) is kind


async def test_issue9_item5_engine_error_becomes_a_failure_naming_the_step() -> None:
    flow = trioflow.Flow("engine")

    def items() -> Any:
        yield 1
        raise ValueError("the source broke")

    @flow.step(map_over="source")
    async def each(source: int) -> int:
        return source

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run({"source": items()})
    assert info.value.result.steps["each"].status == "failed"
    assert "map step 'each' maps over 'source'" in str(info.value.exceptions[0])


class _BrokenLimiter:
    total_tokens = 1.0

    async def acquire(self) -> None:
        raise RuntimeError("limiter broke")

    def release(self) -> None:  # pragma: no cover - never acquired
        raise AssertionError("released a limiter that was never acquired")


@pytest.mark.parametrize("error_handling", ["fail_fast", "continue"])
async def test_issue9_item5_a_limiter_that_raises_fails_its_steps(error_handling: str) -> None:
    flow = trioflow.Flow("limited")

    @flow.step(limiter="broken")
    async def plain() -> int:  # pragma: no cover - never called
        return 1

    @flow.step(map_over="items", limiter="broken")
    async def each(items: int) -> int:  # pragma: no cover - never called
        return items

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run({"items": [1, 2]}, limiters={"broken": _BrokenLimiter()}, error_handling=error_handling)
    result = info.value.result
    assert result.steps["plain"].status == "failed"
    assert result.steps["plain"].attempts == 0
    if error_handling == "continue":
        assert result.steps["each"].status == "failed"
    assert all(isinstance(e, RuntimeError) for e in info.value.exceptions)
    assert "trioflow: step 'plain' failed before attempt 1" in info.value.exceptions[0].__notes__


# -- item 6: an on_event callback that raises loses nothing -----------------------------


def _two_steps() -> trioflow.Flow:
    flow = trioflow.Flow("observed")

    @flow.step
    async def first() -> int:
        await anyio.sleep(TICK)
        return 1

    @flow.step
    async def second(first: int) -> int:
        await anyio.sleep(TICK)
        return first + 1

    return flow


@pytest.mark.parametrize("on", ["StepStarted", "StepSucceeded", "RunFinished"])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_issue9_item6_on_event_raising_keeps_every_output(on: str, kind: str, tmp_path: Any) -> None:
    seen: list[str] = []

    def callback(event: Any) -> None:
        seen.append(type(event).__name__)
        if type(event).__name__ == on:
            raise RuntimeError(f"observer broke on {on}")

    store: Any = trioflow.MemoryStore() if kind == "memory" else trioflow.SQLiteStore(tmp_path / "runs.db")
    with pytest.raises(trioflow.FlowError) as info:
        await _two_steps().run(on_event=callback, store=store, run_id="r1")
    err = info.value
    assert [str(e) for e in err.exceptions] == [f"observer broke on {on}"]
    assert dict(err.result.outputs) == {"first": 1, "second": 2}
    assert seen.count(on) == 1  # no further events after the callback raised
    (run,) = await store.runs()
    assert run.status == "succeeded"
    loaded = await store.load("r1")
    assert dict(loaded.outputs) == {"first": 1, "second": 2}
    if kind == "sqlite":
        store.close()


async def test_issue9_item6_on_event_raising_while_cancelled_stays_cancellation() -> None:
    def callback(event: Any) -> None:
        if isinstance(event, trioflow.StepCancelled):
            raise RuntimeError("observer broke on cancel")

    flow = _two_steps()
    with anyio.move_on_after(1.5 * TICK) as scope:
        await flow.run(on_event=callback)
    assert scope.cancelled_caught


async def test_issue9_item6_async_on_event_is_refused_before_the_run() -> None:
    ran: list[str] = []
    flow = trioflow.Flow("async_observer")

    @flow.step
    async def step() -> None:
        ran.append("step")

    async def observer(event: Any) -> None:  # pragma: no cover - never called
        pass

    class AsyncObserver:
        async def __call__(self, event: Any) -> None:  # pragma: no cover - never called
            pass

    for bad in (observer, AsyncObserver()):
        with pytest.raises(TypeError, match=r"takes a plain \(synchronous\) callable"):
            await flow.run(on_event=bad)
    assert ran == []


# -- item 7: an exception that refuses notes still arrives -------------------------------


class _NoNotes(Exception):
    __notes__ = ()


class _SlottedNoNotes(Exception):
    __slots__ = ()

    @property
    def __notes__(self) -> tuple[str, ...]:  # type: ignore[override]
        return ()


@pytest.mark.parametrize("cls", [_NoNotes, _SlottedNoNotes])
async def test_issue9_item7_exception_refusing_notes_arrives(cls: type[Exception]) -> None:
    flow = trioflow.Flow("notes")

    @flow.step
    async def step() -> None:
        raise cls("the original")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    (exc,) = info.value.exceptions
    assert type(exc) is cls
    assert str(exc) == "the original"

    async def item(x: int) -> None:
        raise cls("the original item")

    with pytest.raises(trioflow.FlowError) as minfo:
        await trioflow.map(item, [0])
    (mexc,) = minfo.value.exceptions
    assert type(mexc) is cls
    assert str(mexc) == "the original item"

    class Node:
        async def run(self, ctx: Any) -> Any:
            raise cls("the original node")

    from trioflow.nodes import RunContext, run_graph

    with pytest.raises(cls, match="the original node"):
        await run_graph(Node(), RunContext({}, execution_id="x"))


async def test_issue9_item7_notes_never_lose_a_condition_key_or_race_error() -> None:
    def refuse(label: str) -> Any:
        raise _NoNotes(label)

    flow = trioflow.Flow("conditional")

    @flow.step(when=lambda: refuse("when"))
    async def guarded() -> None:  # pragma: no cover - its condition raises
        pass

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    assert [str(e) for e in info.value.exceptions] == ["when"]

    keyed = trioflow.Flow("keyed")

    @keyed.step(map_over="urls", limiter="host", limit_key=lambda urls: refuse("key"))
    async def fetch(urls: str) -> str:  # pragma: no cover - its key raises
        return urls

    with pytest.raises(trioflow.FlowError) as kinfo:
        await keyed.run({"urls": ["a"]}, limiters={"host": trioflow.KeyedLimiter(per_key=1)})
    assert [str(e) for e in kinfo.value.exceptions] == ["key"]

    async def loser() -> None:
        raise _NoNotes("race")

    with pytest.raises(trioflow.FlowError) as rinfo:
        await trioflow.race(loser)
    assert [str(e) for e in rinfo.value.exceptions] == ["race"]


async def test_issue9_item7_open_run_body_error_refusing_notes_arrives() -> None:
    flow = trioflow.Flow("watched")

    @flow.step
    async def boom() -> None:
        raise ValueError("the run failed")

    async def watch() -> None:
        async with flow.open_run() as run:
            async for _event in run.events():
                pass
            raise _NoNotes("the body")

    with pytest.raises(_NoNotes, match="the body"):
        await watch()


# -- item 8: any attempt count works -----------------------------------------------------


def test_issue9_item8_retry_delay_caps_before_the_power() -> None:
    retry = trioflow.Retry(max_attempts=2000, wait=0.5, max_wait=60.0)
    assert retry.delay(1, jitter_draw=0.0) == 0.5
    assert retry.delay(4, jitter_draw=0.0) == 4.0
    assert retry.delay(2000, jitter_draw=0.0) == 60.0
    assert retry.delay(10**9, jitter_draw=0.5) == 60.0
    assert trioflow.Retry(wait=3.0, max_wait=2.0).delay(1, jitter_draw=0.0) == 2.0
    assert trioflow.Retry(max_attempts=2000, wait=0.0).delay(1999, jitter_draw=0.0) == 0.0
    assert trioflow.Retry(max_attempts=2000, wait=0.5, backoff=1.0).delay(1999, jitter_draw=0.0) == 0.5


async def test_issue9_item8_two_thousand_attempts() -> None:
    flow = trioflow.Flow("persistent")
    calls: list[int] = []

    @flow.step(retry=trioflow.Retry(max_attempts=2000, wait=0.0001, max_wait=0.0001))
    async def stubborn() -> str:
        calls.append(trioflow.current_step().attempt)
        if len(calls) < 2000:
            raise ConnectionError("not yet")
        return "done"

    result = await flow.run()
    assert result["stubborn"] == "done"
    assert result.steps["stubborn"].attempts == 2000


# -- item 21: a cancelled run starts no new work ------------------------------------------


class _SpawnCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned_at: list[float] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned_at.append(trio.current_time())


@pytest.mark.trio_only  # counting spawned tasks needs trio's Instrument API
async def test_issue9_item21_cancelled_run_spawns_no_tasks() -> None:
    flow = trioflow.Flow("wide")

    async def step() -> None:
        await trio.sleep(1)

    for i in range(2000):
        flow.add(step, name=f"s{i}")

    counter = _SpawnCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            await flow.run()
        assert len(counter.spawned_at) <= 2  # the nursery's first scout, nothing more

        counter.spawned_at.clear()
        with trio.move_on_after(1.5):  # 100 steps done at 1.0, 100 more in flight
            await flow.run(max_concurrent=100)
        late = [t for t in counter.spawned_at if t >= 1.5]
        assert late == []
        assert len(counter.spawned_at) <= 400  # about two batches' worth, not 2000
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_issue9_item21_cancelled_run_starts_no_step() -> None:
    flow = trioflow.Flow("chain_and_fan")
    started: list[str] = []

    def add(name: str, deps: list[str]) -> None:
        async def step(**kwargs: Any) -> None:
            started.append(name)
            await anyio.sleep(TICK)

        step.__name__ = name
        step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
        )
        flow.add(step)

    add("root", [])
    for i in range(50):
        add(f"leaf{i}", ["root"])
    with anyio.move_on_after(TICK / 2) as scope:
        await flow.run()
    assert scope.cancelled_caught
    assert started == ["root"]


# -- item 22: map reaches a checkpoint at least every 16 items ---------------------------


async def test_issue9_item22_map_of_items_that_never_await_lets_others_run() -> None:
    done: list[int] = []

    async def quick(x: int) -> int:
        done.append(x)
        return x

    sibling_runs = 0
    finished = False

    async def sibling() -> None:
        nonlocal sibling_runs
        while not finished:
            sibling_runs += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sibling)
        await anyio.lowlevel.checkpoint()
        runs_before = sibling_runs
        assert await trioflow.map(quick, range(1600), max_concurrent=1) == list(range(1600))
        finished = True
    assert sibling_runs - runs_before >= 1600 // 16 - 2


async def test_issue9_item22_cancellation_reaches_a_map_of_items_that_never_await() -> None:
    done: list[int] = []

    async def quick(x: int) -> int:
        done.append(x)
        return x

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def canceller() -> None:
                await anyio.lowlevel.checkpoint()
                scope.cancel()

            tg.start_soon(canceller)
            await trioflow.map(quick, range(100_000), max_concurrent=4)
    assert scope.cancelled_caught
    assert len(done) < 1000


# -- item 20: map keeps nothing per finished item beyond the results -------------------


def test_issue9_item20_map_bookkeeping_does_not_grow_with_the_items() -> None:
    import tracemalloc

    async def double(x: int) -> int:
        return 2 * x

    async def comprehension(n: int) -> list[int]:
        return [await double(i) for i in (i for i in range(n))]

    def peak(fn: Any, *args: Any) -> int:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = trio.run(fn, *args)
            top = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert result == [2 * i for i in range(n)]
        return top

    n = 30_000
    ours = peak(trioflow.map, double, (i for i in range(n)))
    plain = peak(comprehension, n)  # the result list, growing as items come
    assert ours - plain < 64 * 1024  # was about 218 bytes per item (6.5 MB here)


# -- item 3: BatchStarted lists exactly the steps that start together --------------------


def _independent(n: int, limiter: str | None = None, extra: int = 0) -> trioflow.Flow:
    flow = trioflow.Flow("batches")
    for i in range(n):

        async def step() -> None:
            await anyio.sleep(TICK)

        step.__name__ = f"s{i}"
        flow.add(step, limiter=limiter)
    for i in range(extra):

        async def free() -> None:
            await anyio.sleep(TICK)

        free.__name__ = f"free{i}"
        flow.add(free)
    return flow


async def _batches(flow: trioflow.Flow, **options: Any) -> tuple[list[tuple[str, ...]], list[Any]]:
    events: list[Any] = []
    await flow.run(on_event=events.append, **options)
    return [e.steps for e in events if isinstance(e, trioflow.BatchStarted)], events


async def test_issue9_item3_batch_started_lists_only_steps_that_start() -> None:
    # sequential: steps never start together, so nothing is announced
    batches, _ = await _batches(_independent(3), max_concurrent=1)
    assert batches == []

    # two slots: the first two start together; the third starts alone later
    batches, events = await _batches(_independent(3), max_concurrent=2)
    assert batches == [("s0", "s1")]
    if on_trio():  # in virtual time, "together" is the same clock reading
        (batch,) = [e for e in events if isinstance(e, trioflow.BatchStarted)]
        first_starts = [e for e in events if isinstance(e, trioflow.StepStarted) and e.time == batch.time]
        assert sorted(e.step for e in first_starts) == ["s0", "s1"]

    # a named limiter of 2: two of its steps start, with the step that needs none
    batches, _ = await _batches(_independent(3, limiter="llm", extra=1), limiters={"llm": 2})
    assert batches == [("s0", "s1", "free0")]

    # a shared CapacityLimiter with 2 tokens
    batches, _ = await _batches(_independent(3), limiter=anyio.CapacityLimiter(2))
    assert batches == [("s0", "s1")]

    # a fan-out under a full run: the root's children start one at a time
    flow = trioflow.Flow("fan")

    @flow.step
    async def root() -> int:
        return 1

    for i in range(3):

        async def child(root: int) -> None:
            await anyio.sleep(TICK)

        child.__name__ = f"child{i}"
        flow.add(child)
    batches, _ = await _batches(flow, max_concurrent=1)
    assert batches == []
    batches, _ = await _batches(flow)
    assert batches == [("child0", "child1", "child2")]
