"""A third corpus of async programs with interleaving bugs, written apart from the other two.

The first corpus (``tests/harness_corpus.py``) was at hand while the
strategies of :mod:`trioflow.testing` were tuned, and writing the second
(``tests/harness_corpus2.py``) exposed harness problems that were then fixed.
This one was written afterwards, to the issue's list of kinds, in shapes and
with primitives neither of the others uses: ``nursery.start`` and
``task_status.started()`` (a lazily started connection, a server that says it
is ready too soon), :class:`trio.lowlevel.ParkingLot`, a reusable barrier
built on a :class:`trio.Event`, a :class:`trio.CapacityLimiter` in a lock
cycle, :class:`anyio.Semaphore` taken for a lock, anyio memory object streams,
``MemorySendChannel.clone()`` forgotten, a :class:`trio.CancelScope` whose
deadline another task sets, ``anyio.fail_after`` at the reply's instant,
``anyio.to_thread`` and ``trio.from_thread.run`` of an async function, and
:func:`trioflow.gather`, :func:`trioflow.map` and :func:`trioflow.race`,
flows with ``when=``, ``timeout=`` with ``retry=``, and a map step's own
``max_concurrent``. Some bugs need three tasks in one order, one needs a task
to fall behind, catch up and fall behind again over 30 steps, one needs
replica 3 of ten to report last, and several run beside a periodic task.

Each ``Case`` (the first corpus's dataclass) pairs a buggy program with its
fixed twin, async functions of no arguments. The buggy one returns another
value, raises or deadlocks under some schedule, and not under FIFO; the fixed
one gives one value under every schedule. Plain ``trio.run`` shows some of the
bugs by itself (``PLAIN_TRIO`` in ``tests/test_testing_corpus3.py`` checks
them); the others need a task held back longer than one scheduling batch,
which plain trio never does with checkpoints alone but a slower network or
disk does in production. ``tests/test_testing_corpus3.py`` checks
each bug quickly (one seed); ``fuzz/test_corpus.py`` checks all three corpora
over more seeds; ``python fuzz/corpus_table.py 10 harness_corpus3`` prints the
table of ``docs/testing.rst``.
"""

# The programs mix trio.sleep(0), anyio's checkpoint and trio's checkpoint on purpose,
# and the periodic tasks are plain sleep loops.
# ruff: noqa: ASYNC110, ASYNC115

from __future__ import annotations

import functools
import math
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import trio
import trio.lowlevel
from harness_corpus import Case, Program, registrar

import trioflow

CASES: list[Case] = []


case = registrar(CASES)


async def steps(n: int) -> None:
    """``n`` schedule points through anyio (the other corpora use trio's)."""
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


async def _ticker(period: float) -> None:
    """A periodic background task (a metrics push, a keep-alive) running all along."""
    while True:
        await trio.sleep(period)


# -- lost updates and check-then-act ---------------------------------------------------


def _gather_tally(atomic: bool) -> Program:
    async def main() -> tuple[int, list[int]]:
        usage = {"tokens": 0}

        async def tool(n: int) -> int:
            await steps(2 * (n // 10 - 1))  # the tool call
            if atomic:
                usage["tokens"] += n
            else:
                seen = usage["tokens"]
                await anyio.lowlevel.checkpoint()  # parses the reply before recording it
                usage["tokens"] = seen + n
            return n

        results = await trioflow.gather(*(functools.partial(tool, n) for n in (10, 20, 30)))
        return usage["tokens"], results

    return main


@case("gather_usage_tally", "lost update (trioflow.gather calls share a tally)")
class GatherTally:
    """Three tool calls run by :func:`trioflow.gather` add their token counts to a shared tally,
    reading it before an await and writing it after. Staggered, they never overlap under
    FIFO; plain trio reverses batches at random and loses a count."""

    bug = staticmethod(_gather_tally(False))
    fixed = staticmethod(_gather_tally(True))


def _stock(size: int) -> Program:
    async def main() -> int:
        stock = {"left": 5}
        guard = anyio.Semaphore(size)

        async def buyer(i: int) -> None:
            await steps(3 * i)
            async with guard:
                left = stock["left"]
                await anyio.sleep(0)  # reserves the item with the warehouse
                stock["left"] = left - 1

        async with trio.open_nursery() as outer:
            outer.start_soon(_ticker, 0.5)
            async with anyio.create_task_group() as group:
                for i in range(3):
                    group.start_soon(buyer, i)
            outer.cancel_scope.cancel()
        return stock["left"]

    return main


@case("semaphore_of_two_as_lock", "lost update (anyio.Semaphore(2) taken for a lock, beside a ticker)")
class SemaphoreStock:
    """Three buyers decrement a stock count under an ``anyio.Semaphore(2)`` meant as a lock;
    two inside at once lose a sale (fixed: a semaphore of one). A periodic task runs all along."""

    bug = staticmethod(_stock(2))
    fixed = staticmethod(_stock(1))


def _lazy_client(locked: bool) -> Program:
    async def main() -> int:
        connections: list[str] = []
        state: dict[str, Any] = {"client": None}
        lock = trio.Lock()

        async def connect(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            connections.append(f"conn{len(connections)}")
            await trio.sleep(0)  # the handshake
            task_status.started(connections[-1])
            await trio.sleep_forever()  # serves the connection

        async def get_client(services: trio.Nursery) -> str:
            if state["client"] is None:
                state["client"] = await services.start(connect)
            return str(state["client"])

        async def handler(i: int, services: trio.Nursery) -> None:
            await steps(5 * i)
            if locked:
                async with lock:
                    await get_client(services)
            else:
                await get_client(services)

        async with trio.open_nursery() as services:
            async with trio.open_nursery() as handlers:
                handlers.start_soon(handler, 0, services)
                handlers.start_soon(handler, 1, services)
            services.cancel_scope.cancel()
        return len(connections)

    return main


@case("lazy_client_started_twice", "check-then-act (nursery.start of a lazily made client)")
class LazyClient:
    """Two handlers find no client yet and both ``await nursery.start(connect)``: two
    connections. Under FIFO the first has its client before the second looks."""

    bug = staticmethod(_lazy_client(False))
    fixed = staticmethod(_lazy_client(True))


# -- order violations -------------------------------------------------------------------


def _ready_too_soon(routes_first: bool) -> Program:
    async def main() -> str:
        routes: dict[str, str] = {}

        async def server(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep(0)  # binds the socket
            if routes_first:
                routes["/"] = "index"
                task_status.started()
            else:
                task_status.started()  # "ready" ...
                await trio.sleep(0)
                await trio.sleep(0)  # ... loads the templates
                routes["/"] = "index"
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            await nursery.start(server)
            await steps(2)  # the client connects
            page = routes.get("/", "404")
            nursery.cancel_scope.cancel()
        return page

    return main


@case("server_started_before_routes", "order violation (task_status.started() too soon)")
class ReadyTooSoon:
    """A server calls ``task_status.started()`` before registering its routes; the caller of
    ``nursery.start`` requests a page: 404 if the server falls two steps behind."""

    bug = staticmethod(_ready_too_soon(False))
    fixed = staticmethod(_ready_too_soon(True))


def _when_flag(by_dependency: bool) -> Program:
    async def main() -> str:
        flags = {"premium": False}
        flow = trioflow.Flow("signup")

        @flow.step
        async def lookup(user: str) -> str:
            await trio.sleep(0)  # the billing lookup
            flags["premium"] = True
            return "gold"

        @flow.step
        async def validate(user: str) -> bool:
            await steps(4)
            return True

        if by_dependency:

            @flow.step(when=lambda validate, lookup: validate and lookup == "gold")
            async def upgrade(validate: bool) -> str:
                return "upgraded"

        else:

            @flow.step(when=lambda validate: validate and flags["premium"])  # not a dependency
            async def upgrade(validate: bool) -> str:
                return "upgraded"

        result = await flow.run({"user": "ann"})
        return str(result.steps["upgrade"].status)

    return main


@case("flow_when_reads_sibling_flag", "order violation (a flow's when= reads a sibling's flag)")
class WhenFlag:
    """A step's ``when=`` condition reads a flag that a sibling step sets, not a dependency:
    if validation finishes before the lookup, the upgrade is skipped."""

    bug = staticmethod(_when_flag(False))
    fixed = staticmethod(_when_flag(True))


# -- deadlocks ------------------------------------------------------------------------


def _limiter_lock(ordered: bool) -> Program:
    async def main() -> str:
        db = trio.CapacityLimiter(1)  # one database connection
        cache_lock = trio.Lock()

        async def writer() -> None:
            async with db:
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                async with cache_lock:
                    pass

        async def refresher() -> None:
            await steps(6)
            if ordered:
                async with db:
                    await trio.lowlevel.checkpoint()
                    async with cache_lock:
                        await trio.lowlevel.checkpoint()
            else:
                async with cache_lock:
                    await trio.lowlevel.checkpoint()
                    async with db:
                        await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as outer:
            outer.start_soon(_ticker, 0.1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(refresher)
            outer.cancel_scope.cancel()
        return "done"

    return main


@case("limiter_lock_cycle", "lock-order deadlock (a CapacityLimiter and a Lock, beside a ticker)")
class LimiterLock:
    """A writer holds the one database slot (a ``CapacityLimiter(1)``) and wants the cache lock;
    a refresher holds the cache lock and wants the slot. A periodic task keeps ticking."""

    bug = staticmethod(_limiter_lock(False))
    fixed = staticmethod(_limiter_lock(True))


def _parking(atomic_check: bool) -> Program:
    async def main() -> int:
        lot = trio.lowlevel.ParkingLot()
        state = {"open": False}
        passed = [0]

        async def visitor(delay: int) -> None:
            await steps(delay)
            while not state["open"]:
                if not atomic_check:
                    await trio.sleep(0)  # logs "waiting at the gate": the unpark may come now
                await lot.park()
            passed[0] += 1

        async def gatekeeper() -> None:
            await steps(4)
            state["open"] = True
            lot.unpark_all()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(visitor, 0)
            nursery.start_soon(visitor, 1)
            nursery.start_soon(gatekeeper)
        return passed[0]

    return main


@case("parking_lot_lost_wakeup", "lost-wakeup deadlock (trio.lowlevel.ParkingLot)")
class ParkingGate:
    """Visitors check a gate's flag, yield, then park; the gatekeeper's ``unpark_all`` in
    between wakes nobody (fixed: park right after the check, with no await between)."""

    bug = staticmethod(_parking(False))
    fixed = staticmethod(_parking(True))


def _barrier(take_event_on_arrival: bool) -> Program:
    async def main() -> list[tuple[int, int]]:
        parties = 3
        state: dict[str, Any] = {"count": 0, "event": trio.Event()}
        done: list[tuple[int, int]] = []

        async def barrier_wait() -> None:
            state["count"] += 1
            if state["count"] == parties:  # the last to arrive releases the others
                state["count"] = 0
                event, state["event"] = state["event"], trio.Event()  # reused next round
                event.set()
                return
            event = state["event"]
            await trio.sleep(0)  # logs its arrival
            if not take_event_on_arrival:
                event = state["event"]  # may be the next round's event already
            await event.wait()

        async def worker(i: int) -> None:
            for round_ in range(2):
                await steps(2 * i + 1)
                await barrier_wait()
                done.append((round_, i))

        async with trio.open_nursery() as nursery:
            for i in range(parties):
                nursery.start_soon(worker, i)
        return sorted(done)

    return main


@case("reusable_barrier_event", "lost-wakeup deadlock (a trio.Event reused by a barrier)")
class ReusableBarrier:
    """A two-round barrier of three workers swaps in a fresh :class:`trio.Event` for each
    round; a worker that looks the event up after yielding waits on the next round's."""

    bug = staticmethod(_barrier(False))
    fixed = staticmethod(_barrier(True))


def _nested_pool(own_connection: bool) -> Program:
    async def main() -> list[int]:
        db = anyio.CapacityLimiter(2)
        flow = trioflow.Flow("reports")

        async def query(n: int) -> int:
            if own_connection:
                await anyio.lowlevel.checkpoint()  # runs on the step's connection
                return n
            async with db:  # a second connection, while the step holds one
                await anyio.lowlevel.checkpoint()
                return n

        def make(name: str, delay: int) -> Any:
            async def report() -> int:
                await steps(delay)
                async with db:
                    await anyio.lowlevel.checkpoint()
                    parts = await trioflow.gather(
                        functools.partial(query, 1), functools.partial(query, 2)
                    )
                return sum(parts)

            report.__name__ = name
            return report

        flow.add(make("daily", 0))
        flow.add(make("weekly", 12))
        result = await flow.run()
        return [result["daily"], result["weekly"]]

    return main


@case("flow_nested_gather_pool", "nested limiter exhaustion (flow steps, trioflow.gather, anyio limiter)")
class NestedPool:
    """Two flow steps each hold one of two database connections (an anyio
    ``CapacityLimiter``) while their :func:`trioflow.gather` queries ask for another."""

    bug = staticmethod(_nested_pool(False))
    fixed = staticmethod(_nested_pool(True))


# -- deep and long bugs ---------------------------------------------------------------


def _session(recheck: bool) -> Program:
    async def main() -> list[str]:
        sessions: dict[str, dict[str, Any]] = {"s1": {"user": "ann", "seen": 0}}

        async def request() -> None:
            await trio.sleep(0)
            session = sessions.get("s1")  # (1) the session is there
            if session is not None:
                await steps(3)  # handles the request
                if recheck:
                    current = sessions.get("s1")
                    if current is not None:
                        current["seen"] += 1
                else:
                    sessions["s1"] = {**session, "seen": session["seen"] + 1}  # (2) writes it back

        async def logout() -> None:
            await steps(7)
            sessions.pop("s1", None)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(request)
            nursery.start_soon(logout)
        return sorted(sessions)

    return main


@case("session_resurrected", "depth 2 (a logged-out session written back)")
class SessionResurrected:
    """A request reads a session, handles the request, and writes the session back; a
    logout in between is undone (two orderings: the read before the logout, the logout
    before the write)."""

    bug = staticmethod(_session(False))
    fixed = staticmethod(_session(True))


def _blue_green(checks_live_only: bool) -> Program:
    async def main() -> str:
        instances: dict[str, str] = {}
        suspects: set[str] = set()
        outcome: list[str] = []

        async def deployer() -> None:
            await steps(7)
            instances["green"] = "warming"  # (a1) starts the new version
            await steps(22)  # warms its caches
            instances["green"] = "live"  # (a2) switches the traffic over
            outcome.append("deployed")

        async def health_checker() -> None:
            await trio.sleep(0)
            for _ in range(2):
                state = instances.get("green")
                if state == "warming" and not checks_live_only:
                    suspects.add("green")  # (b1) a warming instance looks unhealthy ...
                elif state == "live" and "green" in suspects:
                    del instances["green"]  # (b2) ... and is removed once it serves
                    outcome.append("outage")
                await steps(10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deployer)
            nursery.start_soon(health_checker)
        return outcome[-1]

    return main


@case("blue_green_depth3", "depth 3 over 30 steps (a task falls behind, catches up, falls behind)")
class BlueGreen:
    """A health checker marks a warming instance suspect and removes it once it is live:
    an outage needs the checker's first look after the deploy started (it falls behind),
    before the switch 22 steps later (it catches up), and its second look after the switch
    (it falls behind again): three orderings, two against FIFO."""

    bug = staticmethod(_blue_green(False))
    fixed = staticmethod(_blue_green(True))


def _migrations(declared: bool) -> Program:
    async def main() -> list[str]:
        schema: list[str] = []
        errors: list[str] = []
        added = {"users": trio.Event(), "orders": trio.Event()}

        async def migration(name: str, needs: str | None, delay: int) -> None:
            await steps(delay)
            if needs is not None:
                if declared:
                    await added[needs].wait()
                elif needs not in schema:
                    errors.append(f"{name} before {needs}")
            await trio.sleep(0)  # runs the DDL
            schema.append(name)
            if name in added:
                added[name].set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(migration, "users", None, 0)
            nursery.start_soon(migration, "orders", "users", 4)
            nursery.start_soon(migration, "invoices", "orders", 8)
        return errors

    return main


@case("migrations_three_in_order", "three tasks held in a specific order (order violation)")
class Migrations:
    """Three migrations started together rely on their start delays: ``invoices`` needs
    ``orders``, which needs ``users``. Under FIFO they land in order; the bug needs the
    invoices task ahead of the orders task while that is ahead of the users task."""

    bug = staticmethod(_migrations(False))
    fixed = staticmethod(_migrations(True))


def _flusher(joins_producers: bool) -> Program:
    async def main() -> list[str]:
        queue: list[str] = []
        flushed: list[str] = []
        producers_done = trio.Event()

        async def producer(name: str, delay: int) -> None:
            await steps(delay)
            queue.append(name)

        async def flusher() -> None:
            for _ in range(25):  # flushes for a while, then shuts down
                flushed.extend(queue)
                queue.clear()
                await trio.sleep(0)
            if joins_producers:
                await producers_done.wait()
                flushed.extend(queue)
                queue.clear()

        async with trio.open_nursery() as outer:
            outer.start_soon(_ticker, 1)
            async with trio.open_nursery() as work:
                work.start_soon(flusher)
                async with trio.open_nursery() as producers:
                    producers.start_soon(producer, "a", 0)
                    producers.start_soon(producer, "b", 1)
                    producers.start_soon(producer, "c", 2)
                producers_done.set()
            outer.cancel_scope.cancel()
        return sorted(flushed)

    return main


@case("flusher_outlives_producer", "long hold-back (a producer held back 25 steps, beside a ticker)")
class Flusher:
    """A flusher drains a queue for 25 rounds and stops; an event queued by a producer held
    back until then is never flushed. A periodic task runs all along."""

    bug = staticmethod(_flusher(False))
    fixed = staticmethod(_flusher(True))


def _replicas(by_epoch: bool) -> Program:
    async def main() -> str:
        view: dict[str, Any] = {"epoch": 0, "leader": None}

        async def replica(i: int) -> None:
            await steps(2)
            epoch, leader = (1, "old") if i == 3 else (2, "new")  # replica 3 is stale
            await trio.sleep(0)  # the report travels
            if not by_epoch or epoch >= view["epoch"]:
                view["epoch"], view["leader"] = epoch, leader

        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(replica, i)
        return str(view["leader"])

    return main


@case("stale_replica_3_of_10_last", "a specific task of ten last (last writer wins)")
class StaleReplica:
    """Ten replicas report the leader they saw; the last report wins. Replica 3 is stale, so
    the view is wrong only if its report lands last of the ten (fixed: the newest epoch wins)."""

    bug = staticmethod(_replicas(False))
    fixed = staticmethod(_replicas(True))


# -- channels, cancellation, time -------------------------------------------------


def _clones(clone: bool) -> Program:
    async def main() -> list[int]:
        send, receive = trio.open_memory_channel[int](math.inf)
        got: list[int] = []

        async def producer(i: int, channel: trio.MemorySendChannel[int]) -> None:
            async with channel:  # closes its channel when done
                await steps(1)
                await channel.send(i)
                await steps(2)  # flushes its log

        async def consumer() -> None:
            async for item in receive:
                got.append(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            if clone:
                async with send:  # each producer closes its own clone
                    for i in range(2):
                        nursery.start_soon(producer, i, send.clone())
            else:
                for i in range(2):
                    nursery.start_soon(producer, i, send)  # closed by whoever finishes first
        return sorted(got)

    return main


@case("channel_clone_forgotten", "channel close (MemorySendChannel.clone() forgotten)")
class ChannelClones:
    """Two producers each close "their" send channel when done, but are given the same one,
    not a ``clone()``: a producer that falls behind sends on a closed channel."""

    bug = staticmethod(_clones(False))
    fixed = staticmethod(_clones(True))


def _first_sentinel(end_of_stream: bool) -> Program:
    async def main() -> list[int]:
        send, receive = anyio.create_memory_object_stream[int | None](10)
        got: list[int] = []

        async def producer(
            items: list[int], delay: int, stream: anyio.abc.ObjectSendStream[int | None]
        ) -> None:
            async with stream:
                await steps(delay)
                for item in items:
                    await stream.send(item)
                if not end_of_stream and 0 in items:
                    await stream.send(None)  # "the big producer is always last"

        async def consumer() -> None:
            async with receive:
                async for item in receive:
                    if item is None:
                        return
                    got.append(item)

        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            async with send:
                group.start_soon(producer, [0, 1, 2], 4, send.clone())
                group.start_soon(producer, [7], 0, send.clone())
        return sorted(got)

    return main


@case("stream_closed_at_sentinel", "channel close (anyio memory object stream closed too soon)")
class FirstSentinel:
    """A consumer closes its anyio receive stream at the big producer's end marker, assuming
    that producer finishes last; a small producer held back sends into a closed stream
    (``anyio.BrokenResourceError``). Fixed: the stream ends when every clone is closed."""

    bug = staticmethod(_first_sentinel(False))
    fixed = staticmethod(_first_sentinel(True))


def _watchdog(shielded: bool) -> Program:
    async def main() -> int:
        ledger = {"reserved": 0, "shipped": 0}
        scope = trio.CancelScope()

        async def order() -> None:
            with scope:
                await trio.sleep(0)
                with trio.CancelScope(shield=shielded):
                    ledger["reserved"] += 1
                    await trio.sleep(0)  # books the courier
                    ledger["shipped"] += 1

        async def watchdog() -> None:
            await steps(3)
            scope.deadline = trio.current_time()  # gives up on the order now

        async with trio.open_nursery() as nursery:
            nursery.start_soon(order)
            nursery.start_soon(watchdog)
        return ledger["reserved"] - ledger["shipped"]

    return main


@case("deadline_set_by_watchdog", "cancellation between two awaits (a deadline set from another task)")
class Watchdog:
    """A watchdog sets an order's cancel scope deadline to now; an order between reserving
    and shipping is cancelled at the second await, leaving stock reserved and never shipped."""

    bug = staticmethod(_watchdog(False))
    fixed = staticmethod(_watchdog(True))


def _reply_deadline(timeout: float) -> Program:
    async def main() -> str:
        send, receive = anyio.create_memory_object_stream[str](1)

        async def upstream() -> None:
            async with send:
                await anyio.sleep(2)
                send.send_nowait("reply")  # BrokenResourceError if the client gave up already

        async def client() -> str:
            async with receive:  # closed when the client returns
                try:
                    with anyio.fail_after(timeout):
                        return await receive.receive()
                except TimeoutError:
                    return "timed out"

        answers: list[str] = []

        async def call() -> None:
            answers.append(await client())

        async with anyio.create_task_group() as group:
            group.start_soon(upstream)
            group.start_soon(call)
        return answers[0]

    return main


@case("fail_after_at_reply_instant", "timeouts at the same virtual instant (anyio.fail_after)")
class ReplyDeadline:
    """A client's ``anyio.fail_after(2)`` and the upstream's reply after ``anyio.sleep(2)``
    fall due at the same instant. The client always times out (trio cancels its wait in the
    tick that wakes the upstream), but if it runs first it closes its stream and the
    upstream's send raises ``anyio.BrokenResourceError``. Fixed: a margin."""

    bug = staticmethod(_reply_deadline(2))
    fixed = staticmethod(_reply_deadline(3))


# -- threads ----------------------------------------------------------------------


def _fee(locked: bool) -> Program:
    async def main() -> int:
        account = {"balance": 100}
        lock = anyio.Lock()

        def fee_for(amount: int) -> int:
            return amount // 10  # (a pricing library, run in a thread)

        def audit(line: str) -> None:
            del line  # (a blocking write to the audit log)

        async def charge(amount: int) -> None:
            async with lock if locked else _nothing():
                balance = account["balance"]
                fee = await anyio.to_thread.run_sync(fee_for, amount)
                account["balance"] = balance - amount - fee

        async def deposit(amount: int) -> None:
            await steps(4)
            await anyio.to_thread.run_sync(audit, f"deposit {amount}")
            async with lock if locked else _nothing():
                account["balance"] += amount

        async with anyio.create_task_group() as group:
            group.start_soon(charge, 30)
            group.start_soon(deposit, 50)
        return account["balance"]

    return main


class _nothing:
    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        pass


@case("fee_thread_lost_update", "thread race (anyio.to_thread between a read and a write)")
class FeeThread:
    """A charge reads the balance, computes its fee in a worker thread
    (``anyio.to_thread.run_sync``), and writes the balance back; a deposit landing while the
    thread runs is lost."""

    bug = staticmethod(_fee(False))
    fixed = staticmethod(_fee(True))


def _from_thread_put(locked: bool) -> Program:
    async def main() -> list[str]:
        index = {"next": 0}
        rows: dict[int, str] = {}
        lock = trio.Lock()

        async def put_unlocked(value: str) -> None:
            slot = index["next"]
            await trio.sleep(0)  # writes the row
            rows[slot] = value
            index["next"] = slot + 1

        async def put(value: str) -> None:
            if locked:
                async with lock:
                    await put_unlocked(value)
            else:
                await put_unlocked(value)

        def importer() -> None:  # a synchronous library, in a worker thread
            for value in ("a", "b"):
                trio.from_thread.run(put, value)

        async def api() -> None:
            await steps(3)
            await put("c")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, importer)
            nursery.start_soon(api)
        return sorted(rows.values())

    return main


@case("from_thread_run_async_put", "thread race (trio.from_thread.run of an async function)")
class FromThreadPut:
    """A thread imports rows through ``trio.from_thread.run(put, ...)``, an async function
    that takes the next slot, awaits, then writes; a task's put in between takes the same
    slot and one row is overwritten."""

    bug = staticmethod(_from_thread_put(False))
    fixed = staticmethod(_from_thread_put(True))


# -- flows ------------------------------------------------------------------------


def _pool_handover(inline_return: bool) -> Program:
    async def main() -> tuple[list[int], int]:
        pool = ["conn"]
        exhausted = [0]
        returns, returned = trio.open_memory_channel[str](math.inf)
        flow = trioflow.Flow("upload")

        @flow.step(map_over="batches", max_concurrent=1)
        async def upload(batches: int) -> int:
            if not pool:
                exhausted[0] += 1
                await trio.sleep(1)  # waits and reconnects
                pool.append("conn")
            conn = pool.pop()
            await trio.sleep(1)
            if inline_return:
                pool.append(conn)
            else:
                returns.send_nowait(conn)  # the pool's own task puts it back
            return batches

        async def pool_keeper() -> None:
            async for conn in returned:
                pool.append(conn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool_keeper)
            result = await flow.run({"batches": [1, 2, 3]})
            nursery.cancel_scope.cancel()
        return result["upload"], exhausted[0]

    return main


@case("flow_map_slot_handover", "flow: the slot hand-over (a map step's own max_concurrent)")
class PoolHandover:
    """Map items share one connection, returned through a channel to a pool task: under
    plain trio the next item is handed the map's slot at once, before the pool task has put
    the connection back, and finds the pool empty."""

    bug = staticmethod(_pool_handover(False))
    fixed = staticmethod(_pool_handover(True))


def _map_transfer(shielded: bool) -> Program:
    async def main() -> int:
        accounts = {"a": 100, "b": 0}

        async def process(item: str) -> None:
            if item == "pay":
                await steps(4)
                with trio.CancelScope(shield=shielded):
                    accounts["a"] -= 50
                    await anyio.lowlevel.checkpoint()  # fail-fast may cancel it here
                    accounts["b"] += 50
            else:
                await steps(3)
                raise ValueError(f"item {item!r} is malformed")

        try:
            await trioflow.map(process, ["pay", "bad"])
        except trioflow.FlowError:
            pass
        return accounts["a"] + accounts["b"]

    return main


# Plain trio.run loses the 50 in about half of its runs. The harness once found it in none
# of 1000 runs of any seed: trioflow.map's fail-fast always waited, under the harness,
# until every task was blocked before it cancelled, where a flow's lets the schedule
# decide (issue 10, third corpus; fixed in trioflow/_map.py, _Pool._settle).
@case("map_failfast_mid_transfer", "flow: fail-fast mid-transfer (trioflow.map)")
class MapTransfer:
    """:func:`trioflow.map` with fail-fast: one item fails while another is between a debit
    and a credit; cancelled at the credit's await, the money is gone."""

    bug = staticmethod(_map_transfer(False))
    fixed = staticmethod(_map_transfer(True))


def _map_handover(inline_return: bool) -> Program:
    async def main() -> tuple[list[int], int]:
        tokens = ["token"]
        refused = [0]
        returns, returned = trio.open_memory_channel[str](math.inf)

        async def send_batch(batch: int) -> int:
            if not tokens:
                refused[0] += 1  # the API refuses a call without a session token
                await trio.sleep(1)
                tokens.append("token")
            token = tokens.pop()
            await trio.sleep(1)
            if inline_return:
                tokens.append(token)
            else:
                returns.send_nowait(token)  # the session keeper puts it back
            return batch

        async def session_keeper() -> None:
            async for token in returned:
                tokens.append(token)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session_keeper)
            sent = await trioflow.map(send_batch, [1, 2, 3], max_concurrent=1)
            nursery.cancel_scope.cancel()
        return sent, refused[0]

    return main


# Plain trio.run refuses a call in every run. The harness once found it in none of 1000
# runs: trioflow.map's workers always settled before taking the next item under the
# harness, where a flow's ask the harness's hand-over decision (issue 10, third corpus;
# fixed in trioflow/_map.py, _Pool._settles).
@case("map_slot_handover", "flow: the slot hand-over (trioflow.map with max_concurrent=1)")
class MapHandover:
    """:func:`trioflow.map` with ``max_concurrent=1`` sends batches with one session token,
    returned through a channel to a keeper task: plain trio hands the freed slot to the next
    item at once, before the keeper has put the token back."""

    bug = staticmethod(_map_handover(False))
    fixed = staticmethod(_map_handover(True))


def _gather_transfer(shielded: bool) -> Program:
    async def main() -> int:
        inventory = {"warehouse": 10, "truck": 0}

        async def load() -> str:
            await anyio.lowlevel.checkpoint()
            with trio.CancelScope(shield=shielded):
                inventory["warehouse"] -= 4
                await trio.sleep(0)  # the forklift
                inventory["truck"] += 4
            return "loaded"

        async def inspect_truck() -> str:
            await anyio.lowlevel.checkpoint()
            raise RuntimeError("the truck failed its inspection")

        try:
            await trioflow.gather(load, inspect_truck)
        except trioflow.FlowError:
            pass
        return inventory["warehouse"] + inventory["truck"]

    return main


# Plain trio.run loses the load in about half of its runs; the harness once in none (the
# same cause as map_failfast_mid_transfer: trioflow.gather runs on trioflow.map's pool).
@case("gather_failfast_mid_load", "flow: fail-fast mid-transfer (trioflow.gather)")
class GatherTransfer:
    """:func:`trioflow.gather` fails fast when an inspection fails at the instant a load is
    between taking goods out of the warehouse and putting them on the truck."""

    bug = staticmethod(_gather_transfer(False))
    fixed = staticmethod(_gather_transfer(True))


def _flow_refunds(shielded: bool) -> Program:
    async def main() -> int:
        ledger = {"merchant": 300, "customers": 0}
        flow = trioflow.Flow("refunds")

        @flow.step
        async def claims() -> list[str]:
            await trio.sleep(1)
            return ["ann", "bob", "mallory"]

        @flow.step(map_over="claims")
        async def refund(claims: str) -> None:
            if claims == "mallory":
                await steps(0)
                raise PermissionError(f"claim of {claims!r} is fraudulent")
            await steps(1)
            with trio.CancelScope(shield=shielded):
                ledger["merchant"] -= 100
                await trio.sleep(0)  # the payment provider's call
                ledger["customers"] += 100

        try:
            await flow.run()
        except trioflow.FlowError:
            pass
        return ledger["merchant"] + ledger["customers"]

    return main


@case("flow_map_refund_failfast", "flow: fail-fast mid-transfer (a map step's items)")
class FlowRefunds:
    """A map step refunds claims; one item fails as fraudulent while another is between
    debiting the merchant and crediting the customer: fail-fast cancels it at that await
    (plain ``trio.run`` loses the 100 in about half of its runs)."""

    bug = staticmethod(_flow_refunds(False))
    fixed = staticmethod(_flow_refunds(True))


def _hedged(from_winner: bool) -> Program:
    async def main() -> tuple[str, str]:
        served: dict[str, str] = {}

        async def primary() -> str:
            await trio.sleep(1)
            if not from_winner:
                served["by"] = "primary"
            await steps(1)  # reads the body
            return "primary"

        async def hedge() -> str:
            await trio.sleep(1)
            await steps(6)  # a slower path through the proxy
            if not from_winner:
                served["by"] = "hedge"  # records itself before the race is settled
            await trio.sleep(1)  # reads the body
            return "hedge"

        winner = await trioflow.race(primary, hedge)
        if from_winner:
            served["by"] = winner
        return winner, served["by"]

    return main


@case("race_loser_records_itself", "flow: trioflow.race calls share state")
class Hedged:
    """Two hedged calls under :func:`trioflow.race` record who served the request as their
    reply starts; the hedge, cancelled only at its next await once the primary has won,
    overwrites the record if the primary falls six steps behind."""

    bug = staticmethod(_hedged(False))
    fixed = staticmethod(_hedged(True))


# -- one unit held back on fewer workers than units ---------------------------------


def _replica_items(by_epoch: bool) -> Program:
    async def main() -> str:
        view: dict[str, Any] = {"epoch": 0, "leader": None}

        async def report(i: int) -> int:
            await trio.sleep(0)
            epoch, leader = (1, "old") if i == 3 else (2, "new")  # replica 3 is stale
            await trio.sleep(0)  # the report travels
            if not by_epoch or epoch >= view["epoch"]:
                view["epoch"], view["leader"] = epoch, leader
            return i

        await trioflow.map(report, range(10), max_concurrent=4)
        return str(view["leader"])

    return main


# The bug needs item 3's task held back while the three other workers take and finish
# items 4 to 9 at the same virtual instant (as a slow network can make it, in
# production). It was missed in every seed while a worker that finished an item with
# another task of the call runnable always settled before taking the next one: settling
# waits until every task is blocked, so the held-back item ran to its end first. The
# hand-over is now a decision there too whenever the next unit cannot change (a map's
# next item never does; see Controller.handover and Run._next_fixed).
@case("map_stale_item_3_of_10_last", "a specific task of ten last (trioflow.map, max_concurrent=4)")
class StaleItem:
    """Ten report items through :func:`trioflow.map` with four workers; the last report wins,
    and item 3 is stale: the view is wrong only if item 3 reports last."""

    bug = staticmethod(_replica_items(False))
    fixed = staticmethod(_replica_items(True))


def _replica_steps(by_epoch: bool) -> Program:
    async def main() -> str:
        view: dict[str, Any] = {"epoch": 0, "leader": None}
        flow = trioflow.Flow("replicas")

        def make(i: int) -> Any:
            async def report() -> int:
                await trio.sleep(0)
                epoch, leader = (1, "old") if i == 3 else (2, "new")
                await trio.sleep(0)  # the report travels
                if not by_epoch or epoch >= view["epoch"]:
                    view["epoch"], view["leader"] = epoch, leader
                return i

            report.__name__ = f"report{i}"
            return report

        for i in range(10):
            flow.add(make(i))
        await flow.run(max_concurrent=4)
        return str(view["leader"])

    return main


# The same through a flow's workers: every step is queued from the start, so no step
# ending now can make a more urgent one ready, and the hand-over is a decision.
@case("flow_stale_step_3_of_10_last", "a specific task of ten last (a flow, max_concurrent=4)")
class StaleStep:
    """Ten report steps of a flow run with ``max_concurrent=4``; step ``report3`` is stale,
    and the view is wrong only if it reports last."""

    bug = staticmethod(_replica_steps(False))
    fixed = staticmethod(_replica_steps(True))
