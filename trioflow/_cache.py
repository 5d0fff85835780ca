"""``trioflow.Cache``: memoize a step's output across runs, by step and input values.

``@flow.step(cache=trioflow.Cache(ttl=600))`` wraps the step function when the
step is declared. A call whose step and arguments match an earlier successful
call (within ``ttl``) returns that call's value without running the function;
concurrent identical calls (the items of a map step, or concurrent runs of one
flow) run the function once and share its value (*single flight*). Failures
are never cached: the callers that were waiting try again, one at a time.
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
from ._isolation import isolate
from ._scheduler import current_backend

__all__ = ["Cache", "CacheStatistics"]

_Key = tuple[str, Hashable]


@attrs.frozen
class CacheStatistics:
    """What a :class:`Cache` did: ``hits``, ``misses`` (calls that ran the
    function), ``size`` (entries held) and ``in_flight`` (calls running now)."""

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


@attrs.define(eq=False)
class Cache:
    """A memo table for steps: give it as ``@flow.step(cache=trioflow.Cache(...))``.

    Entries are keyed by the step (its name and function) and the values of its
    arguments, encoded with :class:`~trioflow.JSONCodec` (so equal values give
    equal keys, and ``1`` and ``"1"`` differ). One ``Cache`` can serve several
    steps and flows; entries live in this object, in memory, for as long as it
    does. A hit returns a copy of mutable values (like ``isolation="copy"``),
    so a caller that mutates what it got never changes the cache.

    The cache lives in one process and one event loop at a time.

    Args:
        ttl: seconds an entry stays valid, or ``None`` (default) for no expiry.
        maxsize: at most this many entries, least recently used dropped first;
            ``None`` for no limit. Default 1024.
        key: a function called with the step's arguments (as keywords) that
            returns a hashable key, for arguments the codec cannot encode (a
            client object, say): ``key=lambda client, url: url``.
        clock: where ``ttl`` time comes from (default :func:`time.monotonic`).
            Pass ``trio.current_time`` to test expiry in virtual time.

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
    clock: Callable[[], float] = attrs.field(default=time.monotonic)
    _entries: OrderedDict[_Key, tuple[float, Any]] = attrs.field(init=False, factory=OrderedDict)
    _in_flight: dict[_Key, trio.Event | anyio.Event] = attrs.field(init=False, factory=dict)
    _hits: int = attrs.field(init=False, default=0)
    _misses: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.key is not None and not callable(self.key):
            raise TypeError(f"Cache(key=...) takes a function of the step's arguments (got {self.key!r})")
        if not callable(self.clock):
            raise TypeError(f"Cache(clock=...) takes a function returning seconds (got {self.clock!r})")

    def statistics(self) -> CacheStatistics:
        """Hits, misses, size and calls in flight, as a frozen object."""
        return CacheStatistics(self._hits, self._misses, len(self._entries), len(self._in_flight))

    def clear(self) -> None:
        """Drop every entry (calls in flight still finish, and store theirs)."""
        self._entries.clear()

    def _make_key(self, step: str, kwargs: dict[str, Any]) -> Hashable:
        if self.key is not None:
            try:
                return ("key", self.key(**kwargs))
            except Exception as exc:
                raise TypeError(f"step {step!r}: Cache(key=...) failed on the step's arguments: {exc!r}") from exc
        try:
            data = _KEY_CODEC.encode(dict(sorted(kwargs.items())))
        except CodecError as exc:
            raise CodecError(
                f"step {step!r}: cannot make a cache key from its arguments: {exc}; pass "
                f"Cache(key=lambda ...: ...) to say what identifies a call"
            ) from exc
        return hashlib.sha256(data).digest()

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

    def _put(self, key: _Key, value: Any) -> None:
        self._entries[key] = (self.clock(), isolate(value))
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
            self._misses += 1
            try:
                value = await fn(**kwargs)
                self._put(key, value)
            finally:
                del self._in_flight[key]
                event.set()  # waiters find the value, or (after a failure) try themselves
            return value

        return cached


_KEY_CODEC = JSONCodec()
