"""Retry policy: pure arithmetic, no async.

The wait before attempt ``k + 1`` (``k >= 1``) is
``min(max_wait, wait * backoff ** (k - 1))`` plus ``uniform(0, jitter)``. The
jitter draw comes from an RNG derived from ``(seed, step name, item index,
attempt)``, so it never depends on the order in which steps happen to run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs

from ._exceptions import GraphError


def _check_retry_on(value: object) -> None:
    if not isinstance(value, tuple | type) and callable(value):
        return  # a predicate: callable(exception) -> bool
    if not isinstance(value, tuple | type):
        raise TypeError(
            f"Retry(retry_on=...) takes an Exception subclass, a tuple of them, or a "
            f"predicate callable(exception) -> bool (got {value!r}); for example "
            f"retry_on=(TimeoutError, ConnectionError)"
        )
    types = value if isinstance(value, tuple) else (value,)
    if not types:
        raise GraphError(
            "Retry(retry_on=()) retries no exception at all; give the exception types to retry, "
            "for example retry_on=(TimeoutError, ConnectionError), or use max_attempts=1 for no retry"
        )
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise TypeError(
                f"Retry(retry_on=...) takes an Exception subclass or a tuple of them "
                f"(got {value!r}); for example retry_on=(TimeoutError, ConnectionError)"
            )


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
        retry_on: exception type or tuple of types that trigger a retry, or a
            predicate ``callable(exception) -> bool`` that reads the error (a
            status code, a message); other exceptions fail the step at once.
            Cancellation is never retried.
        wait_from: ``callable(exception) -> float | None`` that reads the wait
            from the error (an HTTP 429's ``Retry-After``): a number is the wait
            before the next attempt, capped by ``max_wait``, with no jitter
            added; ``None`` falls back on the backoff rule.

    Example:
        >>> Retry(max_attempts=4, wait=0.5).delay(3, jitter_draw=0.0)
        2.0
    """

    max_attempts: int = 1
    wait: float = 0.0
    backoff: float = 2.0
    max_wait: float = 60.0
    jitter: float = 0.0
    retry_on: type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] = Exception
    wait_from: Callable[[Exception], float | None] | None = None

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
        _check_retry_on(self.retry_on)
        if self.wait_from is not None and not callable(self.wait_from):
            raise TypeError(
                f"Retry(wait_from=...) takes a callable(exception) -> float | None "
                f"(got {self.wait_from!r})"
            )

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether ``error`` raised by ``attempt`` (1-based) earns another attempt.

        A ``retry_on`` predicate is called only while attempts are left; what it
        raises propagates (the caller fails the step with it).
        """
        if attempt >= self.max_attempts or not isinstance(error, Exception):
            return False
        retry_on = self.retry_on
        if isinstance(retry_on, tuple | type):
            return isinstance(error, retry_on)
        answer = retry_on(error)
        if not isinstance(answer, bool):
            raise TypeError(
                f"Retry(retry_on=...) predicate {retry_on!r} must return True or False "
                f"(got {answer!r} for {error!r})"
            )
        return answer

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

    def wait_after(self, error: Exception, attempt: int, *, seed: int, step: str, item: int | None) -> float:
        """Seconds to wait after ``attempt`` failed with ``error``.

        ``wait_from(error)`` when it gives a number (capped by ``max_wait``, no
        jitter), else :meth:`delay_for`.

        Raises:
            TypeError: ``wait_from`` returned something that is not a number or None.
            ValueError: ``wait_from`` returned a negative or NaN number.
        """
        if self.wait_from is not None:
            seconds = self.wait_from(error)
            if seconds is not None:
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise TypeError(
                        f"Retry(wait_from=...) {self.wait_from!r} must return a number of "
                        f"seconds or None (got {seconds!r} for {error!r})"
                    )
                if math.isnan(seconds) or seconds < 0:
                    raise ValueError(
                        f"Retry(wait_from=...) {self.wait_from!r} returned {seconds!r} for "
                        f"{error!r}; a wait must be >= 0 seconds"
                    )
                return float(min(self.max_wait, seconds))
        return self.delay_for(attempt, seed=seed, step=step, item=item)


NO_RETRY = Retry()


def next_wait(
    retry: Retry | None, error: Exception, attempt: int, *, seed: int, step: str, item: int | None
) -> tuple[float | None, Exception]:
    """Whether and how long to wait before another attempt, as ``(wait, error)``.

    ``wait`` is ``None`` when the unit fails now; ``error`` is what it fails
    with: ``error`` itself, or the exception a ``retry_on`` predicate or
    ``wait_from`` raised (chained to ``error``), so a broken policy is never
    swallowed.
    """
    if retry is None:
        return None, error
    try:
        if not retry.should_retry(error, attempt):
            return None, error
        return retry.wait_after(error, attempt, seed=seed, step=step, item=item), error
    except Exception as policy_error:
        policy_error.__cause__ = error
        return None, policy_error
