"""Waiting in a rate limit's or keyed limiter's line, on trio or asyncio.

:func:`wait_turn` is for a task that waits for itself (a retry's token, an item
of :func:`trioflow.map`); the scheduler lets units of a flow wait without a
task of their own (see ``Run._admit`` in :mod:`trioflow._scheduler`). Both let
waiters through with :meth:`Line.grant <trioflow._limits.Line.grant>`, best
first, so they share one line.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import anyio
import trio

from ._limits import Gate, Line, Waiter, next_sequence


def current_domain() -> object:
    """The event loop that is running (instants of its clock mean something only there)."""
    try:
        return trio.lowlevel.current_root_task()
    except RuntimeError:
        import asyncio  # imported already: the run is on asyncio

        return asyncio.get_running_loop()


def line_for(gate: Gate, key: Hashable) -> Line:
    return gate._line(key if gate.keyed else None, current_domain())


async def wait_turn(line: Line, sort: tuple[Any, ...], be: Any) -> None:
    """Wait until ``line`` lets this task through (a token taken, or a keyed slot held).

    Always a checkpoint: the waiter joins the line first, so that the tasks
    that ask at the same instant are let through in priority order, not in the
    order they happened to run. The caller gives a keyed slot back with
    :func:`give_back`. Cancellation while waiting leaves the line as it was.
    """
    granted = False
    event = anyio.Event()

    def grant() -> None:
        nonlocal granted
        granted = True
        event.set()

    waiter = Waiter((*sort, next_sequence()), grant, event)
    line.push(waiter)
    try:
        await be.checkpoint()  # let every task asking at this instant join the line
        while True:
            now = be.current_time()
            line.grant(now)  # whoever is due, best first: maybe this task, maybe others
            if granted:
                return
            with be.cancel_scope(deadline=line.next_time(now)):
                await event.wait()
            if granted:
                return
    except BaseException:
        if granted:  # let through at the very moment it was cancelled: give the slot back
            give_back(line, be)
        else:
            waiter.alive = False
        raise


def give_back(line: Line, be: Any) -> None:
    """Give back a keyed slot and let the next waiter of that key through."""
    line.release()
    if line.heap:
        line.grant(be.current_time())
