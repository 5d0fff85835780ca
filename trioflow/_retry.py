"""Retry policy: pure arithmetic, no async.

The wait before attempt ``k + 1`` (``k >= 1``) is
``min(max_wait, wait * backoff ** (k - 1))`` plus ``uniform(0, jitter)``. The
jitter draw comes from an RNG derived from ``(seed, step name, item index,
attempt)``, so it never depends on the order in which steps happen to run.
"""

from __future__ import annotations

import math
import random

import attrs

from ._exceptions import GraphError


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise TypeError(
                f"Retry(retry_on=...) takes an Exception subclass or a tuple of them "
                f"(got {value!r}); for example retry_on=(TimeoutError, ConnectionError)"
            )
    return types


def _non_negative_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Retry({name}=...) must be a number (got {value!r} that is a {type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise GraphError(f"Retry({name}=...) must be a finite number >= 0 (got {value!r})")


@attrs.frozen
class Retry:
    """How a failing step (or map item) is tried again.

    Args:
        max_attempts: total attempts, at least 1 (1 means no retry).
        wait: seconds before the second attempt.
        backoff: factor applied to the wait after each further failure (>= 1).
        max_wait: cap on the exponential part of the wait.
        jitter: an extra ``uniform(0, jitter)`` seconds, drawn reproducibly
            from the run's ``seed``.
        retry_on: exception type or tuple of types that trigger a retry; other
            exceptions fail the step at once. Cancellation is never retried.

    Example:
        >>> Retry(max_attempts=4, wait=0.5).delay(3, jitter_draw=0.0)
        2.0
    """

    max_attempts: int = 1
    wait: float = 0.0
    backoff: float = 2.0
    max_wait: float = 60.0
    jitter: float = 0.0
    retry_on: type[Exception] | tuple[type[Exception], ...] = Exception

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"Retry(max_attempts=...) must be an int (got {self.max_attempts!r} that is a "
                f"{type(self.max_attempts).__name__})"
            )
        if self.max_attempts < 1:
            raise GraphError(
                f"Retry(max_attempts={self.max_attempts!r}) must be at least 1 "
                f"(1 means a single attempt, no retry)"
            )
        for name in ("wait", "max_wait", "jitter", "backoff"):
            _non_negative_number(name, getattr(self, name))
        if self.backoff < 1:
            raise GraphError(f"Retry(backoff={self.backoff!r}) must be >= 1 (1 keeps the wait constant)")
        _exception_types(self.retry_on)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether ``error`` raised by ``attempt`` (1-based) earns another attempt."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    def delay(self, attempt: int, *, jitter_draw: float) -> float:
        """Seconds to wait after failed ``attempt`` (1-based), given a jitter draw in [0, 1)."""
        return self._base(attempt) + self.jitter * jitter_draw

    def _base(self, attempt: int) -> float:
        """``min(max_wait, wait * backoff ** (attempt - 1))``, capped before the power is taken.

        ``backoff ** (attempt - 1)`` overflows a float long before an attempt
        count stops making sense, so the exponent is compared with the cap in
        logarithms first: any attempt count works.
        """
        wait, backoff, cap = self.wait, self.backoff, self.max_wait
        if wait == 0 or cap == 0:
            return 0.0 if wait == 0 else min(cap, wait)
        if backoff == 1 or attempt <= 1:
            return min(cap, wait)
        if (attempt - 1) * math.log(backoff) >= math.log(cap / wait):
            return cap
        return min(cap, wait * backoff ** (attempt - 1))

    def delay_for(self, attempt: int, *, seed: int, step: str, item: int | None) -> float:
        """:meth:`delay` with the jitter drawn from ``(seed, step, item, attempt)``."""
        if not self.jitter:
            return self.delay(attempt, jitter_draw=0.0)
        rng = random.Random(f"{seed}\x00{step}\x00{item}\x00{attempt}")
        return self.delay(attempt, jitter_draw=rng.random())


NO_RETRY = Retry()
