"""Rate limits (token buckets) and keyed limiters (issue 13 items 1 and 2).

Exact start times on trio in virtual time (``MockClock(autojump_threshold=0)``);
the rules that do not need a clock (limits never exceeded, results) on trio and
asyncio.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, GraphError, KeyedLimiter, RateLimit, Retry, StepStatus


def _starts(result: trioflow.RunResult) -> list[float | None]:
    return [s.started_at for s in result.steps.values()]


def _returns(i: int) -> Any:
    async def step() -> int:
        return i

    return step


def _zero_steps(flow: Flow, n: int, **options: Any) -> None:
    for i in range(n):
        flow.add(_returns(i), name=f"s{i}", **options)


# -- the token bucket ---------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    ("burst", "expected"),
    [(None, [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]), (1, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])],
)
async def test_six_zero_duration_steps_start_as_the_bucket_allows(
    autojump_clock: trio.testing.MockClock, burst: int | None, expected: list[float]
) -> None:
    flow = Flow("rate")
    _zero_steps(flow, 6, limiter="api")
    result = await flow.run(limiters={"api": RateLimit(calls=2, per=1.0, burst=burst)})
    assert sorted(_starts(result)) == expected  # type: ignore[type-var]
    assert _starts(result) == expected  # equal priority: declaration order
    assert result.duration == expected[-1]


@pytest.mark.trio
async def test_the_bucket_refills_continuously_up_to_burst(autojump_clock: trio.testing.MockClock) -> None:
    limit = RateLimit(calls=2, per=1.0, burst=3)
    flow = Flow("rate")
    _zero_steps(flow, 4, limiter="api")
    first = await flow.run(limiters={"api": limit})
    assert _starts(first) == [0.0, 0.0, 0.0, 0.5]
    await trio.sleep(1.0)  # at 1.5: tat was 2.0, so 2 tokens came back (1 per 0.5 s, from 0.5)
    second = await flow.run(limiters={"api": limit})
    assert _starts(second) == [1.5, 1.5, 2.0, 2.5]
    await trio.sleep(100.0)  # refills up to burst=3, no more
    third = await flow.run(limiters={"api": limit})
    assert [t - 102.5 for t in _starts(third)] == [0.0, 0.0, 0.0, 0.5]  # type: ignore[operator]


@pytest.mark.trio
async def test_waiters_get_tokens_in_priority_order(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("prio")
    # declared first but with the shortest remaining path
    _zero_steps(flow, 2, limiter="api")

    @flow.step(limiter="api", cost=5.0)
    async def long_path() -> int:
        return 1

    @flow.step(cost=5.0)
    async def tail(long_path: int) -> int:
        await trio.sleep(1)
        return long_path

    result = await flow.run(limiters={"api": RateLimit(calls=1, per=1.0)})
    starts = {n: s.started_at for n, s in result.steps.items()}
    assert starts == {"long_path": 0.0, "s0": 1.0, "s1": 2.0, "tail": 0.0}


@pytest.mark.trio
async def test_a_step_waiting_for_a_token_holds_no_capacity_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("slots")
    _zero_steps(flow, 3, limiter="api", cost=10.0)

    @flow.step
    async def free() -> str:
        await trio.sleep(1)
        return "free"

    result = await flow.run(max_concurrent=1, limiters={"api": RateLimit(calls=1, per=10.0)})
    starts = {n: s.started_at for n, s in result.steps.items()}
    # s1 and s2 wait for tokens at 10 and 20 without holding the only slot: `free` runs at 0
    assert starts == {"s0": 0.0, "s1": 10.0, "s2": 20.0, "free": 0.0}


@pytest.mark.trio
async def test_every_attempt_takes_a_token(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("retry")
    starts: list[float] = []

    @flow.step(limiter="api", retry=Retry(max_attempts=3))
    async def flaky() -> str:
        starts.append(trio.current_time())
        if len(starts) < 3:
            raise ConnectionError
        return "ok"

    result = await flow.run(limiters={"api": RateLimit(calls=1, per=2.0)})
    assert result["flaky"] == "ok"
    assert starts == [0.0, 2.0, 4.0]


@pytest.mark.trio
async def test_rate_limit_with_a_capacity_limit_on_the_same_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("both")
    for i in range(4):

        async def step() -> None:
            await trio.sleep(3)

        flow.add(step, name=f"s{i}", limiter=["api", "slots"])
    result = await flow.run(limiters={"api": RateLimit(calls=4, per=1.0), "slots": 2})
    assert _starts(result) == [0.0, 0.0, 3.0, 3.0]


@pytest.mark.trio
async def test_one_object_is_one_bucket_across_runs(autojump_clock: trio.testing.MockClock) -> None:
    limit = RateLimit(calls=1, per=1.0)
    flow = Flow("shared")
    _zero_steps(flow, 2, limiter="api")
    results: list[trioflow.RunResult] = []

    async def run() -> None:
        results.append(await flow.run(limiters={"api": limit}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(run)
    assert sorted(t for r in results for t in _starts(r)) == [0.0, 1.0, 2.0, 3.0]  # type: ignore[misc]
    # and with trioflow.map and gather
    times: list[float] = []

    async def hit(i: int) -> int:
        times.append(trio.current_time())
        return i

    assert await trioflow.map(hit, range(3), limiter=limit) == [0, 1, 2]
    assert times == [4.0, 5.0, 6.0]
    times.clear()
    out = await trioflow.gather(functools.partial(hit, 0), functools.partial(hit, 1), limiter=limit)
    assert (out, times) == ([0, 1], [7.0, 8.0])


@pytest.mark.trio
async def test_map_and_gather_take_a_capacity_limiter(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(i: int) -> int:
        await trio.sleep(1)
        return i

    limiter = trio.CapacityLimiter(2)
    start = trio.current_time()
    assert await trioflow.map(slow, range(5), limiter=limiter) == list(range(5))
    assert trio.current_time() - start == 3.0
    start = trio.current_time()
    await trioflow.gather(*[functools.partial(slow, i) for i in range(4)], limiter=limiter)
    assert trio.current_time() - start == 2.0


@pytest.mark.trio
async def test_map_retries_take_tokens(autojump_clock: trio.testing.MockClock) -> None:
    tries: dict[int, list[float]] = {0: [], 1: []}

    async def flaky(i: int) -> int:
        tries[i].append(trio.current_time())
        if len(tries[i]) == 1:
            raise ConnectionError
        return i

    await trioflow.map(flaky, [0, 1], limiter=RateLimit(calls=1, per=1.0), retry=Retry(max_attempts=2))
    assert sorted(tries[0] + tries[1]) == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.anyio
async def test_rate_limits_work_on_both_backends(anyio_backend: Any) -> None:
    flow = Flow("both")
    _zero_steps(flow, 5, limiter="api")
    result = await flow.run(limiters={"api": RateLimit(calls=1000, per=0.01)})
    assert result.outputs == {f"s{i}": i for i in range(5)}


@pytest.mark.anyio
async def test_outside_cancellation_while_waiting_for_tokens_leaves_no_waiter(anyio_backend: Any) -> None:
    limit = RateLimit(calls=1, per=1000.0)
    flow = Flow("cancel")
    _zero_steps(flow, 3, limiter="api")
    with anyio.move_on_after(1.0) as scope:
        await flow.run(limiters={"api": limit})
    assert scope.cancelled_caught
    line = limit._line(None, trioflow._waiting.current_domain())
    assert not [w for w in line.heap if w.alive]


def test_bad_rate_limits_are_graph_errors() -> None:
    for kwargs, message in [
        ({"calls": 0}, "RateLimit(calls=...) must be a finite number > 0 (got 0)"),
        ({"calls": 1, "per": -1.0}, "RateLimit(per=...) must be a finite number > 0 (got -1.0)"),
        ({"calls": 1, "burst": 0}, "RateLimit(burst=0) must be at least 1 (the bucket's capacity)"),
        ({"calls": math.nan}, "RateLimit(calls=...) must be a finite number > 0 (got nan)"),
        ({"per_key": 0}, "KeyedLimiter(per_key=0) must be at least 1"),
    ]:
        cls = KeyedLimiter if "per_key" in kwargs else RateLimit
        with pytest.raises(GraphError, match="^" + re.escape(message) + "$"):
            cls(**kwargs)
    assert repr(RateLimit(calls=500, per=60.0)) == "RateLimit(calls=500, per=60, burst=500)"


# -- keyed limits ---------------------------------------------------------------------------


class Peak:
    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def visit(self, key: str, seconds: float) -> None:
        self.now[key] = self.now.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.now[key])
        try:
            await anyio.sleep(seconds)
        finally:
            self.now[key] -= 1


URLS = [f"https://{host}/{i}" for i in range(6) for host in ("a.com", "b.com", "c.com")]


@pytest.mark.anyio
async def test_at_most_per_key_attempts_with_one_key_run_at_once(anyio_backend: Any) -> None:
    peak = Peak()
    flow = Flow("hosts")

    @flow.step(map_over="urls", limiter="host", limit_key=lambda urls: urlsplit(urls).netloc)
    async def fetch(urls: str) -> str:
        await peak.visit(urlsplit(urls).netloc, 1.0 if anyio_backend[0] == "trio" else 0.001)
        return urls.upper()

    limiter = KeyedLimiter(per_key=2)
    result = await flow.run({"urls": URLS}, limiters={"host": limiter})
    assert result["fetch"] == [u.upper() for u in URLS]
    assert peak.peak == {"a.com": 2, "b.com": 2, "c.com": 2}
    assert limiter.in_use("a.com") == 0


@pytest.mark.trio
async def test_keys_are_independent_and_timing_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("hosts")

    @flow.step(map_over="urls", limiter="host", limit_key=lambda urls: urlsplit(urls).netloc)
    async def fetch(urls: str) -> float:
        start = trio.current_time()
        await trio.sleep(1)
        return start

    result = await flow.run({"urls": URLS}, limiters={"host": KeyedLimiter(per_key=2)})
    # 6 urls per host, 2 at a time: each host takes 3 s, all hosts at once
    assert sorted(result["fetch"]) == [0.0] * 6 + [1.0] * 6 + [2.0] * 6
    assert result.duration == 3.0


@pytest.mark.trio
async def test_keyed_rate_limit_has_one_bucket_per_key(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("keyed")

    @flow.step(map_over="urls", limiter="rate", limit_key=lambda urls: urlsplit(urls).netloc)
    async def fetch(urls: str) -> tuple[str, float]:
        return urlsplit(urls).netloc, trio.current_time()

    urls = [f"https://{h}/{i}" for h in ("a", "b") for i in range(3)]
    result = await flow.run({"urls": urls}, limiters={"rate": RateLimit(calls=1, per=1.0, keyed=True)})
    assert result["fetch"] == [("a", 0.0), ("a", 1.0), ("a", 2.0), ("b", 0.0), ("b", 1.0), ("b", 2.0)]


@pytest.mark.trio
async def test_a_keyed_limiter_is_shared_by_steps_and_runs(autojump_clock: trio.testing.MockClock) -> None:
    peak = Peak()
    limiter = KeyedLimiter(per_key=1)
    flow = Flow("shared")
    for name in ("x", "y"):

        async def hit(host: str) -> None:
            await peak.visit(host, 1.0)

        flow.add(hit, name=name, limiter="host", limit_key=lambda host: host)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(functools.partial(flow.run, {"host": "h"}, limiters={"host": limiter}))
    assert peak.peak == {"h": 1}
    assert trio.current_time() == 4.0


@pytest.mark.anyio
async def test_keyed_limiter_errors(anyio_backend: Any) -> None:
    flow = Flow("bad")

    @flow.step(map_over="items", limiter="host")
    async def fetch(items: int) -> int:
        return items

    with pytest.raises(GraphError, match=re.escape(
        "step 'fetch' uses the keyed limiter 'host' (KeyedLimiter(per_key=2)) but has no limit_key="
    )):
        await flow.run({"items": [1]}, limiters={"host": KeyedLimiter(per_key=2)})
    with pytest.raises(GraphError, match="has no limit_key="):
        await flow.run({"items": [1]}, limiters={"host": RateLimit(calls=1, keyed=True)})

    flow = Flow("unhashable")

    @flow.step(map_over="items", limiter="host", limit_key=lambda items: [items])
    async def fetch2(items: int) -> int:
        return items

    with pytest.raises(FlowError) as info:
        await flow.run({"items": [1, 2]}, limiters={"host": KeyedLimiter(per_key=2)}, error_handling="continue")
    errors = info.value.exceptions
    assert [str(e) for e in errors] == [
        "step 'fetch2[0]': limit_key returned [1], which is not hashable; return a str, an int or a tuple",
        "step 'fetch2[1]': limit_key returned [2], which is not hashable; return a str, an int or a tuple",
    ]
    assert all(isinstance(e, TypeError) for e in errors)
    step = info.value.result.steps["fetch2"]
    assert (step.status, step.attempts) == (StepStatus.FAILED, 1)


@pytest.mark.trio
async def test_fail_fast_gives_back_keyed_slots(autojump_clock: trio.testing.MockClock) -> None:
    limiter = KeyedLimiter(per_key=1)
    flow = Flow("ff")

    @flow.step(limiter="host", limit_key=lambda: "h")
    async def holder() -> None:
        await trio.sleep(10)

    @flow.step
    async def boom() -> None:
        await trio.sleep(1)
        raise RuntimeError("boom")

    with pytest.raises(FlowError):
        await flow.run(limiters={"host": limiter})
    assert limiter.in_use("h") == 0
    ok = Flow("ok")
    ok.add(holder, limiter="host", limit_key=lambda: "h")
    await ok.run(limiters={"host": limiter})


@pytest.mark.anyio
async def test_map_and_gather_reject_keyed_and_unknown_limiters(anyio_backend: Any) -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(GraphError, match=re.escape(
        "trioflow.map(limiter=KeyedLimiter(per_key=1)): a keyed limiter needs a key per call"
    )):
        await trioflow.map(f, [1], limiter=KeyedLimiter(per_key=1))
    with pytest.raises(GraphError, match="a keyed limiter needs a key per call"):
        await trioflow.gather(functools.partial(f, 1), limiter=RateLimit(calls=1, keyed=True))
    with pytest.raises(TypeError, match=re.escape(
        "trioflow.map(limiter=...) takes a CapacityLimiter or a trioflow.RateLimit (got 3 that is a int)"
    )):
        await trioflow.map(f, [1], limiter=3)


@pytest.mark.trio
async def test_a_token_is_taken_as_the_attempt_starts_not_before(autojump_clock: trio.testing.MockClock) -> None:
    # issue 13 item 1: with one slot, `s1` gets the slot at 0.25 and takes its token then;
    # `s2` must wait a full interval after that (0.75), not after 0 (the fuzz found this)
    flow = Flow("spacing")

    @flow.step
    async def s0() -> None:
        await trio.sleep(0.25)

    flow.add(_returns(1), name="s1", limiter="api")
    flow.add(_returns(2), name="s2", limiter="api")
    result = await flow.run(max_concurrent=1, limiters={"api": RateLimit(calls=2, per=1.0, burst=1)})
    assert [result.steps[n].started_at for n in ("s0", "s1", "s2")] == [0.0, 0.25, 0.75]


@pytest.mark.trio
async def test_a_retry_waiting_for_a_token_in_its_slot_cannot_deadlock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("retry-slot")
    tries: list[float] = []

    @flow.step(limiter="api", retry=Retry(max_attempts=2))
    async def flaky() -> None:
        tries.append(trio.current_time())
        if len(tries) == 1:
            raise ConnectionError

    flow.add(_returns(1), name="other", limiter="api")
    with trio.fail_after(100):
        await flow.run(max_concurrent=1, limiters={"api": RateLimit(calls=1, per=1.0)})
    assert tries == [0.0, 1.0]


# -- a keyed slot is held only while the unit runs (issue 13, keyed limits) -----------------


def _key_order_flow(log: list[tuple[str, float]], seconds: float) -> Flow:
    flow = Flow("key-order")

    async def visit(name: str) -> str:
        log.append((name, anyio.current_time()))
        await anyio.sleep(seconds)
        return name

    @flow.step(cost=1.0)
    async def first() -> str:
        return await visit("first")

    @flow.step(limiter="host", limit_key=lambda: "a", cost=1.0)
    async def low() -> str:
        return await visit("low")

    @flow.step(limiter="host", limit_key=lambda first: "a", cost=5.0)
    async def high(first: str) -> str:
        return await visit("high")

    return flow


@pytest.mark.anyio
async def test_a_unit_waiting_for_a_run_slot_holds_no_keyed_slot(anyio_backend: Any) -> None:
    # max_concurrent=1: `first` runs first (longest path); `low` is ready at once but
    # waits for the run slot. When `first` ends, `high` (key "a" too, a longer path)
    # is ready: it must run before `low`, which held no slot of key "a" while it waited
    log: list[tuple[str, float]] = []
    on_trio = anyio_backend[0] == "trio"
    flow = _key_order_flow(log, 1.0 if on_trio else 0.001)
    limiter = KeyedLimiter(per_key=1)
    result = await flow.run(max_concurrent=1, limiters={"host": limiter})
    assert [name for name, _ in log] == ["first", "high", "low"]
    assert result.outputs == {"first": "first", "low": "low", "high": "high"}
    assert limiter.in_use("a") == 0
    if on_trio:
        assert log == [("first", 0.0), ("high", 1.0), ("low", 2.0)]


@pytest.mark.anyio
async def test_a_keyed_slot_is_free_for_another_run_while_a_unit_waits_for_its_run_slot(
    anyio_backend: Any,
) -> None:
    # run A (max_concurrent=1) is busy with `busy`; its `keyed` waits for the run
    # slot and holds no slot of key "h", so run B's step with that key runs at once
    on_trio = anyio_backend[0] == "trio"
    unit = 1.0 if on_trio else 0.001
    limiter = KeyedLimiter(per_key=1)
    starts: dict[str, float] = {}
    peak = Peak()
    a = Flow("a")

    @a.step(cost=10.0)
    async def busy() -> None:
        starts["busy"] = anyio.current_time()
        await anyio.sleep(5 * unit)

    @a.step(limiter="host", limit_key=lambda: "h")
    async def keyed() -> None:
        starts["keyed"] = anyio.current_time()
        await peak.visit("h", unit)

    b = Flow("b")

    @b.step(limiter="host", limit_key=lambda: "h")
    async def other() -> None:
        starts["other"] = anyio.current_time()
        await peak.visit("h", unit)

    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(a.run, max_concurrent=1, limiters={"host": limiter}))
        await anyio.lowlevel.checkpoint()  # run A has queued its steps
        tg.start_soon(functools.partial(b.run, limiters={"host": limiter}))
    assert peak.peak == {"h": 1}
    assert starts["other"] < starts["keyed"]
    assert limiter.in_use("h") == 0
    if on_trio:
        assert {k: v - t0 for k, v in starts.items()} == {"busy": 0.0, "other": 0.0, "keyed": 5.0}


@pytest.mark.trio
async def test_per_key_one_under_max_concurrent_one_runs_in_priority_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # six items over two keys, one slot per key and one run slot: the items run one
    # after the other, in item order (the priority order), with no gap
    flow = Flow("serial")

    @flow.step(map_over="items", limiter="host", limit_key=lambda items: items[0])
    async def fetch(items: str) -> float:
        start = trio.current_time()
        await trio.sleep(1)
        return start

    items = ["a0", "a1", "b0", "a2", "b1", "b2"]
    result = await flow.run({"items": items}, max_concurrent=1, limiters={"host": KeyedLimiter(per_key=1)})
    assert result["fetch"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.anyio
async def test_limit_key_and_the_first_attempt_get_the_same_copies(anyio_backend: Any) -> None:
    # the step's arguments are copied once for limit_key and the first attempt;
    # a retry gets fresh copies
    seen: list[dict[str, int]] = []
    attempts: list[dict[str, int]] = []
    flow = Flow("copies")

    def key(config: dict[str, int]) -> int:
        seen.append(config)
        return config["host"]

    @flow.step(limiter="host", limit_key=key, retry=Retry(max_attempts=2))
    async def call(config: dict[str, int]) -> int:
        attempts.append(config)
        if len(attempts) == 1:
            raise ConnectionError
        return config["host"]

    result = await flow.run({"config": {"host": 1}}, limiters={"host": KeyedLimiter(per_key=1)})
    assert result["call"] == 1
    assert len(seen) == 1
    assert seen[0] is attempts[0]
    assert attempts[1] is not attempts[0]


@pytest.mark.anyio
async def test_outside_cancellation_gives_back_the_keyed_slots_of_many_units(anyio_backend: Any) -> None:
    # 3000 items on 3000 keys; those with odd indexes end at once, the others are
    # still running (each holding its key's slot) when the run is cancelled
    limiter = KeyedLimiter(per_key=1)
    flow = Flow("many")

    @flow.step(map_over="items", limiter="host", limit_key=lambda items: items)
    async def hold(items: int) -> int:
        if items % 2 == 0:
            await anyio.sleep_forever()
        return items

    with anyio.move_on_after(1.0) as scope:
        await flow.run({"items": list(range(3000))}, limiters={"host": limiter})
    assert scope.cancelled_caught
    assert [k for k in range(3000) if limiter.in_use(k)] == []


@pytest.mark.trio
async def test_one_limiter_named_twice_by_a_step_counts_once(autojump_clock: trio.testing.MockClock) -> None:
    host = KeyedLimiter(per_key=1)
    rate = RateLimit(calls=1, per=1.0)
    flow = Flow("twice")
    for i in range(2):
        flow.add(_returns(i), name=f"s{i}", limiter=["host", "same", "rate", "again"], limit_key=lambda: "h")
    with trio.fail_after(100):
        result = await flow.run(limiters={"host": host, "same": host, "rate": rate, "again": rate})
    assert _starts(result) == [0.0, 1.0]  # one token each, not two
    assert host.in_use("h") == 0


@pytest.mark.anyio
async def test_a_unit_waiting_for_a_named_limiter_holds_no_keyed_slot(anyio_backend: Any) -> None:
    # `a` waits for the "slots" limiter (held by `busy`) without holding key "h", so
    # `b`, which needs only key "h", runs at once
    on_trio = anyio_backend[0] == "trio"
    unit = 1.0 if on_trio else 0.001
    starts: dict[str, float] = {}
    flow = Flow("named")

    async def visit(name: str, seconds: float) -> None:
        starts[name] = anyio.current_time()
        await anyio.sleep(seconds * unit)

    @flow.step(limiter="slots", cost=10.0)
    async def busy() -> None:
        await visit("busy", 5)

    @flow.step(limiter=["slots", "host"], limit_key=lambda: "h", cost=5.0)
    async def a() -> None:
        await visit("a", 1)

    @flow.step(limiter="host", limit_key=lambda: "h")
    async def b() -> None:
        await visit("b", 1)

    t0 = anyio.current_time()
    await flow.run(limiters={"slots": 1, "host": KeyedLimiter(per_key=1)})
    assert sorted(starts, key=starts.__getitem__)[-1] == "a"
    assert starts["b"] < starts["a"]
    if on_trio:
        assert {k: v - t0 for k, v in starts.items()} == {"busy": 0.0, "b": 0.0, "a": 5.0}
