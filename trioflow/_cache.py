"""``trioflow.Cache``: memoize a step's output across runs, by step and input values.

``@flow.step(cache=trioflow.Cache(ttl=600))`` wraps the step function when the
step is declared. A call whose step and arguments match an earlier successful
call (within ``ttl``) returns that call's value without running the function;
concurrent identical calls (the items of a map step, or concurrent runs of one
flow) run the function once and share its value (*single flight*). Failures
are never cached: the callers that were waiting try again, one at a time.

Entries live in memory; with ``store=`` an :class:`SQLiteStore` they are also
written to its database, so they outlive the process.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import anyio
import attrs
import trio

from ._codec import CodecError, JSONCodec
from ._exceptions import StoreError
from ._inputs import current_resources
from ._isolation import isolate
from ._public import public_home
from ._scheduler import current_backend
from ._stores import PostgresStore, SQLiteStore

__all__ = ["Cache", "CacheStatistics"]

_Key = tuple[str, Hashable]


@attrs.frozen
class CacheStatistics:
    """What a :class:`Cache` did: ``hits`` (in memory or in its store), ``misses``
    (calls that ran the function), ``size`` (entries held in memory) and
    ``in_flight`` (calls running now)."""

    hits: int
    misses: int
    size: int
    in_flight: int


def _check_ttl(_: object, __: object, ttl: Any) -> None:
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"Cache(ttl=...) takes seconds as a number, or None for no expiry (got {ttl!r})")
    if not ttl > 0 or math.isnan(ttl):
        raise ValueError(f"Cache(ttl=...) must be > 0 seconds, or None for no expiry (got {ttl!r})")


def _check_maxsize(_: object, __: object, maxsize: Any) -> None:
    if maxsize is None:
        return
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"Cache(maxsize=...) takes an int or None (got {maxsize!r})")
    if maxsize < 1:
        raise ValueError(f"Cache(maxsize=...) must be at least 1, or None for no limit (got {maxsize!r})")


def _check_store(_: object, __: object, store: Any) -> None:
    if store is not None and not isinstance(store, SQLiteStore | PostgresStore):
        raise TypeError(
            f"Cache(store=...) takes a trioflow.SQLiteStore or trioflow.PostgresStore whose database "
            f"keeps the entries, or None to keep them in memory only (got {store!r})"
        )


@attrs.define(eq=False)
class Cache:
    """A memo table for steps: give it as ``@flow.step(cache=trioflow.Cache(...))``.

    Entries are keyed by the step (its name and function) and the values of its
    arguments, encoded with :class:`~trioflow.JSONCodec` (so equal values give
    equal keys, and ``1`` and ``"1"`` differ). One ``Cache`` can serve several
    steps and flows. A hit returns a copy of mutable values (like
    ``isolation="copy"``), so a caller that mutates what it got never changes
    the cache.

    Entries live in this object, in memory. With ``store=``, they are also
    written to that :class:`~trioflow.SQLiteStore`'s (or :class:`~trioflow.PostgresStore`'s) database (encoded by its
    codec), so they outlive the process: a later process with a ``Cache`` on the
    same file finds them. A value the store's codec cannot encode fails the
    step, with a :exc:`~trioflow.CodecError` naming it.

    Single flight works within one process and one event loop.

    Args:
        ttl: seconds an entry stays valid, or ``None`` (default) for no expiry.
            With a store, storing an entry also deletes the step's entries
            older than ``ttl``.
        maxsize: at most this many entries in memory, least recently used
            dropped first; ``None`` for no limit. Default 1024. (A store keeps
            every entry until it expires.)
        key: a function called with the step's arguments (as keywords) that
            returns a hashable key, for arguments the codec cannot encode (a
            client object, say): ``key=lambda client, url: url``. With a
            store, the key must be JSON data (a string, a tuple of them, ...).
        clock: where ``ttl`` time comes from: by default :func:`time.monotonic`,
            or :func:`time.time` with a store (entries carry the time they were
            stored, and must compare across processes). Pass
            ``trio.current_time`` to test expiry in virtual time.
        store: an :class:`~trioflow.SQLiteStore` that keeps the entries too,
            or ``None`` (default) to keep them in memory only.

    Example:
        >>> import trio, trioflow
        >>> cache = trioflow.Cache(ttl=3600)
        >>> flow = trioflow.Flow("translate")
        >>> @flow.step(cache=cache)
        ... async def french(text: str) -> str:
        ...     return "le " + text
        >>> async def twice():
        ...     await flow.run({"text": "chat"})
        ...     return await flow.run({"text": "chat"})
        >>> trio.run(twice)["french"], cache.statistics().hits
        ('le chat', 1)
    """

    ttl: float | None = attrs.field(default=None, validator=_check_ttl)
    maxsize: int | None = attrs.field(default=1024, validator=_check_maxsize)
    key: Callable[..., Hashable] | None = attrs.field(default=None)
    clock: Callable[[], float] = attrs.field(default=None)
    store: SQLiteStore | PostgresStore | None = attrs.field(default=None, validator=_check_store, kw_only=True)
    _entries: OrderedDict[_Key, tuple[float, Any]] = attrs.field(init=False, factory=OrderedDict, repr=False)
    _in_flight: dict[_Key, trio.Event | anyio.Event] = attrs.field(init=False, factory=dict, repr=False)
    _hits: int = attrs.field(init=False, default=0, repr=False)
    _misses: int = attrs.field(init=False, default=0, repr=False)
    _identities: set[str] = attrs.field(init=False, factory=set, repr=False)  # of the steps wrapped

    def __attrs_post_init__(self) -> None:
        if self.key is not None and not callable(self.key):
            raise TypeError(f"Cache(key=...) takes a function of the step's arguments (got {self.key!r})")
        if self.clock is None:
            self.clock = time.monotonic if self.store is None else time.time
        if not callable(self.clock):
            raise TypeError(f"Cache(clock=...) takes a function returning seconds (got {self.clock!r})")

    def statistics(self) -> CacheStatistics:
        """Hits, misses, size and calls in flight, as a frozen object."""
        return CacheStatistics(self._hits, self._misses, len(self._entries), len(self._in_flight))

    def clear(self) -> None:
        """Drop every entry held in memory (calls in flight still finish, and keep theirs).

        Entries in the ``store`` stay there: :meth:`purge` deletes those too.
        """
        self._entries.clear()

    async def purge(self) -> int:
        """Drop every entry in memory, and delete from the ``store`` every entry of the steps this cache serves.

        For when a step's function changed what it returns while keeping its
        name: entries are keyed by the step's name and function name, not its code.

        Returns:
            How many entries were deleted from the store (0 without a store).
        """
        self._entries.clear()
        if self.store is None:
            await current_backend().checkpoint()
            return 0
        return await self.store._cache_delete(sorted(self._identities))

    def _make_key(self, step: str, kwargs: dict[str, Any]) -> Hashable:
        if self.key is not None:
            try:
                return ("key", self.key(**kwargs))
            except Exception as exc:
                raise TypeError(f"step {step!r}: Cache(key=...) failed on the step's arguments: {exc!r}") from exc
        shared = current_resources.get()  # resources (clients, pools) are no part of the key
        try:
            data = _KEY_CODEC.encode(dict(sorted(i for i in kwargs.items() if i[0] not in shared)))
        except CodecError as exc:
            raise CodecError(
                f"step {step!r}: cannot make a cache key from its arguments: {exc}; pass "
                f"Cache(key=lambda ...: ...) to say what identifies a call"
            ) from exc
        return hashlib.sha256(data).digest()

    def _store_key(self, key: _Key, step: str) -> bytes:
        """``key`` as the store's primary key: a digest of the step identity and the call key."""
        identity, call = key
        if isinstance(call, bytes):
            data = call
        else:  # ("key", what Cache(key=...) returned)
            assert isinstance(call, tuple)
            try:
                data = b"key\0" + _KEY_CODEC.encode(call[1])
            except CodecError as exc:
                raise CodecError(
                    f"step {step!r}: Cache(key=...) returned {call[1]!r}, which a Cache with a store "
                    f"cannot keep: {exc}; return JSON data (strings, numbers, tuples of them)"
                ) from exc
        return hashlib.sha256(identity.encode() + b"\0" + data).digest()

    async def _load(self, key: _Key, stored: bytes, step: str, store: SQLiteStore | PostgresStore) -> tuple[bool, Any]:
        """Look ``key`` up in the store (as ``stored``); a hit is also kept in memory."""
        entry = await store._cache_get(stored)
        if entry is None:
            return False, None
        data, codec, stored_at = entry
        if self.ttl is not None and self.clock() - stored_at >= self.ttl:
            return False, None
        what = f"the cache entry of step {step!r} in {getattr(store, 'path', store)!r}"
        if codec != store.codec.name:
            raise StoreError(
                f"{what} was stored with the {codec!r} codec, and this store uses "
                f"{store.codec.name!r}; give the Cache a store with the codec that wrote it"
            )
        try:
            value = store.codec.decode(data)
        except Exception as exc:
            raise StoreError(f"cannot decode {what}: {exc}") from exc
        self._keep(key, stored_at, value)
        return True, value

    async def _save(
        self, key: _Key, stored: bytes, step: str, value: Any, stored_at: float, store: SQLiteStore | PostgresStore
    ) -> None:
        codec = store.codec
        try:
            data = codec.encode(value)
        except Exception as exc:
            raise CodecError(
                f"step {step!r} returned a value of type {type(value).__qualname__} that its cache's "
                f"store cannot keep with the {codec.name!r} codec: {exc}"
            ) from exc
        expired_before = None if self.ttl is None else stored_at - self.ttl
        await store._cache_put(stored, key[0], data, stored_at, expired_before)

    def _get(self, key: _Key) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        stored_at, value = entry
        if self.ttl is not None and self.clock() - stored_at >= self.ttl:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def _keep(self, key: _Key, stored_at: float, value: Any) -> None:
        """Hold a copy of ``value`` in memory, as the newest entry."""
        self._entries[key] = (stored_at, isolate(value))
        self._entries.move_to_end(key)
        if self.maxsize is not None:
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def wrap(self, fn: Callable[..., Any], step: str) -> Callable[..., Any]:
        """``fn`` (an async function called with keyword arguments), memoized as step ``step``.

        Flows call this when a step is declared with ``cache=``; the result keeps
        ``fn``'s name and signature. Calling it is always a checkpoint.
        """
        identity = f"{step}\0{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        self._identities.add(identity)

        @functools.wraps(fn)
        async def cached(**kwargs: Any) -> Any:
            key = (identity, self._make_key(step, kwargs))
            while True:
                found, value = self._get(key)
                if found:
                    self._hits += 1
                    await current_backend().checkpoint()
                    return isolate(value)
                event = self._in_flight.get(key)
                if event is None:
                    break
                await event.wait()  # single flight: the same call is running; share its value
            event = self._in_flight[key] = (
                trio.Event() if current_backend().name == "trio" else anyio.Event()
            )
            store = self.store
            try:
                if store is not None:
                    stored = self._store_key(key, step)
                    found, value = await self._load(key, stored, step, store)
                    if found:
                        self._hits += 1
                        return value
                self._misses += 1
                value = await fn(**kwargs)
                stored_at = self.clock()
                if store is not None:
                    await self._save(key, stored, step, value, stored_at, store)
                self._keep(key, stored_at, value)
            finally:
                del self._in_flight[key]
                event.set()  # waiters find the value, or (after a failure) try themselves
            return value

        return cached


_KEY_CODEC = JSONCodec()


public_home(Cache, CacheStatistics)  # trioflow imports them when first used
