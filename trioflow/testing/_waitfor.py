"""The wait-for graph of a trio run: which task waits for a resource held by which.

A task blocked in :meth:`trio.Lock.acquire` (also :class:`trio.StrictFIFOLock`,
and :class:`trio.Condition`, whose ``acquire`` and the end of whose ``wait``
take its lock) waits for the lock's owner; a task blocked in
:meth:`trio.CapacityLimiter.acquire` waits for the limiter's borrowers (any
one of them to let a slot go); a task waiting at the end of a nursery block
waits for its child tasks (all of them). These are read from
the primitives' (private) fields and the blocked task's await frames, only
when the harness looks for a cycle. Tasks that can never go on, whatever the
other tasks do, form a cycle in this graph.

:class:`trio.Semaphore` has no owner (any task may release it), so a wait on
one adds no edge; a deadlock through semaphores is still found once every
task is blocked.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import trio
import trio.lowlevel
from trio import _sync as _trio_sync
from trio._core import _run as _trio_run

__all__ = ["Wait", "find_cycle"]

# (older trios wrap these for KeyboardInterrupt protection: the frames are the originals')
_LOCK_ACQUIRE: Final = inspect.unwrap(_trio_sync._LockImpl.acquire).__code__
_LIMITER_ACQUIRE: Final = inspect.unwrap(_trio_sync.CapacityLimiter.acquire_on_behalf_of).__code__
_CHILDREN: Final = inspect.unwrap(_trio_run.Nursery._nested_child_finished).__code__


@attrs.frozen
class Wait:
    """One edge of a cycle: *task* waits for *resource*, held by *holder*."""

    task: trio.lowlevel.Task
    resource: object
    holder: trio.lowlevel.Task


@attrs.frozen
class _Blocked:
    resource: object
    holders: tuple[object, ...]  # tasks, or other borrowers (a thread's placeholder)
    all_of: bool  # True: waits for every holder (children); False: for any one to let go


def _waiting_for(task: trio.lowlevel.Task) -> _Blocked | None:
    """What *task* is blocked on, if it is a wait the graph knows."""
    if task._abort_func is None:  # runnable, or running
        return None
    for frame, _ in task.iter_await_frames():
        code = frame.f_code
        if code is _LOCK_ACQUIRE:
            lock = frame.f_locals.get("self")
            owner = getattr(lock, "_owner", None)
            return _Blocked(lock, (owner,), False) if owner is not None else None
        if code is _LIMITER_ACQUIRE:
            limiter = frame.f_locals.get("self")
            return _Blocked(limiter, tuple(getattr(limiter, "_borrowers", ())), False)
        if code is _CHILDREN:
            nursery = frame.f_locals.get("self")
            children = tuple(getattr(nursery, "child_tasks", ()))
            return _Blocked(nursery, children, True) if children else None
    return None


def _has_deadline(task: trio.lowlevel.Task) -> bool:
    """Whether a deadline (or a cancellation) will wake *task* anyway."""
    status = task._cancel_status
    return status is not None and status.effective_deadline() != math.inf


def find_cycle(tasks: Iterable[trio.lowlevel.Task], labels: Mapping[Any, str]) -> list[Wait] | None:
    """A cycle of tasks (among *tasks*) that can never go on, each waiting for the next.

    A task waiting for a lock is stuck if the lock's owner is; one waiting for
    a limiter, if every borrower is (any one could let a slot go); one waiting
    for its child tasks, if any child is. Tasks with a pending deadline (or
    already cancelled) are never stuck. What remains of that fixpoint holds a
    cycle of waits, which is returned.
    """
    waits: dict[trio.lowlevel.Task, _Blocked] = {}
    for task in tasks:
        blocked = _waiting_for(task)
        if blocked is not None and not _has_deadline(task):
            waits[task] = blocked
    if len(waits) < 2:
        return None
    stuck = set(waits)
    changed = True
    while changed:
        changed = False
        for task in list(stuck):
            blocked = waits[task]
            if blocked.all_of:
                free = not any(h in stuck for h in blocked.holders)
            else:
                free = not blocked.holders or any(h not in stuck for h in blocked.holders)
            if free:
                stuck.discard(task)
                changed = True
    if not stuck or not any(not waits[t].all_of for t in stuck):
        return None
    # follow waits inside the stuck set until a task repeats: that is the cycle
    start = next(t for t in waits if t in stuck and not waits[t].all_of)
    path: list[trio.lowlevel.Task] = []
    seen: dict[trio.lowlevel.Task, int] = {}
    task = start
    while task not in seen:
        seen[task] = len(path)
        path.append(task)
        task = next(h for h in waits[task].holders if h in stuck)
    members = path[seen[task] :]
    return [
        Wait(member, waits[member].resource, members[(i + 1) % len(members)])
        for i, member in enumerate(members)
    ]


def describe_resource(resource: object) -> str:
    """``trio.Lock`` / ``trio.CapacityLimiter(2)`` and so on, without addresses."""
    if isinstance(resource, trio.Nursery):
        return "nursery (its child tasks to finish)"
    kind = type(resource)
    name = f"{kind.__module__.replace('trio._sync', 'trio')}.{kind.__qualname__}"
    if isinstance(resource, trio.CapacityLimiter):
        return f"{name}({resource.total_tokens!r})"
    return name
