"""Rate limits and keyed limits: pure arithmetic and waiting lines, no async.

:class:`RateLimit` is a token bucket of capacity ``burst`` (default ``calls``)
that starts full and refills continuously at ``calls / per`` tokens per
second; every attempt takes one token as it starts. The arithmetic is the
generic cell rate algorithm, which is the token bucket counted in time rather
than in tokens: the bucket keeps the *theoretical arrival time* ``tat`` of the
next token, one ``interval = per / calls`` apart, and a token is available at
``max(now, tat - (burst - 1) * interval)``. So the instants at which tokens
become available are sums of ``interval``, exact in virtual time, and a waiter
sleeps until exactly that instant (no polling, no rounding drift).

:class:`KeyedLimiter` lets at most ``per_key`` holders of one key run at once;
keys are independent.

Each bucket (and each key's slot count) has a :class:`Line` of waiters, best
first: whoever grants (the scheduler when a slot frees or a token is due, or a
waiting task when its instant comes) pops the head while tokens or slots allow
and calls its callback. A waiter either takes its token or slot as it is let
through (a task that waits for itself), or is only woken with it *promised*
and takes it as it starts (a unit of a flow, which goes back to its run's
ready queue); a promise holds back the other woken waiters, never one who
takes at once. A waiter's priority is chosen by the
caller: for steps of a flow, the longest remaining path, then declaration and
item order, so the order does not depend on the schedule. The async side
lives in :mod:`trioflow._scheduler` and :mod:`trioflow._waiting`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from typing import Any

from ._exceptions import GraphError

__all__ = ["KeyedLimiter", "Line", "RateLimit", "TokenBucket", "Waiter"]


class TokenBucket:
    """A token bucket (capacity ``burst``, ``1 / interval`` tokens per second), starting full."""

    __slots__ = ("burst", "interval", "tat", "tolerance")

    def __init__(self, interval: float, burst: int) -> None:
        self.burst = burst
        self.interval = interval
        self.tolerance = (burst - 1) * interval
        self.tat = -math.inf  # theoretical arrival time of the next token: full

    def available_at(self, now: float) -> float:
        """The earliest instant (>= ``now``) at which a token can be taken."""
        return max(now, self.tat - self.tolerance)

    def take(self, now: float) -> None:
        """Take one token at ``now`` (which must be >= :meth:`available_at`)."""
        self.tat = max(self.tat, now) + self.interval

    def holds(self, now: float, count: float) -> bool:
        """Whether ``count`` tokens could all be taken at ``now``."""
        return max(self.tat, now) + (count - 1) * self.interval - self.tolerance <= now


class Waiter:
    """One place in a :class:`Line`: a priority, and what to call when granted."""

    __slots__ = ("alive", "grant", "owner", "sort", "takes")

    def __init__(
        self, sort: tuple[Any, ...], grant: Callable[[], object], owner: object, takes: bool = True
    ) -> None:
        self.sort = sort
        self.grant = grant
        self.owner = owner  # who to purge on cancellation (a run, a task)
        self.alive = True
        # True: the token or slot is taken for the waiter as it is let through.
        # False: the waiter is only woken, with it *promised*, and takes it as it
        # starts (the scheduler's units, which may start later, when a slot frees)
        self.takes = takes

    def __lt__(self, other: Waiter) -> bool:
        # waiters that hold a slot meanwhile (they take at once) go first
        if self.takes is not other.takes:
            return self.takes
        return self.sort < other.sort


class Line:
    """The waiters for one bucket or one key's slots, best first."""

    __slots__ = ("bucket", "capacity", "heap", "in_use", "promised", "watchers")

    def __init__(self, bucket: TokenBucket | None, capacity: int | None) -> None:
        self.bucket = bucket  # a rate limit's bucket, or None
        self.capacity = capacity  # a keyed limiter's slots per key, or None
        self.in_use = 0
        self.promised = 0  # tokens or slots promised to woken waiters not yet started
        # called when a promise is settled (its token taken or given back): whoever
        # grants may let the next waiter through
        self.watchers: dict[int, Callable[[], object]] = {}
        self.heap: list[Waiter] = []

    def _prune(self) -> None:
        heap = self.heap
        while heap and not heap[0].alive:
            heapq.heappop(heap)

    def ready(self, now: float, takes: bool = True) -> bool:
        """Whether one more can pass at ``now`` (a token or a slot is free).

        A token or slot promised to a woken waiter is only a hint against waking
        too many: one who takes it now (``takes``) does not count it, so a
        promise never holds back a unit that starts now, nor a waiter that holds
        a slot meanwhile.
        """
        if self.capacity is not None:
            return self.in_use + (0 if takes else self.promised) < self.capacity
        assert self.bucket is not None
        return self.bucket.holds(now, 1 if takes else self.promised + 1)

    def take(self, now: float) -> None:
        if self.capacity is not None:
            self.in_use += 1
        else:
            assert self.bucket is not None
            self.bucket.take(now)

    def try_take(self, now: float) -> bool:
        """Take a token or slot for one who starts at ``now``, if one is free (what is
        promised to woken waiters does not count, as in :meth:`ready`)."""
        capacity = self.capacity
        if capacity is not None:
            if self.in_use < capacity:
                self.in_use += 1
                return True
            return False
        bucket = self.bucket
        assert bucket is not None
        tat = bucket.tat if bucket.tat > now else now
        if tat - bucket.tolerance <= now:
            bucket.tat = tat + bucket.interval
            return True
        return False

    def settle(self) -> None:
        """A woken waiter took its promised token, or gave it back."""
        self.promised -= 1
        for watcher in list(self.watchers.values()):
            watcher()

    def release(self) -> None:
        """Give back a keyed slot (rate tokens are never given back)."""
        if self.capacity is not None:
            self.in_use -= 1

    def push(self, waiter: Waiter) -> None:
        heapq.heappush(self.heap, waiter)

    def grant(self, now: float) -> None:
        """Let waiters through, best first, while tokens or slots allow."""
        heap = self.heap
        while True:
            self._prune()
            if not heap or not self.ready(now, heap[0].takes):
                return
            waiter = heapq.heappop(heap)
            waiter.alive = False
            if waiter.takes:
                self.take(now)
            else:
                self.promised += 1
            waiter.grant()

    def next_time(self, now: float) -> float:
        """When the head waiter can next be let through by time alone (inf: never,
        or not by time: a keyed slot frees when a holder ends)."""
        self._prune()
        bucket = self.bucket
        if not self.heap or bucket is None:
            return math.inf
        if self.heap[0].takes:
            return bucket.available_at(now)
        if self.promised >= bucket.burst:
            return math.inf  # (promised tokens are taken, or given back, before more are)
        return max(now, bucket.tat + self.promised * bucket.interval - bucket.tolerance)

    def purge(self, owner: object) -> None:
        """Drop every waiter of ``owner`` (a run or task that was cancelled)."""
        kept = [w for w in self.heap if w.alive and w.owner is not owner]
        for w in self.heap:
            if w.owner is owner:
                w.alive = False
        if len(kept) != len(self.heap):
            heapq.heapify(kept)
            self.heap = kept


def _positive_number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GraphError(f"{what} must be a number > 0 (got {value!r} that is a {type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise GraphError(f"{what} must be a finite number > 0 (got {value!r})")
    return float(value)


class _Lines:
    """Lines by key, for one limiter, reset when used from another event loop
    (its clock's instants mean nothing there)."""

    __slots__ = ("domain", "lines")

    def __init__(self) -> None:
        self.domain: object = None
        self.lines: dict[Hashable, Line] = {}

    def get(self, key: Hashable, domain: object, make: Callable[[], Line]) -> Line:
        if domain is not self.domain:
            self.domain = domain
            self.lines = {}
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = make()
        return line


class RateLimit:
    """A token bucket: at most ``calls`` attempts per ``per`` seconds, bursts up to ``burst``.

    Use it as a named limiter (``limiters={"openai": RateLimit(calls=500,
    per=60.0)}`` with ``@flow.step(limiter="openai")``) or as ``limiter=`` of
    :func:`trioflow.map` and :func:`trioflow.gather`. The bucket holds
    ``burst`` tokens (default ``calls``), starts full and refills continuously
    at ``calls / per`` tokens per second; every attempt, retries included,
    takes one token as it starts. A step waiting for a token holds no capacity
    slot, and waiting steps get tokens in priority order (longest remaining
    path, then declaration and item order). The object *is* the bucket: pass
    the same one to several runs (or ``map``/``gather`` calls) and they share
    it, as with a ``CapacityLimiter``.

    With ``keyed=True`` each key has its own bucket; the step gives the key
    with ``limit_key=``.

    Args:
        calls: tokens per ``per`` seconds (> 0).
        per: the period in seconds (> 0).
        burst: the bucket's capacity, an int >= 1 (default: ``calls``, rounded up).
        keyed: one bucket per key (``limit_key=``) instead of one in all.

    Raises:
        GraphError: ``calls <= 0``, ``per <= 0`` or ``burst < 1``.

    Example:
        >>> RateLimit(calls=2, per=1.0).interval
        0.5
    """

    def __init__(self, calls: float, per: float = 1.0, burst: int | None = None, *, keyed: bool = False) -> None:
        self.calls: float = _positive_number("RateLimit(calls=...)", calls)
        self.per: float = _positive_number("RateLimit(per=...)", per)
        if burst is None:
            burst = max(1, math.ceil(self.calls))
        elif isinstance(burst, bool) or not isinstance(burst, int):
            raise GraphError(
                f"RateLimit(burst=...) must be an int >= 1 or None (got {burst!r} that is a "
                f"{type(burst).__name__})"
            )
        if burst < 1:
            raise GraphError(f"RateLimit(burst={burst!r}) must be at least 1 (the bucket's capacity)")
        if not isinstance(keyed, bool):
            raise TypeError(f"RateLimit(keyed=...) must be True or False (got {keyed!r})")
        self.burst = burst
        self.keyed = keyed
        self.interval: float = self.per / self.calls
        self._lines = _Lines()

    def __repr__(self) -> str:
        keyed = ", keyed=True" if self.keyed else ""
        return f"RateLimit(calls={self.calls:g}, per={self.per:g}, burst={self.burst}{keyed})"

    def _line(self, key: Hashable, domain: object) -> Line:
        """The waiting line of ``key``'s bucket (``None`` when not keyed)."""
        return self._lines.get(key, domain, self._new_line)

    def _new_line(self) -> Line:
        return Line(TokenBucket(self.interval, self.burst), None)


class KeyedLimiter:
    """At most ``per_key`` attempts with the same key run at once; keys are independent.

    Use it as a named limiter with ``limit_key=``: ``limiters={"host":
    KeyedLimiter(per_key=2)}`` and ``@flow.step(map_over="urls", limiter="host",
    limit_key=lambda urls: urlsplit(urls).netloc)``. ``limit_key`` is called
    with the step's keyword arguments (for a map step, the item under the
    mapped parameter's name) and returns a hashable key. The object is one
    limiter: runs given the same object share its per-key slots.

    Args:
        per_key: slots per key, an int >= 1.

    Raises:
        GraphError: ``per_key < 1``.
    """

    keyed = True

    def __init__(self, per_key: int) -> None:
        if isinstance(per_key, bool) or not isinstance(per_key, int):
            raise GraphError(
                f"KeyedLimiter(per_key=...) must be an int >= 1 (got {per_key!r} that is a "
                f"{type(per_key).__name__})"
            )
        if per_key < 1:
            raise GraphError(f"KeyedLimiter(per_key={per_key!r}) must be at least 1")
        self.per_key = per_key
        self._lines = _Lines()

    def __repr__(self) -> str:
        return f"KeyedLimiter(per_key={self.per_key})"

    def _line(self, key: Hashable, domain: object) -> Line:
        """The waiting line of ``key``'s slots."""
        return self._lines.get(key, domain, self._new_line)

    def _new_line(self) -> Line:
        return Line(None, self.per_key)

    def in_use(self, key: Hashable) -> int:
        """How many holders of ``key`` run now (for tests and statistics)."""
        line = self._lines.lines.get(key)
        return 0 if line is None else line.in_use


Gate = RateLimit | KeyedLimiter

_sequence = itertools.count()


def next_sequence() -> int:
    """A tie-breaker for waiters of equal priority: first come, first served."""
    return next(_sequence)
