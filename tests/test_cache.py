"""trioflow.Cache: memoizing steps across runs, single flight (issue 5).

Tests marked ``anyio`` run on trio (virtual time) and on asyncio.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

import trioflow
from trioflow import Cache, FlowError, StoreError

pytestmark = pytest.mark.anyio


def counting_flow(cache: Cache, calls: list[Any], *, map_step: bool = False, wait: float = 0) -> trioflow.Flow:
    flow = trioflow.Flow("cached")

    @flow.step(cache=cache, **({"map_over": "words"} if map_step else {}))
    async def translate(words: str) -> list[str]:
        calls.append(words)
        if wait:
            await anyio.sleep(wait)
        return [words.upper()]

    return flow


async def test_a_hit_skips_the_function_across_runs() -> None:
    calls: list[Any] = []
    cache = Cache()
    flow = counting_flow(cache, calls)
    first = await flow.run({"words": "cat"})
    second = await flow.run({"words": "cat"})
    other = await flow.run({"words": "dog"})
    assert calls == ["cat", "dog"]
    assert first["translate"] == second["translate"] == ["CAT"]
    assert other["translate"] == ["DOG"]
    assert cache.statistics() == trioflow.CacheStatistics(hits=1, misses=2, size=2, in_flight=0)


async def test_a_hit_returns_a_copy() -> None:
    cache = Cache()
    flow = counting_flow(cache, [])
    (await flow.run({"words": "cat"}))["translate"].append("mutated")
    assert (await flow.run({"words": "cat"}))["translate"] == ["CAT"]


async def test_identical_map_items_run_once_concurrently() -> None:
    calls: list[Any] = []
    cache = Cache()
    flow = counting_flow(cache, calls, map_step=True, wait=1)
    result = await flow.run({"words": ["a", "b", "a", "a", "b"]})
    assert sorted(calls) == ["a", "b"]
    assert result["translate"] == [["A"], ["B"], ["A"], ["A"], ["B"]]
    assert cache.statistics().in_flight == 0


@pytest.mark.trio_only
async def test_single_flight_takes_one_call_time() -> None:
    calls: list[Any] = []
    flow = counting_flow(Cache(), calls, map_step=True, wait=5)
    started = trio.current_time()
    await flow.run({"words": ["a"] * 10})
    assert trio.current_time() - started == 5
    assert calls == ["a"]


@pytest.mark.trio_only
async def test_entries_expire_after_ttl_in_virtual_time() -> None:
    calls: list[Any] = []
    flow = counting_flow(Cache(ttl=10, clock=trio.current_time), calls)
    await flow.run({"words": "cat"})
    await trio.sleep(9)
    await flow.run({"words": "cat"})
    assert calls == ["cat"]
    await trio.sleep(1)
    await flow.run({"words": "cat"})
    assert calls == ["cat", "cat"]


async def test_failures_are_not_cached_and_waiters_try_again() -> None:
    calls: list[int] = []
    flow = trioflow.Flow("flaky")

    @flow.step(map_over="items", cache=Cache())
    async def flaky(items: int) -> int:
        calls.append(items)
        await anyio.sleep(0.01)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        return items * 2

    with pytest.raises(FlowError):
        await flow.run({"items": [7, 7, 7]}, error_handling="continue")
    # the first call failed; one waiter then ran it and the last one got its value
    assert calls == [7, 7]
    result = await flow.run({"items": [7]})
    assert result["flaky"] == [14]
    assert calls == [7, 7]


async def test_a_cancelled_leader_does_not_strand_waiters() -> None:
    calls: list[str] = []
    cache = Cache()

    async def slow(x: str) -> str:
        calls.append(x)
        await anyio.sleep(1)
        return x

    cached = cache.wrap(slow, "slow")
    results: list[str] = []
    async with anyio.create_task_group() as tg:
        async def leader() -> None:
            with anyio.move_on_after(0.1):
                await cached(x="k")

        async def waiter() -> None:
            await anyio.sleep(0.01)
            results.append(await cached(x="k"))

        tg.start_soon(leader)
        tg.start_soon(waiter)
    assert results == ["k"]
    assert calls == ["k", "k"]


async def test_key_function_for_arguments_the_codec_cannot_encode() -> None:
    class Client:
        pass

    calls: list[str] = []
    flow = trioflow.Flow("client")

    @flow.step(cache=Cache(key=lambda client, url: url))
    async def fetch(client: Client, url: str) -> str:
        calls.append(url)
        return url

    await flow.run({"client": Client(), "url": "u"})
    await flow.run({"client": Client(), "url": "u"})
    assert calls == ["u"]

    plain = trioflow.Flow("plain")

    @plain.step(cache=Cache())
    async def fetch2(client: Client, url: str) -> str:
        return url

    with pytest.raises(FlowError) as info:
        await plain.run({"client": Client(), "url": "u"})
    [error] = info.value.exceptions
    assert isinstance(error, trioflow.CodecError)
    assert str(error).startswith("step 'fetch2': cannot make a cache key from its arguments: ")


async def test_maxsize_drops_the_least_recently_used() -> None:
    calls: list[Any] = []
    cache = Cache(maxsize=2)
    flow = counting_flow(cache, calls)
    for word in ["a", "b", "a", "c", "b", "a"]:
        await flow.run({"words": word})
    # a b (a hit) c drops b; b drops a; a again
    assert calls == ["a", "b", "c", "b", "a"]
    assert cache.statistics().size == 2
    cache.clear()
    assert cache.statistics().size == 0


async def test_a_cached_step_keeps_its_name_signature_and_fingerprint() -> None:
    plain = trioflow.Flow("same")
    cached = trioflow.Flow("same")

    async def step(x: int) -> int:
        return x

    plain.add(step)
    cached.add(step, cache=Cache())
    assert cached.plan().fingerprint == plain.plan().fingerprint
    assert (await cached.run({"x": 3}))["step"] == 3


async def test_cache_with_a_store_records_the_cached_value() -> None:
    store = trioflow.MemoryStore()
    calls: list[Any] = []
    flow = counting_flow(Cache(), calls)
    await flow.run({"words": "cat"}, store=store, run_id="a")
    await flow.run({"words": "cat"}, store=store, run_id="b")
    assert calls == ["cat"]
    assert (await store.load("b"))["translate"] == ["CAT"]


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"^Cache\(ttl=...\) must be > 0 seconds, or None for no expiry \(got 0\)$"):
        Cache(ttl=0)
    with pytest.raises(TypeError, match=r"^Cache\(ttl=...\) takes seconds as a number"):
        Cache(ttl="1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^Cache\(maxsize=...\) must be at least 1"):
        Cache(maxsize=0)
    flow = trioflow.Flow("bad")

    async def step() -> None:
        return None

    with pytest.raises(TypeError, match=r"^step 'step': cache= takes a trioflow.Cache \(got 60\); "):
        flow.add(step, cache=60)


# -- entries kept in an SQLiteStore -------------------------------------------------------

PROCESS = """
import sys, trio, trioflow
store = trioflow.SQLiteStore(sys.argv[1])
flow = trioflow.Flow("persistent")

@flow.step(map_over="words", cache=trioflow.Cache(ttl=3600, store=store))
async def translate(words: str) -> str:
    print("called", words)
    return {"cat": "chat", "dog": "chien"}[words]

result = trio.run(flow.run, {"words": sys.argv[2:]})
print("result", result["translate"])
store.close()
"""


def test_a_cache_with_a_store_outlives_the_process(tmp_path: Path) -> None:
    def process(*words: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", PROCESS, str(tmp_path / "cache.db"), *words],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert process("cat", "cat", "cat") == ["called cat", "result ['chat', 'chat', 'chat']"]
    assert process("cat", "dog") == ["called dog", "result ['chat', 'chien']"]
    assert process("dog", "cat") == ["result ['chien', 'chat']"]


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_cache_with_a_threaded_store_on_each_backend(tmp_path: Path, backend: str) -> None:
    """The default store does its database work in worker threads, on real clocks."""
    calls: list[Any] = []

    async def main() -> list[Any]:
        with trioflow.SQLiteStore(tmp_path / "cache.db") as store:
            flow = counting_flow(Cache(store=store), calls, map_step=True, wait=0.01)
            first = await flow.run({"words": ["a", "b", "a"]})
            again = await counting_flow(Cache(store=store), calls, map_step=True).run({"words": ["b", "a"]})
            return [first["translate"], again["translate"]]

    assert anyio.run(main, backend=backend) == [[["A"], ["B"], ["A"]], [["B"], ["A"]]]
    assert sorted(calls) == ["a", "b"]


def inline_store(tmp_path: Path, **options: Any) -> trioflow.SQLiteStore:
    """An SQLiteStore without threads: deterministic in virtual time."""
    return trioflow.SQLiteStore(tmp_path / "cache.db", threaded=False, fsync=False, **options)


def cache_rows(path: Path) -> list[tuple[str, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT step, stored_at FROM cache ORDER BY stored_at").fetchall()
    finally:
        conn.close()


@pytest.mark.trio_only
async def test_store_entries_expire_and_expired_ones_are_deleted(tmp_path: Path) -> None:
    calls: list[Any] = []
    with inline_store(tmp_path) as store:
        flow = counting_flow(Cache(ttl=10, clock=trio.current_time, store=store), calls)
        await flow.run({"words": "cat"})
        await trio.sleep(5)
        await flow.run({"words": "dog"})
        # a new Cache (nothing in memory) on the same store: hits until the ttl is up
        fresh = Cache(ttl=10, clock=trio.current_time, store=store)
        flow = counting_flow(fresh, calls)
        await trio.sleep(4)
        assert (await flow.run({"words": "cat"}))["translate"] == ["CAT"]
        assert calls == ["cat", "dog"]
        assert fresh.statistics() == trioflow.CacheStatistics(hits=1, misses=0, size=1, in_flight=0)
        await trio.sleep(1)
        await flow.run({"words": "cat"})
        assert calls == ["cat", "dog", "cat"]
        assert [at for _, at in cache_rows(tmp_path / "cache.db")] == [5.0, 10.0]
        await trio.sleep(5)  # dog, stored at 5, has expired: storing cow deletes it
        await flow.run({"words": "cow"})
    rows = cache_rows(tmp_path / "cache.db")
    assert [at for _, at in rows] == [10.0, 15.0]
    assert all(step.startswith("translate\0") for step, _ in rows)


@pytest.mark.trio_only
async def test_identical_calls_with_a_store_run_and_store_once(tmp_path: Path) -> None:
    calls: list[Any] = []
    with inline_store(tmp_path) as store:
        cache = Cache(store=store)
        flow = counting_flow(cache, calls, map_step=True, wait=1)
        result = await flow.run({"words": ["a", "b", "a", "a"]})
    assert result["translate"] == [["A"], ["B"], ["A"], ["A"]]
    assert sorted(calls) == ["a", "b"]
    assert len(cache_rows(tmp_path / "cache.db")) == 2


@pytest.mark.trio_only
async def test_a_value_the_store_cannot_keep_fails_the_step(tmp_path: Path) -> None:
    flow = trioflow.Flow("unkeepable")

    class Handle:
        pass

    @flow.step(cache=Cache(store=inline_store(tmp_path)))
    async def open_handle() -> Handle:
        return Handle()

    with pytest.raises(FlowError) as info:
        await flow.run()
    [error] = info.value.exceptions
    assert isinstance(error, trioflow.CodecError)
    assert str(error).startswith(
        "step 'open_handle' returned a value of type "
        "test_a_value_the_store_cannot_keep_fails_the_step.<locals>.Handle that its cache's store "
        "cannot keep with the 'json' codec: cannot encode value of type "
    )
    assert cache_rows(tmp_path / "cache.db") == []


@pytest.mark.trio_only
async def test_a_key_function_with_a_store_must_return_json_data(tmp_path: Path) -> None:
    calls: list[str] = []
    flow = trioflow.Flow("keyed")

    @flow.step(cache=Cache(key=lambda url: object(), store=inline_store(tmp_path)))
    async def fetch(url: str) -> str:
        calls.append(url)
        return url

    with pytest.raises(FlowError) as info:
        await flow.run({"url": "u"})
    [error] = info.value.exceptions
    assert isinstance(error, trioflow.CodecError)
    assert str(error).startswith("step 'fetch': Cache(key=...) returned <object object at ")
    assert "which a Cache with a store cannot keep: " in str(error)
    assert calls == []  # refused before the function ran


@pytest.mark.trio_only
async def test_an_entry_stored_with_another_codec_is_a_clear_error(tmp_path: Path) -> None:
    calls: list[Any] = []
    with inline_store(tmp_path, codec=trioflow.PickleCodec()) as pickled:
        await counting_flow(Cache(store=pickled), calls).run({"words": "cat"})
    with inline_store(tmp_path) as store:
        flow = counting_flow(Cache(store=store), calls)
        with pytest.raises(FlowError) as info:
            await flow.run({"words": "cat"})
    [error] = info.value.exceptions
    assert isinstance(error, StoreError)
    assert str(error) == (
        f"the cache entry of step 'translate' in {str(tmp_path / 'cache.db')!r} was stored with "
        f"the 'pickle' codec, and this store uses 'json'; give the Cache a store with the codec "
        f"that wrote it"
    )
    assert calls == ["cat"]


@pytest.mark.trio_only
async def test_purge_deletes_the_entries_of_its_steps_from_the_store(tmp_path: Path) -> None:
    calls: list[Any] = []
    with inline_store(tmp_path) as store:
        cache = Cache(store=store)
        flow = counting_flow(cache, calls)
        other = Cache(store=store)  # another step's entries, in the same store
        kept = trioflow.Flow("kept")

        @kept.step(cache=other)
        async def shout(word: str) -> str:
            return word.upper()

        await kept.run({"word": "hi"})
        await flow.run({"words": "cat"})
        await flow.run({"words": "dog"})
        assert await cache.purge() == 2
        assert cache.statistics().size == 0
        await flow.run({"words": "cat"})
        assert calls == ["cat", "dog", "cat"]
        assert len(cache_rows(tmp_path / "cache.db")) == 2  # shout's, and cat's again
    assert await Cache().purge() == 0


def test_a_cache_store_must_be_an_sqlite_store(tmp_path: Path) -> None:
    assert Cache().clock is time.monotonic
    with inline_store(tmp_path) as store:  # entries are compared across processes: wall-clock time
        assert Cache(store=store).clock is time.time
        assert repr(Cache(ttl=5, store=store)) == (
            f"Cache(ttl=5, maxsize=1024, key=None, clock=<built-in function time>, store={store!r})"
        )
    with pytest.raises(TypeError, match=r"^Cache\(store=...\) takes a trioflow.SQLiteStore or trioflow.PostgresStore "
                       r"whose database keeps the entries, or None to keep them in memory only \(got <trioflow.MemoryStore"):
        Cache(store=trioflow.MemoryStore())  # type: ignore[arg-type]
