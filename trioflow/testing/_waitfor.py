"""The wait-for graph of a trio run: which task waits for a resource held by which.

A task blocked in :meth:`trio.Lock.acquire` (also :class:`trio.StrictFIFOLock`,
and :class:`trio.Condition`, whose ``acquire`` and the end of whose ``wait``
take its lock) waits for the lock's owner; a task blocked in
:meth:`trio.CapacityLimiter.acquire` waits for the limiter's borrowers. Both
are read from the primitives' (private) fields and the blocked task's await
frames, only when the harness looks for a cycle. A cycle in this graph is a
deadlock of its tasks whatever the other tasks do: none of them can ever go on.

:class:`trio.Semaphore` has no owner (any task may release it), so a wait on
one adds no edge; a deadlock through semaphores is still found once every
task is blocked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import trio
import trio.lowlevel
from trio import _sync as _trio_sync

__all__ = ["Wait", "find_cycle"]

_LOCK_ACQUIRE: Final = _trio_sync._LockImpl.acquire.__code__
_LIMITER_ACQUIRE: Final = _trio_sync.CapacityLimiter.acquire_on_behalf_of.__code__


@attrs.frozen
class Wait:
    """One edge of a cycle: *task* waits for *resource*, held by *holder*."""

    task: trio.lowlevel.Task
    resource: object
    holder: trio.lowlevel.Task


def _waiting_for(task: trio.lowlevel.Task) -> tuple[object, list[Any]] | None:
    """The resource *task* is blocked acquiring and its holders, if it is one we know."""
    if task._abort_func is None:  # runnable, or running
        return None
    for frame, _ in task.iter_await_frames():
        code = frame.f_code
        if code is _LOCK_ACQUIRE:
            lock = frame.f_locals.get("self")
            owner = getattr(lock, "_owner", None)
            return (lock, [owner]) if owner is not None else None
        if code is _LIMITER_ACQUIRE:
            limiter = frame.f_locals.get("self")
            return limiter, list(getattr(limiter, "_borrowers", ()))
    return None


def find_cycle(tasks: Iterable[trio.lowlevel.Task], labels: Mapping[Any, str]) -> list[Wait] | None:
    """A cycle of tasks (among *tasks*) each waiting for a resource the next one holds."""
    edges: dict[trio.lowlevel.Task, tuple[object, list[trio.lowlevel.Task]]] = {}
    for task in tasks:
        found = _waiting_for(task)
        if found is not None:
            resource, holders = found
            edges[task] = (resource, [h for h in holders if h in labels and h is not task])
    if len(edges) < 2:
        return None
    done: set[trio.lowlevel.Task] = set()
    for start in edges:
        if start in done:
            continue
        path: list[trio.lowlevel.Task] = []
        on_path: dict[trio.lowlevel.Task, int] = {}
        cycle = _search(start, edges, path, on_path, done)
        if cycle is not None:
            return cycle
    return None


def _search(
    task: trio.lowlevel.Task,
    edges: Mapping[trio.lowlevel.Task, tuple[object, list[trio.lowlevel.Task]]],
    path: list[trio.lowlevel.Task],
    on_path: dict[trio.lowlevel.Task, int],
    done: set[trio.lowlevel.Task],
) -> list[Wait] | None:
    if task in on_path:
        members = path[on_path[task] :]
        waits = []
        for i, member in enumerate(members):
            nxt = members[(i + 1) % len(members)]
            waits.append(Wait(member, edges[member][0], nxt))
        return waits
    if task in done or task not in edges:
        return None
    on_path[task] = len(path)
    path.append(task)
    for holder in edges[task][1]:
        found = _search(holder, edges, path, on_path, done)
        if found is not None:
            return found
    path.pop()
    del on_path[task]
    done.add(task)
    return None


def describe_resource(resource: object) -> str:
    """``trio.Lock`` / ``trio.CapacityLimiter(2)`` and so on, without addresses."""
    kind = type(resource)
    name = f"{kind.__module__.replace('trio._sync', 'trio')}.{kind.__qualname__}"
    if isinstance(resource, trio.CapacityLimiter):
        return f"{name}({resource.total_tokens!r})"
    return name
