"""``trioflow.race``: hedged calls, the first success wins.

The staggered start is trio's happy-eyeballs rule (``trio.open_tcp_stream``):
call ``k + 1`` starts ``stagger`` seconds after call ``k`` started, or at once
when call ``k`` fails, whichever comes first. The first call to succeed wins
and the others are cancelled at their next await. The cancellation lands one
scheduling batch after the first success: the calls that succeed before it
lands (those woken by the same clock tick, say) are settled by argument order,
so among them the winner does not depend on the order the batch runs in. A
call that succeeds at the same virtual instant only after a further await may
or may not beat the cancellation, depending on the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel

from ._context import StepContext, _current, current_or_none
from ._exceptions import FlowError, GraphError, add_note, unwrapped
from ._map import _check_async, _fn_name
from ._public import public_home
from ._results import RunResult, StepResult, StepStatus
from ._scheduler import _cancelled_class, current_backend

__all__ = ["race"]


async def race(*fns: Callable[[], Awaitable[Any]], stagger: float | None = None) -> Any:
    """Return the value of the first call to succeed; cancel the others at once.

    Takes zero-argument async callables, as :func:`trioflow.gather` does (pass
    arguments with :func:`functools.partial`). With ``stagger=None`` every call
    starts at once; with ``stagger=s``, call ``k + 1`` starts ``s`` seconds
    after call ``k`` started, or as soon as call ``k`` fails, whichever comes
    first (trio's happy-eyeballs rule), so a hedge is only paid for when the
    first call is slow or broken. The others are cancelled one scheduling batch
    after the first success; the calls that succeed before that (those woken by
    the same clock tick, say) are settled by argument order. Inside each call,
    :func:`trioflow.current_step`
    gives its name and its argument index as ``item``.

    Works under trio and asyncio. A checkpoint; it returns only when every
    call it started has ended. Cancellation from outside cancels every call
    and propagates as it is.

    Args:
        fns: async functions taking no arguments, at least one.
        stagger: seconds between starts (>= 0), or ``None`` to start all at once.

    Returns:
        The winning call's value.

    Raises:
        FlowError: every call failed; it holds each failure in argument order,
            and ``.result`` has one :class:`~trioflow.StepResult` per call
            named ``"<function name>[<argument index>]"``.
        TypeError: an argument is not an async function, or ``stagger`` is not a number.
        GraphError: no functions, or ``stagger`` is negative or NaN.

    Example:
        >>> import functools, trio, trioflow
        >>> async def ask(server: str, seconds: float) -> str:
        ...     await trio.sleep(seconds)
        ...     return server
        >>> trio.run(trioflow.race, functools.partial(ask, "slow", 2.0), functools.partial(ask, "fast", 1.0))
        'fast'
    """
    for i, fn in enumerate(fns):
        _check_async(fn, f"trioflow.race (argument {i})")
    if not fns:
        raise GraphError("trioflow.race() needs at least one function to call")
    if stagger is not None:
        if isinstance(stagger, bool) or not isinstance(stagger, int | float):
            raise TypeError(
                f"trioflow.race(stagger=...) must be a number of seconds or None "
                f"(got {stagger!r} that is a {type(stagger).__name__})"
            )
        if math.isnan(stagger) or stagger < 0:
            raise GraphError(f"trioflow.race(stagger={stagger!r}) must be >= 0 seconds, or None")
    be = current_backend()
    on_trio = be.name == "trio"
    parent = current_or_none()
    n = len(fns)
    names = [f"{_fn_name(fn)}[{i}]" for i, fn in enumerate(fns)]
    started: list[float | None] = [None] * n
    finished: list[float | None] = [None] * n
    errors: dict[int, Exception] = {}
    wins: dict[int, Any] = {}
    usages: list[dict[str, float]] = [{} for _ in range(n)]

    await be.checkpoint()
    race_started = be.current_time()
    async with unwrapped(be.open_nursery(), _cancelled_class(be), "trioflow.race") as nursery:

        async def settle() -> None:
            # let every call that ends at this instant report first, then cancel the rest
            if on_trio:
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                await anyio.lowlevel.cancel_shielded_checkpoint()
            nursery.cancel_scope.cancel()

        async def call(i: int, failed: Any) -> None:
            fn = fns[i]
            started[i] = be.current_time()
            name, run_id = (_fn_name(fn), None) if parent is None else (parent.name, parent.run_id)
            token = _current.set(StepContext(name, 1, i, run_id, usages[i]))
            try:
                value = await fn()
            except Exception as exc:
                add_note(exc, f"trioflow: race call {i} ({names[i]!r}) failed")
                errors[i] = exc
                finished[i] = be.current_time()
                failed.set()
                return
            finally:
                _current.reset(token)
                if parent is not None and usages[i]:
                    parent.add_usage(**usages[i])
            finished[i] = be.current_time()
            if not wins:
                nursery.start_soon(settle)
            wins[i] = value

        for i in range(n):
            failed = anyio.Event()
            nursery.start_soon(call, i, failed)
            if stagger is not None and i + 1 < n:
                with be.cancel_scope(deadline=be.current_time() + stagger):
                    await failed.wait()
            if wins:
                break
    if wins:
        return wins[min(wins)]
    steps = {}
    for i in range(n):
        error = errors.get(i)
        status = StepStatus.FAILED if error is not None else StepStatus.CANCELLED
        steps[names[i]] = StepResult(
            name=names[i], status=status, error=error, attempts=1 if started[i] is not None else 0,
            started_at=started[i], finished_at=finished[i], usage=usages[i],
        )
    result = RunResult(flow="trioflow.race", steps=steps, started_at=race_started, finished_at=be.current_time())
    failed_list = [errors[i] for i in sorted(errors)]
    raise FlowError(f"trioflow.race: all {n} call{'s' if n > 1 else ''} failed", failed_list, result)


public_home(race)  # trioflow imports it when first used
