"""``runner="thread"``: a plain function called in a worker thread."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

from ._runners import current_run_scope


def check_plain(fn: Callable[..., Any], step: str, runner: str) -> None:
    """Raise :class:`TypeError` unless ``fn`` is a plain (not async) callable.

    ``runner``: how the runner reads in ``runner=...`` (``"'thread'"``, ``"DaskRunner(...)"``).
    """
    if inspect.iscoroutine(fn):
        fn.close()
        raise TypeError(f"step {step!r}: runner={runner} takes a plain function, not a coroutine object")
    if not callable(fn):
        raise TypeError(f"step {step!r}: runner={runner} takes a plain function (got {fn!r})")
    target = inspect.unwrap(fn) if inspect.isfunction(fn) else fn
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - instances with async __call__
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"step {step!r}: runner={runner} runs plain functions, but {step!r} is an async "
            f"function; drop runner= to run it on the event loop, or define it with 'def'"
        )
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(f"step {step!r}: runner={runner} takes a plain function, not a generator function")


class ThreadRunner:
    """Calls the step's plain function in a worker thread (``anyio.to_thread.run_sync``).

    Threads come from a limiter of the run's own (as many as the run's
    ``max_concurrent``; unlimited when it has none), not from anyio's default
    of 40 shared by the whole process. A thread cannot be interrupted: when the
    step is cancelled, the run waits for the function to return, then the step
    counts as cancelled and its value is dropped.
    """

    name = "thread"

    def __repr__(self) -> str:
        return "<trioflow runner 'thread'>"

    def check(self, fn: Callable[..., Any], step: str) -> None:
        check_plain(fn, step, "'thread'")

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        scope = current_run_scope()
        limiter = scope.state.get(self)
        if limiter is None:
            limiter = scope.state[self] = anyio.CapacityLimiter(scope.capacity)
        value = await anyio.to_thread.run_sync(_call, fn, kwargs, limiter=limiter)
        # the thread ran to its end even if the step was cancelled meanwhile; a
        # cancelled step must not count as succeeded
        await anyio.lowlevel.checkpoint_if_cancelled()
        return value


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return fn(**kwargs)


THREAD = ThreadRunner()
