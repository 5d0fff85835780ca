"""A second corpus of async programs with interleaving bugs, written apart from the first.

The first corpus (``tests/harness_corpus.py``) was at hand while the
strategies of :mod:`trioflow.testing` were tuned. This one was written
afterwards, to the same list of kinds but in other shapes: other primitives
(:class:`trio.Event`, memory channels, :class:`trio.Semaphore`,
:class:`trio.Condition`, :class:`trio.StrictFIFOLock`, anyio's ``Lock``,
``Event``, task groups and ``sleep``, nested nurseries, cancel scopes, task
status, ``trio.sleep(0)`` beside ``checkpoint``), other task counts (task 7
of 12 finishing last, three philosophers, four tasks on a one-slot buffer, a
run of 30 steps held back) and the kind of code the bugs live in (a rate
counter, a cache with a time-to-live, a connection pool, a write-behind
buffer, a metrics registry read by a thread, flows that share state). Every
``Case`` reuses the first corpus's dataclass: a buggy program and its fixed
twin, async functions of no arguments. The buggy one returns another value,
raises or deadlocks under some schedule (and not under FIFO, which is how a
plain test run would see it); the fixed one gives one value under every
schedule.

``tests/test_testing_corpus2.py`` checks each bug quickly (one seed, the
run bound measured for it); ``fuzz/test_corpus.py`` checks both corpora over
ten seeds; ``python fuzz/corpus_table.py 10 harness_corpus2`` prints the
table of ``docs/testing.rst``.
"""

# The programs yield with trio.sleep(0) on purpose (the first corpus uses checkpoint()),
# and the ticker of the philosophers is a plain periodic sleep loop.
# ruff: noqa: ASYNC115, ASYNC110

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import trio
import trio.lowlevel
from harness_corpus import Case, Program, registrar

import trioflow

CASES: list[Case] = []


case = registrar(CASES)


async def yields(n: int) -> None:
    """``n`` schedule points through ``trio.sleep(0)`` (the first corpus used ``checkpoint``)."""
    for _ in range(n):
        await trio.sleep(0)


# -- data races -----------------------------------------------------------------------


def _rate_counter(locked: bool) -> Program:
    async def main() -> int:
        # hits per one-second bucket of a sliding window, recorded by five request handlers
        buckets: dict[int, int] = {}
        lock = anyio.Lock()

        async def record(now: int) -> None:
            count = buckets.get(now, 0)
            await trio.sleep(0)  # (a log line, a metrics push: anything that yields)
            buckets[now] = count + 1

        async def handler(i: int) -> None:
            await yields(2 * i)
            if locked:
                async with lock:
                    await record(0)
            else:
                await record(0)

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(handler, i)
        return sum(buckets.values())

    return main


@case("rate_counter", "lost update")
class RateCounter:
    """Five handlers bump a bucket of a rate counter with a yield between read and write."""

    bug = staticmethod(_rate_counter(False))
    fixed = staticmethod(_rate_counter(True))


def _ttl_cache(single_flight: bool) -> Program:
    async def main() -> int:
        entry: dict[str, Any] = {"value": "v0", "expires": 5.0}
        backend_calls = [0]
        inflight: dict[str, trio.Event] = {}

        async def fetch() -> str:
            backend_calls[0] += 1
            await yields(2)
            return f"v{backend_calls[0]}"

        async def refresh() -> None:
            entry["value"] = await fetch()
            entry["expires"] = trio.current_time() + 10

        async def get() -> str:
            if trio.current_time() >= entry["expires"]:
                if not single_flight:
                    await refresh()
                elif "key" in inflight:
                    await inflight["key"].wait()
                else:
                    done = inflight["key"] = trio.Event()
                    try:
                        await refresh()
                    finally:
                        del inflight["key"]
                        done.set()
            return str(entry["value"])

        async def reader(delay: int) -> None:
            await trio.sleep(5)
            await yields(delay)
            await get()

        async with trio.open_nursery() as nursery:
            for delay in (0, 4, 8):
                nursery.start_soon(reader, delay)
        return backend_calls[0]

    return main


@case("ttl_cache_refresh", "check-then-act")
class TtlCache:
    """Readers of an expired cache entry each refresh it (the backend is called twice)."""

    bug = staticmethod(_ttl_cache(False))
    fixed = staticmethod(_ttl_cache(True))


# -- order violations --------------------------------------------------------------------


@case("config_before_load", "order violation")
class ConfigBeforeLoad:
    """A request handler is started beside the config loader and reads the config too soon."""

    @staticmethod
    async def bug() -> str:
        config: dict[str, str] = {}

        async def loader() -> None:
            await yields(2)  # reads a file
            config["mode"] = "strict"

        async def handler() -> str:
            await yields(3)
            return config.get("mode", "unset")

        answers: list[str] = []

        async def serve() -> None:
            answers.append(await handler())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(loader)
            nursery.start_soon(serve)
        return answers[0]

    @staticmethod
    async def fixed() -> str:
        config: dict[str, str] = {}

        async def loader(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await yields(2)
            config["mode"] = "strict"
            task_status.started()

        async def handler() -> str:
            await yields(3)
            return config.get("mode", "unset")

        answers: list[str] = []

        async def serve() -> None:
            answers.append(await handler())

        async with trio.open_nursery() as nursery:
            await nursery.start(loader)  # the handler starts once the config is loaded
            nursery.start_soon(serve)
        return answers[0]


# -- deadlocks ------------------------------------------------------------------------


def _philosophers(ordered: bool) -> Program:
    async def main() -> int:
        # three kinds of lock around a table, beside a ticking clock task
        forks = [trio.Lock(), trio.StrictFIFOLock(), anyio.Lock()]
        meals = [0]

        async def philosopher(i: int) -> None:
            await trio.sleep(0)
            await yields(4 * i)
            left, right = forks[i], forks[(i + 1) % 3]
            if ordered and i == 2:
                left, right = right, left  # everyone takes the lower-numbered fork first
            async with left:
                await yields(2)
                async with right:
                    meals[0] += 1

        async def clock() -> None:
            while True:
                await trio.sleep(0.5)

        async with trio.open_nursery() as outer:
            outer.start_soon(clock)
            async with trio.open_nursery() as table:
                for i in range(3):
                    table.start_soon(philosopher, i)
            outer.cancel_scope.cancel()
        return meals[0]

    return main


@case("three_philosophers", "lock-order deadlock (a cycle of three, beside a ticker)")
class Philosophers:
    """Three philosophers each take their left fork, then their right one."""

    bug = staticmethod(_philosophers(False))
    fixed = staticmethod(_philosophers(True))


def _transfers(ordered: bool) -> Program:
    async def main() -> dict[str, int]:
        # each account has its own lock; anyio's fast_acquire parks on trio's lock queue
        # directly (the harness once missed such waits: issue 10, second corpus)
        balances = {"alice": 100, "bob": 100}
        locks = {name: anyio.Lock(fast_acquire=True) for name in balances}

        async def transfer(source: str, target: str, amount: int, delay: int) -> None:
            await yields(delay)
            first, second = (source, target)
            if ordered:
                first, second = sorted((source, target))
            async with locks[first]:
                await trio.lowlevel.checkpoint()  # reads the balance from the database
                async with locks[second]:
                    balances[source] -= amount
                    balances[target] += amount

        async def metrics() -> None:
            while True:
                await anyio.sleep(0.25)

        async with trio.open_nursery() as outer:
            outer.start_soon(metrics)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transfer, "alice", "bob", 30, 0)
                nursery.start_soon(transfer, "bob", "alice", 10, 3)
            outer.cancel_scope.cancel()
        return balances

    return main


@case("opposite_transfers", "lock-order deadlock (anyio fast_acquire locks, beside a ticker)")
class OppositeTransfers:
    """Two transfers between the same accounts lock them in opposite orders."""

    bug = staticmethod(_transfers(False))
    fixed = staticmethod(_transfers(True))


def _write_behind(reset_first: bool) -> Program:
    async def main() -> list[int]:
        buffer: list[int] = []
        written: list[int] = []
        state: dict[str, Any] = {"wake": anyio.Event(), "closing": False}

        async def flusher() -> None:
            while True:
                await state["wake"].wait()
                if reset_first:
                    state["wake"] = anyio.Event()
                batch = buffer[:]
                buffer.clear()
                await trio.sleep(0)  # write the batch out
                written.extend(batch)
                if not reset_first:
                    state["wake"] = anyio.Event()  # a wake-up during the write is lost
                if state["closing"] and not buffer:
                    return

        async def writer() -> None:
            for item in range(3):
                await yields(3)
                buffer.append(item)
                state["wake"].set()
            await yields(3)
            state["closing"] = True
            state["wake"].set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher)
            nursery.start_soon(writer)
        return written

    return main


@case("write_behind_lost_wakeup", "lost-wakeup deadlock (anyio.Event)")
class WriteBehind:
    """A write-behind buffer's flusher replaces its wake-up event after writing, not before."""

    bug = staticmethod(_write_behind(False))
    fixed = staticmethod(_write_behind(True))


def _job_queue(recheck: bool) -> Program:
    async def main() -> list[int]:
        # two workers take jobs from a queue guarded by a condition
        condition = trio.Condition()
        jobs: list[int] = []
        done: list[int] = []

        async def worker(delay: int) -> None:
            await yields(delay)
            async with condition:
                if recheck:
                    while not jobs:
                        await condition.wait()
                elif not jobs:  # "if", not "while": another worker may take the job first
                    await condition.wait()
                done.append(jobs.pop(0))

        async def producer() -> None:
            for job in range(2):
                await yields(2)
                async with condition:
                    jobs.append(job)
                    condition.notify()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 0)
            nursery.start_soon(worker, 1)
            nursery.start_soon(producer)
        return sorted(done)

    return main


@case("job_queue_stolen_wakeup", "condition: a wake-up taken by another task (if, not while)")
class JobQueue:
    """A worker woken by a notify finds its job taken by a worker that came later."""

    bug = staticmethod(_job_queue(False))
    fixed = staticmethod(_job_queue(True))


def _pool_nested(reuse: bool) -> Program:
    async def main() -> int:
        pool = trio.Semaphore(3)  # three database connections
        audits = [0]

        async def audit() -> None:
            async with pool:  # a second connection, while the handler holds one
                audits[0] += 1

        async def audit_on_own_connection() -> None:
            audits[0] += 1

        async def handle(i: int) -> None:
            await yields(3 * i)
            async with pool:
                await yields(2)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(audit_on_own_connection if reuse else audit)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(handle, i)
        return audits[0]

    return main


@case("pool_nested_acquire", "nested limiter exhaustion (trio.Semaphore)")
class PoolNested:
    """Three handlers hold a pooled connection while their audit task asks the pool for one more."""

    bug = staticmethod(_pool_nested(False))
    fixed = staticmethod(_pool_nested(True))


# -- deep and long bugs ---------------------------------------------------------------


def _schema_migration(locked: bool) -> Program:
    async def main() -> int:
        schema = {"version": 1}
        rows: list[int] = []
        lock = trio.Lock()

        async def migrate() -> None:
            await yields(5)
            async with lock:
                schema["version"] = 2
                rows[:] = [2] * len(rows)  # rewrites every row in the new format

        async def insert() -> None:
            await trio.lowlevel.checkpoint()
            async with lock if locked else _nothing():
                version = schema["version"]  # (1)
                await yields(2)  # builds the row
                rows.append(version)  # (2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(migrate)
            nursery.start_soon(insert)
        return sum(1 for version in rows if version != schema["version"])

    return main


class _nothing:
    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        pass


@case("row_in_old_schema", "depth 2")
class SchemaMigration:
    """A row built for schema 1 is inserted after a migration to schema 2 ran (two orderings)."""

    bug = staticmethod(_schema_migration(False))
    fixed = staticmethod(_schema_migration(True))


def _journal(keep_unsnapshotted: bool) -> Program:
    async def main() -> list[int]:
        journal: list[int] = []
        snapshots: list[list[int]] = []

        async def writer() -> None:
            for entry in range(5):
                await yields(2)
                journal.append(entry)

        async def compactor() -> None:
            await yields(2)
            if len(journal) >= 3:  # worth compacting
                snapshots.append(list(journal))

        async def truncator() -> None:
            await yields(4)
            if snapshots:
                if keep_unsnapshotted:
                    del journal[: len(snapshots[0])]
                else:
                    journal.clear()  # also drops what was written since the snapshot

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(compactor)
            nursery.start_soon(truncator)
        kept = set(journal).union(*snapshots)
        return sorted(kept)

    return main


@case("journal_compaction_window", "depth 3")
class JournalCompaction:
    """A compactor snapshots a journal once it holds three entries and a truncator clears it:
    an entry written between the snapshot and the truncation is lost (three orderings: the
    third entry before the snapshot, the snapshot before a later entry, that entry before
    the truncation)."""

    bug = staticmethod(_journal(False))
    fixed = staticmethod(_journal(True))


def _lease(wait_started: bool) -> Program:
    async def main() -> bool:
        renewals = [0]
        started = trio.Event()

        async def lease_holder() -> None:
            await trio.sleep(0)
            renewals[0] += 1
            started.set()

        async def noise() -> None:
            await yields(40)

        async def watchdog() -> bool:
            if wait_started:
                await started.wait()
            await yields(30)
            return renewals[0] > 0  # "alive"

        alive: list[bool] = []

        async def watch() -> None:
            alive.append(await watchdog())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lease_holder)
            nursery.start_soon(noise)
            nursery.start_soon(watch)
        return alive[0]

    return main


@case("lease_starved_30", "long hold-back (30 steps)")
class Lease:
    """A watchdog declares a lease dead if its holder's first renewal is held back 30 steps."""

    bug = staticmethod(_lease(False))
    fixed = staticmethod(_lease(True))


def _last_of_twelve(write_first: bool) -> Program:
    async def main() -> list[int]:
        results: dict[int, int] = {}
        remaining = [12]
        reported: list[list[int]] = []

        def finish_one() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                reported.append(sorted(results))  # the last one to finish reports

        async def worker(i: int) -> None:
            await yields(1 + i)
            if i == 7 and not write_first:
                finish_one()  # the slow path counts itself done before storing its result
                await trio.lowlevel.checkpoint()
                results[i] = i * i
            else:
                results[i] = i * i
                finish_one()

        async with anyio.create_task_group() as group:
            for i in range(12):
                group.start_soon(worker, i)
        return reported[0]

    return main


@case("worker_7_of_12_last", "a specific task of twelve finishing last")
class LastOfTwelve:
    """The last of twelve workers reports; worker 7 is missing from the report if it is last."""

    bug = staticmethod(_last_of_twelve(False))
    fixed = staticmethod(_last_of_twelve(True))


# -- channels, cancellation, time -------------------------------------------------


@case("poll_consumer_drops_last", "channel close")
class PollConsumer:
    """A polling consumer stops when it sees the producer's done flag, and drops the last item
    (fixed: it looks at the flag only once the channel is empty)."""

    @staticmethod
    async def bug() -> list[int]:
        send, receive = trio.open_memory_channel[int](100)
        state = {"done": False}
        got: list[int] = []

        async def producer() -> None:
            for item in range(4):
                await send.send(item)
            await trio.sleep(0)
            state["done"] = True

        async def consumer() -> None:
            while not state["done"]:
                try:
                    got.append(receive.receive_nowait())
                except trio.WouldBlock:
                    await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(consumer)
        return got

    @staticmethod
    async def fixed() -> list[int]:
        # still a polling loop (a strict-priority schedule that lets it spin forever is
        # not a bug of the program: issue 10, second corpus), which drains before it stops
        send, receive = trio.open_memory_channel[int](100)
        state = {"done": False}
        got: list[int] = []

        async def producer() -> None:
            for item in range(4):
                await send.send(item)
            await trio.sleep(0)
            state["done"] = True

        async def consumer() -> None:
            while True:
                try:
                    got.append(receive.receive_nowait())
                    continue
                except trio.WouldBlock:
                    if state["done"]:  # set after the last send: nothing more will come
                        return
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(consumer)
        return got


def _pool_cancel(shielded: bool) -> Program:
    async def main() -> int:
        free = ["c1", "c2"]
        in_use: set[str] = set()

        async def ping(conn: str) -> None:
            await trio.sleep(0)

        async def acquire() -> str:
            conn = free.pop()
            if shielded:
                try:
                    await ping(conn)
                except BaseException:
                    free.append(conn)  # cancelled while checking it: give it back
                    raise
            else:
                await ping(conn)  # cancelled here, the connection is in neither list
            in_use.add(conn)
            return conn

        async def request(scope_box: list[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                await yields(1)
                conn = await acquire()
                try:
                    await yields(2)
                finally:
                    in_use.discard(conn)
                    free.append(conn)

        async def shutdown(scopes: list[trio.CancelScope]) -> None:
            await yields(4)
            for scope in scopes:
                scope.cancel()

        scopes: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shutdown, scopes)
            async with trio.open_nursery() as requests:
                requests.start_soon(request, scopes)
                requests.start_soon(request, scopes)
        return len(free) + len(in_use)

    return main


@case("pool_cancel_leak", "cancellation between two awaits")
class PoolCancel:
    """A pool's acquire is cancelled between taking a connection and recording it: it leaks."""

    bug = staticmethod(_pool_cancel(False))
    fixed = staticmethod(_pool_cancel(True))


def _heartbeat_monitor(offset: float) -> Program:
    async def main() -> int:
        beats = [0]
        missed = [0]

        async def service() -> None:
            for _ in range(4):
                await anyio.sleep(1)
                beats[0] += 1

        async def monitor() -> None:
            start = trio.current_time()
            for k in (2, 4):
                await trio.sleep_until(start + k + offset)
                if beats[0] < k:  # a beat due at this very instant may not have run yet
                    missed[0] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(service)
            nursery.start_soon(monitor)
        return missed[0]

    return main


@case("heartbeat_monitor_tie", "timeouts at the same virtual instant")
class HeartbeatMonitor:
    """A monitor checks for a heartbeat at the very instant one is due: who wakes first decides."""

    bug = staticmethod(_heartbeat_monitor(0.0))
    fixed = staticmethod(_heartbeat_monitor(0.5))


# -- threads ----------------------------------------------------------------------


def _cache_file(atomic: bool) -> Program:
    async def main() -> str:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "cache.json"
            path.write_text('{"v": 1}')

            def read_if_present() -> str:
                try:
                    return path.read_text()
                except FileNotFoundError:
                    return "absent"

            async def reader() -> str:
                if atomic:
                    await trio.sleep(1)
                    return await trio.to_thread.run_sync(read_if_present)
                present = await trio.to_thread.run_sync(path.exists)
                await trio.sleep(1)  # parses the request meanwhile
                if present:
                    return await trio.to_thread.run_sync(path.read_text)
                return "absent"

            async def cleaner() -> None:
                await trio.sleep(1)
                await trio.to_thread.run_sync(os.remove, path)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(cleaner)
            return "ok"

    return main


@case("file_exists_then_read", "thread race (check-then-act on a real file)")
class CacheFile:
    """A reader checks in a thread that a file exists, reads it later; a cleaner thread removes it."""

    bug = staticmethod(_cache_file(False))
    fixed = staticmethod(_cache_file(True))


def _registry_export(snapshot: bool) -> Program:
    async def main() -> int:
        registry: dict[str, int] = {"requests": 3, "errors": 0, "latency": 12}
        lock = threading.Lock()

        def register_in_thread() -> None:
            with lock:
                registry["queue_depth"] = 7

        lines: list[str] = []

        async def exporter() -> None:
            with lock:
                items = list(registry.items()) if snapshot else None
            for name, value in items if items is not None else registry.items():
                lines.append(f"{name} {value}")
                await trio.sleep(0)  # sends the line to the scraper

        async with trio.open_nursery() as nursery:
            nursery.start_soon(exporter)
            nursery.start_soon(trio.to_thread.run_sync, register_in_thread)
        return len(registry)

    return main


@case("registry_changed_during_export", "thread race (a dict changes size while iterated)")
class RegistryExport:
    """A metrics exporter iterates the registry across awaits while a thread registers a metric."""

    bug = staticmethod(_registry_export(False))
    fixed = staticmethod(_registry_export(True))


def _progress(atomic: bool) -> Program:
    async def main() -> int:
        # a download thread reports progress through trio.from_thread (the harness once
        # ran such threads uncontrolled, in real time: issue 10, second corpus)
        progress = {"bytes": 0}

        def read() -> int:
            return progress["bytes"]

        def write(value: int) -> None:
            progress["bytes"] = value

        def add(n: int) -> None:
            progress["bytes"] += n

        def download() -> None:
            for chunk in (100, 200):
                if atomic:
                    trio.from_thread.run_sync(add, chunk)
                else:
                    seen = trio.from_thread.run_sync(read)
                    trio.from_thread.run_sync(write, seen + chunk)

        async def upload_metadata() -> None:
            await yields(2)
            if atomic:
                add(10)
            else:
                seen = read()
                await trio.sleep(0)
                write(seen + 10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, download)
            nursery.start_soon(upload_metadata)
        return progress["bytes"]

    return main


@case("progress_from_thread", "thread race (a thread calling back with trio.from_thread)")
class ProgressFromThread:
    """A thread reads and writes a progress counter in two calls back into trio; a task
    updates it across an await."""

    bug = staticmethod(_progress(False))
    fixed = staticmethod(_progress(True))


# -- flows ------------------------------------------------------------------------


def _map_ids(atomic: bool) -> Program:
    async def main() -> int:
        flow = trioflow.Flow("ids")

        @flow.step
        async def names() -> list[str]:
            return ["a", "bob", "carla", "dimitri"]

        @flow.step(map_over="names", isolation="share", max_concurrent=4)
        async def register(names: str, registry: dict[str, int]) -> int:
            await yields(len(names))  # (a lookup whose length depends on the name)
            if atomic:
                registry[names] = len(registry)
                return registry[names]
            next_id = len(registry)
            await trio.sleep(0)  # stores the user first
            registry[names] = next_id
            return next_id

        registry: dict[str, int] = {}
        result = await flow.run({"registry": registry})
        return len(set(result["register"]))

    return main


@case("flow_map_shared_ids", "flow: a map step sharing a dict (isolation='share')")
class FlowMapIds:
    """Map items hand out ids from a shared registry with an await between read and write."""

    bug = staticmethod(_map_ids(False))
    fixed = staticmethod(_map_ids(True))


def _double_charge(fixed: bool) -> Program:
    async def main() -> int:
        account: dict[str, Any] = {"token": "t0", "charged": 0}
        flow = trioflow.Flow("checkout")

        @flow.step(limiter="api")
        async def rotate_token() -> None:
            await trio.sleep(1)
            if fixed:
                await trio.lowlevel.checkpoint()
                account["token"] = "t1"  # swapped in one step
                return
            account["token"] = None  # revoke the old token ...
            await trio.lowlevel.checkpoint()
            account["token"] = "t1"  # ... then install the new one

        @flow.step(limiter="api", retry=trioflow.Retry(max_attempts=3))
        async def charge() -> str:
            await trio.sleep(1)
            if not fixed:
                account["charged"] += 1  # counted before the provider accepted it
            await trio.sleep(0)  # the provider call
            if account["token"] is None:
                raise ConnectionError("the provider refused the request: no token")
            if fixed:
                account["charged"] += 1
            return "paid"

        await flow.run(limiters={"api": 2})
        return int(account["charged"])

    return main


@case("flow_retry_double_charge", "flow: retries and a named limiter")
class FlowDoubleCharge:
    """A token rotation leaves a moment without a token; a retried step counts its charge
    before the call that then fails, so the retry charges twice (fixed: the token is swapped
    in one step, and a charge counts once accepted)."""

    bug = staticmethod(_double_charge(False))
    fixed = staticmethod(_double_charge(True))


def _handover_by_watcher(inline_release: bool) -> Program:
    async def main() -> int:
        gpu = {"owner": None, "clashes": 0}
        flow = trioflow.Flow("gpu")

        async with trio.open_nursery() as background:

            def make(name: str) -> Any:
                async def step() -> str:
                    if gpu["owner"] is not None:
                        gpu["clashes"] += 1
                    gpu["owner"] = name
                    await trio.sleep(1)
                    if inline_release:
                        gpu["owner"] = None
                    else:
                        done = trio.Event()

                        async def watcher() -> None:  # frees the device once told the step ended
                            await done.wait()
                            gpu["owner"] = None

                        background.start_soon(watcher)
                        done.set()
                    return name

                step.__name__ = name
                return step

            flow.add(make("train"), limiter="gpu", cost=3)
            flow.add(make("evaluate"), limiter="gpu", cost=2)

            @flow.step(limiter="gpu", cost=1)
            async def report() -> None:  # does not touch the device
                await trio.sleep(1)

            await flow.run(limiters={"gpu": 1})
        return gpu["clashes"]

    return main


@case("flow_gpu_handover", "flow: the slot hand-over (a named limiter of 1)")
class FlowGpuHandover:
    """A step's device is freed by a watcher task woken by an event: the next step, handed the
    limiter's slot at once, finds the device still owned."""

    bug = staticmethod(_handover_by_watcher(False))
    fixed = staticmethod(_handover_by_watcher(True))




def _failfast_transfer(shielded: bool) -> Program:
    async def main() -> int:
        accounts = {"a": 100, "b": 0}
        flow = trioflow.Flow("payment")

        @flow.step
        async def transfer() -> None:
            await yields(4)
            with trio.CancelScope(shield=shielded):
                accounts["a"] -= 50
                await trio.lowlevel.checkpoint()  # fail-fast may cancel it here
                accounts["b"] += 50

        @flow.step
        async def validate() -> None:
            await yields(3)
            raise ValueError("the payment is invalid")

        try:
            await flow.run()
        except trioflow.FlowError:
            pass
        return accounts["a"] + accounts["b"]

    return main


# Plain trio.run loses the 50 in 169 of 300 runs (the failure's cancellation lands in
# the batch after the failure, and trio reverses batches at random). Under the
# harness, when fail-fast's cancellation lands is a decision: after every task of the
# instant has gone on (so that failures at one instant are all reported), or, as
# under plain trio, once the tasks of the failure's batch have run.
CASES.append(
    Case(
        "flow_failfast_mid_transfer",
        "flow: fail_fast cancels a step between two awaits, cancellation between two awaits",
        _failfast_transfer(False),
        _failfast_transfer(True),
    )
)
