"""A corpus of small async programs with known interleaving bugs, each with a fixed twin.

Every ``Case`` pairs a buggy program with its fixed twin: two async functions
of no arguments that return a value. Under some schedule the buggy one returns
a different value than under FIFO, raises, or deadlocks; the fixed one gives
the same value under every schedule. ``tests/test_testing_corpus.py`` checks
that :func:`trioflow.testing.check_deterministic` with its default strategy
finds every bug within 1000 schedules, never flags a twin, and that every
failing schedule replays exactly; ``fuzz/test_corpus.py`` does the same with
more seeds and runs.

The shapes follow SCTBench's and the PCT paper's benchmarks and real-world
async bugs: lost updates, check-then-act, order violations, lock-order and
lost-wakeup deadlocks (an event, a condition's notify), nested limiter exhaustion, depth-2 and depth-3 bugs,
long runs of one task held back, a specific task of ten going last,
channel-close races, cancellation between two awaits, timeouts at the same
virtual instant, thread races, and flow bugs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.lowlevel

import trioflow
from trioflow.testing import (
    DeadlockError,
    NonDeterminismError,
    check_deterministic,
    failing_schedule,
    run_deterministic,
)

Program = Callable[[], Awaitable[Any]]


@attrs.frozen
class Case:
    name: str
    kind: str
    bug: Program
    fixed: Program


CASES: list[Case] = []


def outcome_of(program: Program, schedule: tuple[int, ...]) -> tuple[str, str]:
    """What one replay gives: its value, or its exception's type and first line."""
    try:
        return ("value", repr(run_deterministic(program, schedule=schedule).value))
    except Exception as exc:
        return (type(exc).__name__, str(exc).split("\n")[0])


def found_and_replayed(program: Program, seed: int = 0, runs: int = 1000) -> tuple[Exception, tuple[str, str]]:
    """Find *program*'s bug with ``check_deterministic`` (default strategy) and check
    that the failing schedule, not the FIFO run, gives it, 10 replays out of 10.
    Returns the error and what the replays give (see :func:`outcome_of`)."""
    try:
        check_deterministic(program, runs=runs, seed=seed)
    except (NonDeterminismError, DeadlockError) as exc:
        error: Exception = exc
    else:
        raise AssertionError(f"the bug was not found in {runs} runs (seed {seed})")
    replay = failing_schedule(error)
    assert replay is not None
    assert replay.run >= 1, "found by the FIFO run: the program is not schedule-dependent"
    first = outcome_of(program, replay.schedule)
    assert first != outcome_of(program, ())
    for _ in range(9):
        assert outcome_of(program, replay.schedule) == first
    return error, first


def registrar(cases: list[Case]) -> Callable[[str, str], Callable[[type[Any]], type[Any]]]:
    """A corpus's ``@case(name, kind)``: it adds a class with async static methods
    ``bug`` and ``fixed`` to *cases* (each corpus module has its own list)."""

    def case(name: str, kind: str) -> Callable[[type[Any]], type[Any]]:
        def register(cls: type[Any]) -> type[Any]:
            cases.append(Case(name, kind, cls.bug, cls.fixed))
            return cls

        return register

    return case


case = registrar(CASES)


async def checkpoints(n: int) -> None:
    for _ in range(n):
        await trio.lowlevel.checkpoint()


# -- data races -----------------------------------------------------------------------


@case("lost_update", "data race")
class LostUpdate:
    """Two tasks read a counter, yield, and write it back plus one."""

    @staticmethod
    async def bug() -> int:
        state = {"n": 0}

        async def inc() -> None:
            value = state["n"]
            await trio.lowlevel.checkpoint()
            state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(inc)
            nursery.start_soon(inc)
        return state["n"]

    @staticmethod
    async def fixed() -> int:
        state = {"n": 0}
        lock = trio.Lock()

        async def inc() -> None:
            async with lock:
                value = state["n"]
                await trio.lowlevel.checkpoint()
                state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(inc)
            nursery.start_soon(inc)
        return state["n"]


@case("check_then_act", "data race")
class CheckThenAct:
    """Two callers find a cache key missing and both fetch it (fetched twice)."""

    @staticmethod
    async def bug() -> int:
        cache: dict[str, int] = {}
        fetches = [0]

        async def get(key: str) -> int:
            await trio.lowlevel.checkpoint()
            if key not in cache:
                fetches[0] += 1
                await checkpoints(2)  # the fetch
                cache[key] = 42
            return cache[key]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, "k")
            await checkpoints(4)
            nursery.start_soon(get, "k")
        return fetches[0]

    @staticmethod
    async def fixed() -> int:
        cache: dict[str, int] = {}
        fetches = [0]
        lock = trio.Lock()

        async def get(key: str) -> int:
            await trio.lowlevel.checkpoint()
            async with lock:
                if key not in cache:
                    fetches[0] += 1
                    await checkpoints(2)
                    cache[key] = 42
            return cache[key]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, "k")
            await checkpoints(4)
            nursery.start_soon(get, "k")
        return fetches[0]


@case("order_violation", "order violation")
class OrderViolation:
    """A user of a connection assumes its opener ran first."""

    @staticmethod
    async def bug() -> str:
        state: dict[str, str] = {}

        async def opener() -> None:
            await trio.lowlevel.checkpoint()
            state["conn"] = "open"

        async def user() -> None:
            await checkpoints(2)
            state["used"] = state["conn"]  # KeyError if the opener has not run

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            nursery.start_soon(user)
        return state["used"]

    @staticmethod
    async def fixed() -> str:
        state: dict[str, str] = {}
        opened = trio.Event()

        async def opener() -> None:
            await trio.lowlevel.checkpoint()
            state["conn"] = "open"
            opened.set()

        async def user() -> None:
            await checkpoints(2)
            await opened.wait()
            state["used"] = state["conn"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            nursery.start_soon(user)
        return state["used"]


# -- deadlocks ------------------------------------------------------------------------


async def _heartbeat() -> None:
    """A periodic task that keeps the run busy (so a deadlock is only a partial one)."""
    beats = 0
    while True:
        await trio.sleep(1)
        beats += 1


@case("lock_order_deadlock", "deadlock (partial)")
class LockOrder:
    """Two tasks take two locks in opposite orders, beside a heartbeat task."""

    @staticmethod
    async def bug() -> str:
        first, second = trio.Lock(), trio.Lock()

        async def forward() -> None:
            async with first:
                await checkpoints(2)
                async with second:
                    pass

        async def backward() -> None:
            await checkpoints(5)
            async with second:
                await checkpoints(2)
                async with first:
                    pass

        async with trio.open_nursery() as outer:
            outer.start_soon(_heartbeat)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                nursery.start_soon(backward)
            outer.cancel_scope.cancel()
        return "done"

    @staticmethod
    async def fixed() -> str:
        first, second = trio.Lock(), trio.Lock()

        async def forward() -> None:
            async with first:
                await checkpoints(2)
                async with second:
                    pass

        async def backward() -> None:
            await checkpoints(5)
            async with first:
                await checkpoints(2)
                async with second:
                    pass

        async with trio.open_nursery() as outer:
            outer.start_soon(_heartbeat)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                nursery.start_soon(backward)
            outer.cancel_scope.cancel()
        return "done"


@case("lost_wakeup", "deadlock")
class LostWakeup:
    """A waiter checks a flag, yields, then waits for an event the notifier already set."""

    @staticmethod
    async def bug() -> str:
        state: dict[str, Any] = {"ready": False, "event": trio.Event()}

        async def notifier() -> None:
            await checkpoints(4)
            state["ready"] = True
            state["event"].set()

        async def waiter() -> None:
            await trio.lowlevel.checkpoint()
            if not state["ready"]:
                await trio.lowlevel.checkpoint()
                state["event"] = trio.Event()  # "reset" it before waiting: the set is lost
                await state["event"].wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier)
            nursery.start_soon(waiter)
        return "woken"

    @staticmethod
    async def fixed() -> str:
        state: dict[str, Any] = {"ready": False, "event": trio.Event()}

        async def notifier() -> None:
            await checkpoints(4)
            state["ready"] = True
            state["event"].set()

        async def waiter() -> None:
            await trio.lowlevel.checkpoint()
            if not state["ready"]:
                await trio.lowlevel.checkpoint()
                await state["event"].wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier)
            nursery.start_soon(waiter)
        return "woken"


@case("condition_lost_wakeup", "deadlock")
class ConditionLostWakeup:
    """A consumer looks for an item without holding the condition's lock, then waits
    for a notify; the producer's notify in between wakes nobody (issue 10)."""

    @staticmethod
    async def bug() -> str:
        condition = trio.Condition()
        items: list[str] = []
        got: list[str] = []

        async def consumer() -> None:
            await trio.lowlevel.checkpoint()
            if not items:  # looked at without the lock ...
                await trio.lowlevel.checkpoint()
                async with condition:
                    await condition.wait()  # ... so a notify since then is lost
            got.append(items.pop())

        async def producer() -> None:
            await checkpoints(3)
            async with condition:
                items.append("item")
                condition.notify()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            nursery.start_soon(producer)
        return got[0]

    @staticmethod
    async def fixed() -> str:
        condition = trio.Condition()
        items: list[str] = []
        got: list[str] = []

        async def consumer() -> None:
            await trio.lowlevel.checkpoint()
            async with condition:
                while not items:  # the predicate, under the lock, in a loop
                    await condition.wait()
                got.append(items.pop())

        async def producer() -> None:
            await checkpoints(3)
            async with condition:
                items.append("item")
                condition.notify()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            nursery.start_soon(producer)
        return got[0]


@case("nested_limiter", "deadlock")
class NestedLimiter:
    """Workers hold a slot of a limiter of 2 while a child task of theirs needs another."""

    @staticmethod
    async def bug() -> int:
        limiter = trio.CapacityLimiter(2)
        done = [0]

        async def inner() -> None:
            async with limiter:
                done[0] += 1

        async def worker(delay: int) -> None:
            await checkpoints(delay)
            async with limiter:
                await trio.lowlevel.checkpoint()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(inner)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 5)
        return done[0]

    @staticmethod
    async def fixed() -> int:
        limiter = trio.CapacityLimiter(2)
        done = [0]

        async def inner() -> None:
            done[0] += 1  # runs on its parent's slot

        async def worker(delay: int) -> None:
            await checkpoints(delay)
            async with limiter:
                await trio.lowlevel.checkpoint()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(inner)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 5)
        return done[0]


# -- deep and long bugs ---------------------------------------------------------------


@case("depth2_atomicity", "depth 2")
class Depth2:
    """A user checks a resource, yields twice, then uses it; a closer may run in between."""

    @staticmethod
    async def bug() -> str:
        state: dict[str, Any] = {"res": "resource"}

        async def closer() -> None:
            await checkpoints(6)
            state["res"] = None

        async def user() -> str:
            await trio.lowlevel.checkpoint()
            if state["res"] is not None:
                await checkpoints(2)
                return str(state["res"]).upper()  # "NONE" if closed in between
            return "closed"

        results: list[str] = []

        async def run_user() -> None:
            results.append(await user())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(closer)
            nursery.start_soon(run_user)
        return results[0]

    @staticmethod
    async def fixed() -> str:
        state: dict[str, Any] = {"res": "resource"}
        lock = trio.Lock()

        async def closer() -> None:
            await checkpoints(6)
            async with lock:
                state["res"] = None

        async def user() -> str:
            await trio.lowlevel.checkpoint()
            async with lock:
                if state["res"] is not None:
                    await checkpoints(2)
                    return str(state["res"]).upper()
            return "closed"

        results: list[str] = []

        async def run_user() -> None:
            results.append("RESOURCE" if await user() in ("RESOURCE", "closed") else "?")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(closer)
            nursery.start_soon(run_user)
        return results[0]


@case("depth3_window", "depth 3")
class Depth3:
    """Three events of two other tasks must fall inside a 12-step window of a first one."""

    @staticmethod
    async def bug() -> bool:
        log: list[str] = []

        async def first() -> None:
            await checkpoints(2)
            log.append("a1")
            await checkpoints(10)
            log.append("a2")

        async def second() -> None:
            await checkpoints(14)
            log.append("b")

        async def third() -> None:
            await checkpoints(16)
            log.append("c")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
            nursery.start_soon(third)
        # the bug shows only if b and then c happen between a1 and a2
        return log != ["a1", "b", "c", "a2"]

    @staticmethod
    async def fixed() -> bool:
        log: list[str] = []
        a2_done = trio.Event()

        async def first() -> None:
            await checkpoints(2)
            log.append("a1")
            await checkpoints(10)
            log.append("a2")
            a2_done.set()

        async def second() -> None:
            await checkpoints(14)
            await a2_done.wait()
            log.append("b")

        async def third() -> None:
            await checkpoints(16)
            log.append("c")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
            nursery.start_soon(third)
        return log[:2] != ["a1", "b"] and log.index("a2") < log.index("b")


@case("held_back_21", "long hold-back")
class HeldBack:
    """A flag is set one step into a task; another checks it only after 21 steps of its own."""

    @staticmethod
    async def bug() -> bool:
        flag = [False]

        async def setter() -> None:
            await trio.lowlevel.checkpoint()
            flag[0] = True

        async def checker() -> bool:
            await checkpoints(21)
            return flag[0]

        seen: list[bool] = []

        async def run_checker() -> None:
            seen.append(await checker())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(setter)
            nursery.start_soon(run_checker)
        return seen[0]

    @staticmethod
    async def fixed() -> bool:
        flag = [False]
        done = trio.Event()

        async def setter() -> None:
            await trio.lowlevel.checkpoint()
            flag[0] = True
            done.set()

        async def checker() -> bool:
            await checkpoints(21)
            await done.wait()
            return flag[0]

        seen: list[bool] = []

        async def run_checker() -> None:
            seen.append(await checker())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(setter)
            nursery.start_soon(run_checker)
        return seen[0]


@case("last_of_ten", "specific task last")
class LastOfTen:
    """Ten workers; the result is wrong only if worker 0 is the last to finish."""

    @staticmethod
    async def bug() -> bool:
        finished: list[int] = []

        async def worker(i: int) -> None:
            await checkpoints(2)
            finished.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(worker, i)
        return finished[-1] != 0

    @staticmethod
    async def fixed() -> bool:
        finished: list[int] = []
        first = trio.Event()

        async def worker(i: int) -> None:
            await checkpoints(2)
            if i:
                await first.wait()
            finished.append(i)
            if not i:
                first.set()

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(worker, i)
        return finished[-1] != 0


# -- channels, cancellation, time -------------------------------------------------


@case("channel_close_race", "channel close")
class ChannelClose:
    """Producer 0 closes the shared send channel when it is done; producer 1 may still send."""

    @staticmethod
    async def bug() -> list[int]:
        send, receive = trio.open_memory_channel[int](10)
        got: list[int] = []

        async def producer(i: int) -> None:
            await checkpoints(4 - 3 * i)
            await send.send(i)
            if i == 0:
                await send.aclose()

        async def consumer() -> None:
            async for item in receive:
                got.append(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            async with trio.open_nursery() as producers:
                producers.start_soon(producer, 0)
                producers.start_soon(producer, 1)
            await send.aclose()
        return sorted(got)

    @staticmethod
    async def fixed() -> list[int]:
        send, receive = trio.open_memory_channel[int](10)
        got: list[int] = []

        async def producer(i: int, channel: trio.MemorySendChannel[int]) -> None:
            async with channel:
                await checkpoints(4 - 3 * i)
                await channel.send(i)

        async def consumer() -> None:
            async for item in receive:
                got.append(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            async with send:
                nursery.start_soon(producer, 0, send.clone())
                nursery.start_soon(producer, 1, send.clone())
        return sorted(got)


@case("cancel_between_awaits", "cancellation")
class CancelBetween:
    """A transfer debits, awaits, then credits; a cancellation in between loses money."""

    @staticmethod
    async def bug() -> int:
        accounts = {"a": 100, "b": 0}
        scope = trio.CancelScope()

        async def transfer() -> None:
            with scope:
                await trio.lowlevel.checkpoint()
                accounts["a"] -= 50
                await trio.lowlevel.checkpoint()
                accounts["b"] += 50

        async def canceller() -> None:
            await checkpoints(3)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfer)
            nursery.start_soon(canceller)
        return accounts["a"] + accounts["b"]

    @staticmethod
    async def fixed() -> int:
        accounts = {"a": 100, "b": 0}
        scope = trio.CancelScope()

        async def transfer() -> None:
            with scope:
                await trio.lowlevel.checkpoint()
                with trio.CancelScope(shield=True):
                    accounts["a"] -= 50
                    await trio.lowlevel.checkpoint()
                    accounts["b"] += 50

        async def canceller() -> None:
            await checkpoints(3)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfer)
            nursery.start_soon(canceller)
        return accounts["a"] + accounts["b"]


@case("timeout_same_instant", "timeout")
class SameInstant:
    """A reply due at t=1 and a timeout at t=1: who wins is up to the schedule."""

    @staticmethod
    async def bug() -> str:
        reply: dict[str, str] = {}
        arrived = trio.Event()

        async def server() -> None:
            await trio.sleep(1)
            reply["v"] = "pong"
            arrived.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            with trio.move_on_after(1):
                await arrived.wait()
            return reply.get("v", "timeout")

    @staticmethod
    async def fixed() -> str:
        reply: dict[str, str] = {}
        arrived = trio.Event()

        async def server() -> None:
            await trio.sleep(1)
            reply["v"] = "pong"
            arrived.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            with trio.move_on_after(2):  # a margin: no tie with the reply
                await arrived.wait()
            return reply.get("v", "timeout")


# -- threads ----------------------------------------------------------------------


@case("thread_race", "threads")
class ThreadRace:
    """A worker thread and a task both add one to a counter; the task yields mid-update."""

    @staticmethod
    async def bug() -> int:
        state = {"n": 0}

        def add_in_thread() -> None:
            state["n"] += 1

        async def add_in_task() -> None:
            value = state["n"]
            await trio.lowlevel.checkpoint()
            state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, add_in_thread)
            nursery.start_soon(add_in_task)
        return state["n"]

    @staticmethod
    async def fixed() -> int:
        state = {"n": 0}
        lock = threading.Lock()

        def add_in_thread() -> None:
            with lock:
                state["n"] += 1

        async def add_in_task() -> None:
            await trio.lowlevel.checkpoint()
            with lock:
                state["n"] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, add_in_thread)
            nursery.start_soon(add_in_task)
        return state["n"]


@case("thread_thread_race", "threads")
class ThreadThreadRace:
    """Two worker threads read a counter, pause, and write it back plus one."""

    @staticmethod
    async def bug() -> int:
        state = {"n": 0}

        def add() -> None:
            value = state["n"]
            time.sleep(0.01)  # a window wide enough to overlap on a busy machine
            state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, add)
            nursery.start_soon(trio.to_thread.run_sync, add)
        return state["n"]

    @staticmethod
    async def fixed() -> int:
        state = {"n": 0}
        lock = threading.Lock()

        def add() -> None:
            with lock:
                value = state["n"]
                time.sleep(0.01)  # a window wide enough to overlap on a busy machine
                state["n"] = value + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, add)
            nursery.start_soon(trio.to_thread.run_sync, add)
        return state["n"]


# -- flows ------------------------------------------------------------------------


def _handover_flow(inline_release: bool) -> Program:
    async def main() -> int:
        state = {"busy": False, "clashes": 0}
        flow = trioflow.Flow("handover")

        async with trio.open_nursery() as background:

            async def release() -> None:
                state["busy"] = False

            def make(name: str) -> Any:
                async def step() -> str:
                    if state["busy"]:
                        state["clashes"] += 1
                    state["busy"] = True
                    await trio.sleep(1)
                    if inline_release:
                        state["busy"] = False
                    else:
                        background.start_soon(release)  # released a moment later
                    return name

                step.__name__ = name
                return step

            # a, then b (a contended hand-over: z waits too), then z
            flow.add(make("a"), cost=3)
            flow.add(make("b"), cost=2)

            @flow.step(cost=1)
            async def z() -> None:  # does not use the resource
                await trio.sleep(1)

            await flow.run(max_concurrent=1)
        return state["clashes"]

    return main


@case("flow_slot_handover", "flow")
class FlowHandover:
    """A step releases a shared resource from a background task: the next step,
    started the moment the slot is freed, still finds it busy."""

    bug = staticmethod(_handover_flow(False))
    fixed = staticmethod(_handover_flow(True))


def _accumulate_flow(shared: bool) -> Program:
    async def main() -> int:
        totals = {"sum": 0}
        flow = trioflow.Flow("accumulate")

        def make(name: str, n: int) -> Any:
            async def step() -> int:
                await trio.sleep(n % 2)
                if shared:
                    seen = totals["sum"]
                    await trio.lowlevel.checkpoint()
                    totals["sum"] = seen + n
                return n

            step.__name__ = name
            return step

        for i, n in enumerate((3, 5, 7)):
            flow.add(make(f"add{i}", n))

        @flow.step
        async def total(add0: int, add1: int, add2: int) -> int:
            return add0 + add1 + add2

        result = await flow.run()
        return totals["sum"] if shared else result["total"]

    return main


@case("flow_shared_accumulator", "flow")
class FlowAccumulator:
    """Steps add to a shared total across an await (a lost update between steps)."""

    bug = staticmethod(_accumulate_flow(True))
    fixed = staticmethod(_accumulate_flow(False))
