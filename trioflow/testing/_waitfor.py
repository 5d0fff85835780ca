"""The wait-for graph of a trio run: which task waits for a resource held by which.

A task blocked in :meth:`trio.Lock.acquire` (also :class:`trio.StrictFIFOLock`,
and :class:`trio.Condition`, whose ``acquire`` takes its lock, as does the end
of its ``wait`` once notified; and a wrapper that parks on a trio lock's queue
itself, as anyio's ``Lock(fast_acquire=True)`` does) waits for the lock's owner; a task blocked in
:meth:`trio.CapacityLimiter.acquire` waits for the limiter's borrowers (any
one of them to let a slot go); a task waiting at the end of a nursery block
waits for its child tasks (all of them). These are read from the primitives'
(private) fields and the blocked task's await frames, only when the harness
looks for a cycle. Tasks that can never go on, whatever the other tasks do,
form a cycle in this graph, and are reported as soon as it forms.

Some waits have no owner, so they add no edge: a wait that only another task
can end, but *any* task could (so the graph cannot be sure nobody will):

* :class:`trio.Semaphore`: any task may release it, not only one that
  acquired it (a semaphore is often a signal between tasks: a producer
  releases what consumers acquire). A task blocked in ``acquire`` is stuck
  only if no task that is still able to run will ever release, which depends
  on what those tasks will do, not on what they hold.
* :meth:`trio.Condition.wait` before a notify: any task may take the
  condition's lock and notify.
* :meth:`trio.Event.wait`, channels, and :func:`trio.lowlevel.wait_task_rescheduled`.

Such a deadlock is reported once every task is blocked with no deadline
pending (the harness's all-blocked detector), with each blocked task, the
primitive it waits on in words (:func:`describe_wait`: a semaphore's value,
a condition that was notified while nobody waited), and its line. Beside a
task that keeps running (a heartbeat), the run ends at its step or time
budget, and the :class:`~trioflow.testing.BudgetExceededError` lists the
tasks blocked the longest, with the same descriptions.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from types import CodeType
from typing import Any, Final

import attrs
import trio
import trio.lowlevel
from trio import _sync as _trio_sync
from trio._core import _run as _trio_run

__all__ = [
    "GRAPH_WAITS",
    "Notify",
    "Wait",
    "describe_resource",
    "describe_wait",
    "find_cycle",
    "install_notify_hook",
    "restore_notify_hook",
]

# (older trios wrap these for KeyboardInterrupt protection: the frames are the originals')
_LOCK_ACQUIRE: Final = inspect.unwrap(_trio_sync._LockImpl.acquire).__code__
_LIMITER_ACQUIRE: Final = inspect.unwrap(_trio_sync.CapacityLimiter.acquire_on_behalf_of).__code__
_CHILDREN: Final = inspect.unwrap(_trio_run.Nursery._nested_child_finished).__code__
_CONDITION_WAIT: Final = inspect.unwrap(_trio_sync.Condition.wait).__code__
_SEMAPHORE_ACQUIRE: Final = inspect.unwrap(_trio_sync.Semaphore.acquire).__code__
_PARK: Final = inspect.unwrap(trio.lowlevel.ParkingLot.park).__code__


def _nested(code: CodeType) -> frozenset[CodeType]:
    return frozenset(const for const in code.co_consts if isinstance(const, CodeType))


#: The code of the abort functions of the only waits the graph has edges for: a
#: task parked on a :class:`trio.lowlevel.ParkingLot` (every lock, limiter and
#: condition wait parks there) or waiting for a nursery's children. A task blocked
#: with any other abort function (a sleep, an event, a channel) is never part of
#: a cycle, so the harness looks at the frames of none of them (see
#: ``Controller._check_cycle``; the canary checks that both sets are there).
GRAPH_WAITS: Final = _nested(_PARK) | _nested(_CHILDREN)


def _lock_of_lot(lot: object, owners: list[object]) -> object | None:
    """The trio lock whose queue of waiters is *lot*, among *owners* and what they hold.

    A wrapper can park on a lock's queue itself, without calling
    :meth:`trio.Lock.acquire` (anyio's ``Lock(fast_acquire=True)`` does, on
    trio): the lock is then an attribute of the wrapper, one of the ``self``
    objects of the awaiting frames (*owners*).
    """
    for owner in owners:
        if isinstance(owner, _trio_sync._LockImpl) and owner._lot is lot:
            return owner
        names: list[str] = list(getattr(owner, "__dict__", ()))
        for kind in type(owner).__mro__:
            slots = kind.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name.startswith("__") and not name.endswith("__"):
                    name = f"_{kind.__name__.lstrip('_')}{name}"  # (name-mangled)
                names.append(name)
        for name in names:
            held = getattr(owner, name, None)
            if isinstance(held, _trio_sync._LockImpl) and held._lot is lot:
                return held
    return None


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
    owners: list[object] = []
    for frame, _ in task.iter_await_frames():
        code = frame.f_code
        if code is _PARK:
            lock = _lock_of_lot(frame.f_locals.get("self"), owners)
            owner = getattr(lock, "_owner", None)
            return _Blocked(lock, (owner,), False) if owner is not None else None
        owners.append(frame.f_locals.get("self"))
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
        if code is _CONDITION_WAIT:
            # notified (moved to the lock's queue): it waits for the lock's owner;
            # before that, for a notify that any task could send: no edge
            lock = getattr(frame.f_locals.get("self"), "_lock", None)
            owner = getattr(lock, "_owner", None)
            if owner is not None and task in _parked(getattr(lock, "_lot", None)):
                return _Blocked(lock, (owner,), False)
            return None
    return None


def _parked(lot: object) -> Mapping[Any, None]:
    parked = getattr(lot, "_parked", None)
    return parked if isinstance(parked, Mapping) else {}


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


@attrs.define(eq=False)
class Notify:
    """A notify of a :class:`trio.Condition` that woke nobody (recorded by the harness)."""

    by: str
    time: float
    count: int = 1


def describe_wait(
    task: trio.lowlevel.Task, labels: Mapping[Any, str], lost: Mapping[int, Notify]
) -> str | None:
    """What a blocked *task* waits for, in words, when it waits on a primitive of trio's.

    *lost* maps ``id(condition)`` to the last notify of that condition that
    found no task waiting.
    """
    if task._abort_func is None:
        return None

    def name(holder: object) -> str:
        return labels.get(holder, getattr(holder, "name", repr(holder)))

    owners: list[object] = []
    for frame, _ in task.iter_await_frames():
        code = frame.f_code
        this = frame.f_locals.get("self")
        if code is _PARK:
            lock = _lock_of_lot(this, owners)
            if lock is not None:
                owner = getattr(lock, "_owner", None)
                held = f"held by {name(owner)}" if owner is not None else "free"
                return f"waits for a {describe_resource(lock)} {held}"
            return None
        owners.append(this)
        if code is _LOCK_ACQUIRE:
            owner = getattr(this, "_owner", None)
            held = f"held by {name(owner)}" if owner is not None else "free"
            return f"waits for a {describe_resource(this)} {held}"
        if code is _LIMITER_ACQUIRE:
            borrowers = ", ".join(sorted(name(b) for b in getattr(this, "_borrowers", ())))
            return f"waits for a slot of a {describe_resource(this)} borrowed by {borrowers or 'nobody'}"
        if code is _SEMAPHORE_ACQUIRE and isinstance(this, trio.Semaphore):
            return (
                f"waits for a {describe_resource(this)} of value {this.value} (a semaphore has no "
                f"owner: any task may release it, so the harness cannot tell who would)"
            )
        if code is _CONDITION_WAIT and isinstance(this, trio.Condition):
            lock = getattr(this, "_lock", None)
            owner = getattr(lock, "_owner", None)
            if owner is not None and task in _parked(getattr(lock, "_lot", None)):
                return f"was notified, and waits for the lock of its trio.Condition, held by {name(owner)}"
            text = "waits for a notify of a trio.Condition"
            notify = lost.get(id(this))
            if notify is not None:
                times = "once" if notify.count == 1 else f"{notify.count} times"
                text += (
                    f"; it was notified {times} while no task waited (last by {notify.by} at "
                    f"virtual time {notify.time!r}): a lost wakeup? Check the condition's "
                    f"predicate while holding its lock, in a loop around wait()"
                )
            return text
    return None


def describe_resource(resource: object) -> str:
    """``trio.Lock`` / ``trio.CapacityLimiter(2)`` and so on, without addresses."""
    if isinstance(resource, trio.Nursery):
        return "nursery (its child tasks to finish)"
    kind = type(resource)
    name = f"{kind.__module__.replace('trio._sync', 'trio')}.{kind.__qualname__}"
    if isinstance(resource, trio.CapacityLimiter):
        return f"{name}({resource.total_tokens!r})"
    if isinstance(resource, trio.Semaphore) and resource.max_value is not None:
        return f"{name}(max_value={resource.max_value!r})"
    return name


# -- notifies that woke nobody ------------------------------------------------------

_original_notify: Final = _trio_sync.Condition.notify
_original_notify_all: Final = _trio_sync.Condition.notify_all


_recorders: list[Callable[[trio.Condition], None]] = []


@functools.wraps(_original_notify)
def _notify(self: trio.Condition, n: int = 1) -> None:
    if _recorders and not self.statistics().tasks_waiting:
        _recorders[-1](self)
    _original_notify(self, n)


@functools.wraps(_original_notify_all)
def _notify_all(self: trio.Condition) -> None:
    if _recorders and not self.statistics().tasks_waiting:
        _recorders[-1](self)
    _original_notify_all(self)


def install_notify_hook(record: Callable[[trio.Condition], None]) -> None:
    """Call *record* with each :class:`trio.Condition` notified while no task waits on it."""
    _recorders[:] = [record]
    _trio_sync.Condition.notify = _notify  # type: ignore[method-assign]
    _trio_sync.Condition.notify_all = _notify_all  # type: ignore[method-assign]


def restore_notify_hook() -> None:
    """Undo :func:`install_notify_hook`."""
    _recorders.clear()
    _trio_sync.Condition.notify = _original_notify  # type: ignore[method-assign]
    _trio_sync.Condition.notify_all = _original_notify_all  # type: ignore[method-assign]
