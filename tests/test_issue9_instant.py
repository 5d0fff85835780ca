"""Issue 9 item 1: work that becomes due at the instant of the first failure.

A step ``b`` whose last dependency ``a`` finishes at the very instant another
step ``c`` fails begins its first attempt, whatever order the async library
runs ``a``'s end and ``c``'s failure in: it is then cancelled at its first
await that blocks (``attempts`` 1), or succeeds if it finishes without
blocking. The same holds for every unit due at that instant (map items, the
steps of a chain of quick steps, units waiting for a slot that frees then),
and nothing begins after that instant. Retries are the exception: once the
run has stopped, no step retries, not even one whose wait ends at that instant.

:func:`trioflow.map` follows the same rule (the last tests).

Async tests run on trio (virtual time, where trio shuffles each scheduling
batch, so repeated runs reach both orders) and on asyncio (real time: there
``a`` finishes just before ``c`` fails, as it went to sleep first).
``check_deterministic`` tries the schedules of trio's harness.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing
from _backends import on_trio

import trioflow
from trioflow.testing import NonDeterminismError, check_deterministic

pytestmark = pytest.mark.anyio

TICK = 0.01  # seconds: virtual on trio, real on asyncio

Outcome = tuple[Any, ...]


def _steps(err: trioflow.FlowError) -> tuple[tuple[str, str, int], ...]:
    return tuple((name, s.status.value, s.attempts) for name, s in err.result.steps.items())


def _items(err: trioflow.FlowError, name: str) -> tuple[tuple[str, int], ...]:
    return tuple((item.status.value, item.attempts) for item in err.result.steps[name].items)


def _instant_flow(b_kind: str, mapped: bool) -> trioflow.Flow:
    """``a`` (1 tick) -> ``b``; ``c`` fails after 1 tick, as ``a`` ends.

    ``b_kind``: ``"blocks"`` (awaits a sleep), ``"yields"`` (awaits a
    checkpoint that does not block) or ``"never"`` (never awaits).
    """
    flow = trioflow.Flow("instant")

    async def body(value: int) -> int:
        if b_kind == "blocks":
            await anyio.sleep(10 * TICK)
        elif b_kind == "yields":
            await anyio.lowlevel.checkpoint()
        return value

    @flow.step
    async def a() -> list[int]:
        await anyio.sleep(TICK)
        return [1, 2, 3]

    if mapped:

        @flow.step(map_over="a")
        async def b(a: int) -> int:
            return await body(a)

    else:

        @flow.step
        async def b(a: list[int]) -> int:
            return await body(len(a))

    @flow.step
    async def c() -> None:
        await anyio.sleep(TICK)
        raise ValueError("c")

    return flow


async def _instant_outcome(b_kind: str, mapped: bool, max_concurrent: int | None) -> Outcome:
    with pytest.raises(trioflow.FlowError) as info:
        await _instant_flow(b_kind, mapped).run(max_concurrent=max_concurrent)
    err = info.value
    items = _items(err, "b") if mapped else ()
    return _steps(err), items, tuple(repr(e) for e in err.exceptions)


# what happens to b, by (mapped, b_kind, max_concurrent): its (status, attempts)
# and, for the map step, each item's; c always fails alone, a always succeeds.
# With max_concurrent=1 nothing is due as c fails: b ran before c (it is more
# urgent: declared first, as long a path), c fails after it.
_CANCELLED_1 = ("cancelled", 1)
EXPECTED: dict[tuple[bool, str, int | None], tuple[tuple[str, int], tuple[tuple[str, int], ...]]] = {
    (False, "blocks", None): (_CANCELLED_1, ()),
    (False, "blocks", 2): (_CANCELLED_1, ()),
    (False, "blocks", 1): (("succeeded", 1), ()),
    (False, "never", None): (("succeeded", 1), ()),
    (False, "never", 2): (("succeeded", 1), ()),
    (False, "never", 1): (("succeeded", 1), ()),
    # every item begins: three slots are free at once
    (True, "blocks", None): (_CANCELLED_1, (_CANCELLED_1,) * 3),
    # two slots free up as a and c end: two items begin, the third never does
    (True, "blocks", 2): (_CANCELLED_1, (_CANCELLED_1, _CANCELLED_1, ("cancelled", 0))),
    (True, "blocks", 1): (("succeeded", 1), (("succeeded", 1),) * 3),
    # items that never block all end at that instant, freeing their slots for the next
    (True, "never", None): (("succeeded", 1), (("succeeded", 1),) * 3),
    (True, "never", 2): (("succeeded", 1), (("succeeded", 1),) * 3),
    (True, "never", 1): (("succeeded", 1), (("succeeded", 1),) * 3),
}


def _expected(mapped: bool, b_kind: str, max_concurrent: int | None) -> Outcome:
    b, items = EXPECTED[mapped, b_kind, max_concurrent]
    steps = (("a", "succeeded", 1), ("b", *b), ("c", "failed", 1))
    return steps, items, ("ValueError('c')",)


_CASES = [(m, k, mc) for m in (False, True) for k in ("blocks", "never") for mc in (None, 1, 2)]


@pytest.mark.parametrize(("mapped", "b_kind", "max_concurrent"), _CASES)
async def test_issue9_item1_a_step_due_at_the_failure_begins_under_every_order(
    mapped: bool, b_kind: str, max_concurrent: int | None
) -> None:
    expected = _expected(mapped, b_kind, max_concurrent)
    for _ in range(20 if on_trio() else 3):
        steps, items, errors = await _instant_outcome(b_kind, mapped, max_concurrent)
        assert (steps, errors) == (expected[0], expected[2])
        if on_trio():  # (in real time, the map items' own fates depend on timing)
            assert items == expected[1]


@pytest.mark.parametrize(("mapped", "b_kind", "max_concurrent"), _CASES)
def test_issue9_item1_check_deterministic_passes_on_a_step_due_at_the_failure(
    mapped: bool, b_kind: str, max_concurrent: int | None
) -> None:
    outcome = functools.partial(_instant_outcome, b_kind, mapped, max_concurrent)
    assert check_deterministic(outcome, runs=25) == _expected(mapped, b_kind, max_concurrent)


@pytest.mark.parametrize("mapped", [False, True])
def test_issue9_item1_under_the_harness_a_step_at_an_await_that_does_not_block_may_be_cancelled(
    mapped: bool,
) -> None:
    # b's await (a checkpoint) does not block, but the cancellation may land
    # before b goes on: plain trio.run reports b succeeded or cancelled, about
    # half the time each, and the harness shows both (issue 10: no blind spot)
    outcome = functools.partial(_instant_outcome, "yields", mapped, None)
    clock = trio.testing.MockClock
    plain = {trio.run(outcome, clock=clock(autojump_threshold=0))[0][1] for _ in range(60)}
    assert plain == {("b", "succeeded", 1), ("b", "cancelled", 1)}
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(outcome, runs=300)
    seen = {info.value.expected[0][1], info.value.got[0][1]}  # type: ignore[index]
    assert seen == plain


@pytest.mark.parametrize("mapped", [False, True])
def test_issue9_item1_with_one_slot_a_step_that_does_not_block_finishes_under_every_schedule(
    mapped: bool,
) -> None:
    # with max_concurrent=1, b runs (and ends) before c, the more urgent step
    outcome = functools.partial(_instant_outcome, "yields", mapped, 1)
    steps, items, errors = check_deterministic(outcome, runs=100)
    assert steps == (("a", "succeeded", 1), ("b", "succeeded", 1), ("c", "failed", 1))
    assert items == ((("succeeded", 1),) * 3 if mapped else ())
    assert errors == ("ValueError('c')",)


# -- a step that becomes due at that instant one scheduling batch later ---------------


def _woken_flow() -> tuple[trioflow.Flow, list[str]]:
    """``a`` fails and wakes ``b``, which ends in the next batch, at the same instant."""
    flow = trioflow.Flow("woken")
    ran: list[str] = []
    box: dict[str, anyio.Event] = {}

    @flow.step
    async def a() -> None:
        go = box.setdefault("go", anyio.Event())
        await anyio.sleep(TICK)
        go.set()
        raise ValueError("a")

    @flow.step
    async def b() -> int:
        await box.setdefault("go", anyio.Event()).wait()
        return 1

    @flow.step
    async def c(b: int) -> None:
        ran.append("c")

    return flow, ran


async def _woken_outcome() -> Outcome:
    flow, ran = _woken_flow()
    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    return _steps(info.value), tuple(ran)


_WOKEN = ((("a", "failed", 1), ("b", "succeeded", 1), ("c", "succeeded", 1)), ("c",))


async def test_issue9_item1_a_step_due_one_batch_after_the_failure_still_begins() -> None:
    for _ in range(20 if on_trio() else 1):
        outcome = await _woken_outcome()
        if on_trio():
            assert outcome == _WOKEN
        else:
            # in real time, c becomes due after the failure's clock reading: it never begins
            assert outcome == ((("a", "failed", 1), ("b", "succeeded", 1), ("c", "cancelled", 0)), ())


def test_issue9_item1_check_deterministic_passes_on_a_step_due_one_batch_later() -> None:
    assert check_deterministic(_woken_outcome, runs=25) == _WOKEN


# -- a chain of quick steps at that instant (past the YIELD_EVERY checkpoint) -----------


def _chain_flow(length: int, blocks_at: int | None) -> trioflow.Flow:
    """``a`` -> ``s0`` -> ... -> ``s{length-1}``, none awaiting but ``s{blocks_at}``; ``c`` fails as ``a`` ends."""
    flow = trioflow.Flow("chain")

    @flow.step
    async def a() -> int:
        await anyio.sleep(TICK)
        return 0

    previous = "a"
    for i in range(length):

        async def step(blocks: bool = i == blocks_at, **upstream: int) -> int:
            if blocks:
                await anyio.sleep(10 * TICK)
            return 1

        step.__name__ = step.__qualname__ = f"s{i}"
        step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(previous, inspect.Parameter.KEYWORD_ONLY, annotation=int)]
        )
        flow.add(step)
        previous = f"s{i}"

    @flow.step
    async def c() -> None:
        await anyio.sleep(TICK)
        raise ValueError("c")

    return flow


async def _chain_outcome(length: int, blocks_at: int | None) -> Outcome:
    with pytest.raises(trioflow.FlowError) as info:
        await _chain_flow(length, blocks_at).run()
    return _steps(info.value)


def _chain_expected(length: int, blocks_at: int | None) -> Outcome:
    chain: list[tuple[str, str, int]] = []
    for i in range(length):
        if blocks_at is None or i < blocks_at:
            chain.append((f"s{i}", "succeeded", 1))
        elif i == blocks_at:
            chain.append((f"s{i}", "cancelled", 1))
        else:
            chain.append((f"s{i}", "cancelled", 0))
    return (("a", "succeeded", 1), *chain, ("c", "failed", 1))


@pytest.mark.trio_only  # (in real time, the chain stops at the first clock reading after the failure)
@pytest.mark.parametrize("blocks_at", [None, 20])
async def test_issue9_item1_a_chain_of_quick_steps_at_the_failure_runs_to_its_end(blocks_at: int | None) -> None:
    # 40 steps: the worker running them passes two YIELD_EVERY checkpoints
    for _ in range(20):
        assert await _chain_outcome(40, blocks_at) == _chain_expected(40, blocks_at)


@pytest.mark.parametrize("blocks_at", [None, 20])
def test_issue9_item1_check_deterministic_passes_on_a_chain_at_the_failure(blocks_at: int | None) -> None:
    outcome = functools.partial(_chain_outcome, 40, blocks_at)
    assert check_deterministic(outcome, runs=25) == _chain_expected(40, blocks_at)


# -- capacity: which of the units waiting for a slot begin as slots free up --------------


def _capacity_flow(limited: bool) -> trioflow.Flow:
    """``x`` -> ``b``; ``c`` fails as ``x`` ends; ``d`` and ``e`` wait for a slot from the start."""
    flow = trioflow.Flow("capacity")
    options: dict[str, Any] = {"limiter": "llm"} if limited else {}

    async def sleeper(ticks: float, value: int) -> int:
        await anyio.sleep(ticks * TICK)
        return value

    @flow.step(**options)
    async def x() -> int:
        return await sleeper(1, 0)

    @flow.step(**options)
    async def b(x: int) -> int:
        return await sleeper(10, 1)

    @flow.step(**options)
    async def c() -> None:
        await anyio.sleep(TICK)
        raise ValueError("c")

    @flow.step(cost=0.1, **options)
    async def d() -> int:
        return await sleeper(10, 2)

    @flow.step(cost=0.1, **options)
    async def e() -> int:
        return await sleeper(10, 3)

    return flow


async def _capacity_outcome(limited: bool) -> Outcome:
    options: dict[str, Any] = {"limiters": {"llm": 2}} if limited else {"max_concurrent": 2}
    with pytest.raises(trioflow.FlowError) as info:
        await _capacity_flow(limited).run(**options)
    return _steps(info.value)


# x and c hold the two slots; as they end, the two best ready units take them:
# b (just ready, the longest path) and d (ready from the start, declared before e)
_CAPACITY = (
    ("x", "succeeded", 1),
    ("b", "cancelled", 1),
    ("c", "failed", 1),
    ("d", "cancelled", 1),
    ("e", "cancelled", 0),
)


@pytest.mark.trio_only  # (in real time, x ends just before c fails: only b begins)
@pytest.mark.parametrize("limited", [False, True], ids=["max_concurrent", "named_limiter"])
async def test_issue9_item1_slots_freed_at_the_failure_go_to_the_best_ready_units(limited: bool) -> None:
    for _ in range(20):
        assert await _capacity_outcome(limited) == _CAPACITY


@pytest.mark.parametrize("limited", [False, True], ids=["max_concurrent", "named_limiter"])
def test_issue9_item1_check_deterministic_passes_on_slots_freed_at_the_failure(limited: bool) -> None:
    assert check_deterministic(functools.partial(_capacity_outcome, limited), runs=25) == _CAPACITY


def test_issue9_item1_check_deterministic_passes_with_a_callers_limiter() -> None:
    # a caller's CapacityLimiter: its waiters are served in the order they came
    # (d and e wait in it from the start), so d and e take the tokens x and c
    # give back, and b, due at the failure, waits for one and never begins
    async def outcome() -> Outcome:
        with pytest.raises(trioflow.FlowError) as info:
            await _capacity_flow(False).run(limiter=trio.CapacityLimiter(2))
        return _steps(info.value)

    assert check_deterministic(outcome, runs=25) == (
        ("x", "succeeded", 1),
        ("b", "cancelled", 0),
        ("c", "failed", 1),
        ("d", "cancelled", 1),
        ("e", "cancelled", 1),
    )


async def _rate_outcome() -> Outcome:
    """One token a second: r1 takes it at once, r2's is due as c fails, r3's a second later."""
    flow = trioflow.Flow("rate")

    @flow.step(limiter="api")
    async def r1() -> None:
        await anyio.sleep(5.0)

    @flow.step(limiter="api")
    async def r2() -> None:
        await anyio.sleep(5.0)

    @flow.step(limiter="api")
    async def r3() -> None:
        pass

    @flow.step
    async def c() -> None:
        await anyio.sleep(1.0)
        raise ValueError("c")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run(limiters={"api": trioflow.RateLimit(calls=1, per=1.0)})
    return _steps(info.value)


_RATE = (("r1", "cancelled", 1), ("r2", "cancelled", 1), ("r3", "cancelled", 0), ("c", "failed", 1))


@pytest.mark.trio_only  # (virtual time: in real time the token and the failure never come together)
async def test_issue9_item1_a_step_whose_rate_token_is_due_at_the_failure_begins() -> None:
    for _ in range(20):
        assert await _rate_outcome() == _RATE


def test_issue9_item1_check_deterministic_passes_on_a_rate_token_due_at_the_failure() -> None:
    assert check_deterministic(_rate_outcome, runs=40) == _RATE


# -- retries: none begins once the run has stopped ------------------------------------


async def _retry_due_outcome() -> Outcome:
    flow = trioflow.Flow("retry_due")

    # (times that add up exactly in binary floating point, so that the wait
    # ends at the very instant of the failure, however far the clock has run)
    @flow.step(retry=trioflow.Retry(max_attempts=3, wait=0.5))
    async def flaky() -> None:
        await anyio.sleep(0.5)
        raise ConnectionError("flaky")

    @flow.step
    async def broken() -> None:
        await anyio.sleep(1.0)  # as flaky's wait to retry ends
        raise ValueError("broken")

    with pytest.raises(trioflow.FlowError) as info:
        await flow.run()
    return _steps(info.value), tuple(repr(e) for e in info.value.exceptions)


_RETRY_DUE = ((("flaky", "cancelled", 1), ("broken", "failed", 1)), ("ValueError('broken')",))


@pytest.mark.trio_only  # (virtual time: in real time the wait and the failure never end together)
async def test_issue9_item1_a_retry_due_at_the_failure_does_not_begin() -> None:
    for _ in range(20):
        assert await _retry_due_outcome() == _RETRY_DUE


def test_issue9_item1_check_deterministic_passes_on_a_retry_due_at_the_failure() -> None:
    assert check_deterministic(_retry_due_outcome, runs=25) == _RETRY_DUE


# -- the hand-over of a slot freed while another unit ends at the same instant ----------


async def _handover_timeline() -> Outcome:
    """s0 and s1 end together and free both slots; s0 makes s2 and s3 ready, more
    urgent than s4 (ready from the start): they take the slots, whichever end
    the async library runs first."""
    flow = trioflow.Flow("handover")

    async def sleeper() -> None:
        await anyio.sleep(TICK)

    @flow.step
    async def s0() -> None:
        await sleeper()

    @flow.step
    async def s1() -> None:
        await sleeper()

    @flow.step
    async def s2(s0: None) -> None:
        await sleeper()

    @flow.step
    async def s3(s0: None) -> None:
        await sleeper()

    @flow.step
    async def s4() -> None:
        await sleeper()

    result = await flow.run(max_concurrent=2)
    return tuple((name, step.started_at) for name, step in result.steps.items())


def test_issue9_item1_check_deterministic_passes_on_a_slot_freed_as_another_unit_ends() -> None:
    assert check_deterministic(_handover_timeline, runs=40) == (
        ("s0", 0.0),
        ("s1", 0.0),
        ("s2", TICK),
        ("s3", TICK),
        ("s4", 2 * TICK),
    )


# -- trioflow.map -------------------------------------------------------------------------


async def test_issue9_item1_map_fail_fast_cancels_the_others_when_the_first_item_fails() -> None:
    # item 0 is the call map() makes to check that the function returns an
    # awaitable; its failure must stop the call as any other item's does
    async def item(x: int) -> int:
        if x == 0:
            await anyio.sleep(TICK)
            raise ValueError(x)
        await anyio.sleep(100 * TICK)
        return x

    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.map(item, [0, 1, 2])
    steps = info.value.result.steps
    assert [(name, s.status.value) for name, s in steps.items()] == [
        ("item[0]", "failed"),
        ("item[1]", "cancelled"),
        ("item[2]", "cancelled"),
    ]
    if on_trio():  # virtual time
        assert info.value.result.duration == TICK


async def _map_slot_freed_outcome() -> Outcome:
    async def item(x: int) -> int:
        await anyio.sleep(TICK)
        if x == 1:
            raise ValueError(x)
        return x

    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.map(item, [0, 1, 2, 3], max_concurrent=2)
    return tuple((name, s.status.value, s.attempts) for name, s in info.value.result.steps.items())


_MAP_SLOT_FREED = (
    ("item[0]", "succeeded", 1),
    ("item[1]", "failed", 1),
    ("item[2]", "cancelled", 1),
    ("item[3]", "cancelled", 1),
)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_issue9_item1_check_deterministic_passes_on_a_map_whose_slot_frees_at_the_failure(backend: str) -> None:
    # trioflow.map keeps a flow's rule: the items due at the instant of the first
    # failure (items 2 and 3, whose workers free then) begin, then the
    # cancellation lands, whichever of the instant's events runs first, also
    # when the harness hands a freed worker its next item at once
    assert check_deterministic(_map_slot_freed_outcome, runs=40, backend=backend) == _MAP_SLOT_FREED


def test_issue9_item1_a_map_whose_slot_frees_at_the_failure_gives_the_same_under_plain_trio() -> None:
    # what the harness certifies is what plain trio.run gives, in every order
    # its shuffle of each batch runs the instant's events in
    clock = trio.testing.MockClock
    seen = {trio.run(_map_slot_freed_outcome, clock=clock(autojump_threshold=0)) for _ in range(40)}
    assert seen == {_MAP_SLOT_FREED}
