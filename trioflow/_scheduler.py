"""The scheduler: runs a compiled :class:`~trioflow._graph.Plan` on trio or asyncio.

Design, in short:

* Each step has a counter of unfinished dependencies. When it reaches zero the
  step (or, for a map step, each of its items) becomes a *unit* in the ready
  queue, keyed by ``(-rank, declaration index, item index)``: the step with the
  longest remaining cost-weighted path goes first, ties by declaration order.
* Units that need the same internal limiters (named ``int`` limiters, a map
  step's own ``max_concurrent``) share a *group*. The ready queue is a heap of
  groups keyed by their best unit; a group whose limiter is full is parked on
  that limiter and comes back when a slot frees, so a blocked unit never holds
  up a runnable one and nothing is rescanned.
* Workers are tasks in one nursery. A worker runs a unit, records it, pushes
  the units that became ready, takes the best one for itself and spawns new
  workers for the rest while the run's capacity allows. A chain of steps thus
  runs in one task, and a step waiting for its dependencies holds no slot.
* ``fail_fast`` cancels the nursery's scope: every running step is cancelled at
  its next await. ``FlowError`` is raised after the nursery has closed.

On trio the hot path uses trio's own primitives; on any other backend it uses
anyio's, so flows run inside asyncio applications too.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import itertools
import math
import operator
import secrets
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.lowlevel
import attrs
import trio

from . import _logging
from ._context import StepContext, _current
from ._context import label as _label
from ._exceptions import FlowError, add_note, split_escaped
from ._foreign import explain
from ._graph import Node, Plan
from ._hooks import Attempt, call_through, installed_hooks
from ._isolation import _ATOMS, isolate
from ._limits import Gate, KeyedLimiter, Line, RateLimit, Waiter, next_sequence
from ._results import LazySteps, RunResult, RunTrace, StepFunctions, StepResult, StepStatus
from ._retry import next_wait
from ._runners import enter_run, exit_run
from ._waiting import current_domain, wait_turn

if TYPE_CHECKING:
    from . import _events as _ev
    from ._events import Event
else:

    class _Events:
        """trioflow's event classes, imported when a run first sends one (a run
        with no ``on_event`` sends none, and ``import trioflow`` stays cheap)."""

        def __getattr__(self, name: str) -> Any:
            from . import _events

            value = getattr(_events, name)
            setattr(self, name, value)  # found directly from now on
            return value

    _ev = _Events()


class Limiter(Protocol):
    """What trioflow needs of a capacity limiter (trio's or anyio's ``CapacityLimiter``)."""

    @property
    def total_tokens(self) -> float: ...

    async def acquire(self) -> None: ...

    def release(self) -> None: ...


_NO_USAGE: Mapping[str, float] = MappingProxyType({})
_SKIPPED = StepStatus.SKIPPED
_SUCCEEDED = StepStatus.SUCCEEDED
_UNREAD: Any = object()  # a unit's limit key, before limit_key is called
_ITEM_BITS = (1 << 32) - 1  # the bits of a unit's heap key that tell one item of a map step

# A run's recorder hook: called as (name, status, value, kept, error, attempts,
# started_at, finished_at, usage) the moment a step reaches its final status:
# the fields of the step's StepResult, and ``kept``, what the on_value hook
# returned for the value of a succeeded plain step (else None). ``usage`` is the
# step's live dict: copy it to keep it.
Recorder = Callable[
    [str, StepStatus, Any, Any, "BaseException | None", int, "float | None", "float | None", dict[str, float]],
    object,
]

# a worker running quick steps back to back yields to the scheduler this often
YIELD_EVERY = 16
# Fail-fast's cancellation waits, in quiescent mode, until every task has been
# blocked this long (real seconds): longer than the workers settling at the same
# instant wait (no cushion), so trio wakes them first (see Run._cancel_all).
_AFTER_SETTLING = 1e-9

# Set by trioflow.testing while it drives a run in virtual time. Several units
# that end at the same virtual instant may then compete for freed slots, and the
# schedule would decide who wins; in quiescent mode a worker takes its next unit
# only once every task is blocked (the instant has settled), and fail-fast
# cancels only then, so slot assignment and same-instant failures do not depend
# on the schedule. Production runs never wait for quiescence: a busy
# application may never be idle.
quiescent_scheduling: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trioflow_quiescent_scheduling", default=False
)
# A declared decision point, set by trioflow.testing beside quiescent mode:
# asked (with the run's nursery) where a worker would settle before taking a
# contended slot, it returns True to settle, or False to take the slot at
# once, as a production run does. The harness lets its schedules decide, so
# it sees both behaviours. If the object also has an async
# ``wait_all_tasks_blocked()``, wait_all_tasks_blocked below uses it (the
# harness's own signal that every task is blocked); if it has a
# ``settle(nursery, fixed)``, that decides, and returns what to await (None:
# go on). Both are also given ``fixed``: None, or a function that says whether
# nothing the run's other tasks may do at this instant can change which unit
# the slot goes to (then the harness need not let them run first).
settle_decision: contextvars.ContextVar[Callable[[Any, Any], bool] | None] = contextvars.ContextVar(
    "trioflow_settle_decision", default=None
)

# The external limiters held by the enclosing steps of this task: id of the
# caller's limiter -> the limiter of capacity 1 that the holding step lends to
# runs nested inside it. Every nested run under that step shares the one lent
# slot, so a nested run cannot deadlock on a limiter its parent holds, nor run
# more steps at once than the parent's slot allows.
_held_limiters: contextvars.ContextVar[Mapping[int, Limiter]] = contextvars.ContextVar(
    "trioflow_held_limiters", default=MappingProxyType({})
)


def quiescent_here(on_trio: bool) -> bool:
    """Whether the engine runs in quiescent mode here: under ``trioflow.testing``,
    on trio, or on another loop that the harness's hooks drive (its asyncio loop)."""
    if not quiescent_scheduling.get():
        return False
    drives: Any = getattr(settle_decision.get(), "drives_current_loop", None)
    return on_trio if drives is None else bool(drives())


async def wait_after_settling() -> None:
    """Quiescent mode: wait until every task is blocked, after the workers settling at
    this instant have gone on (the harness's own wait for that, if it has one): how
    fail-fast's cancellation waits, so that the units due at the instant begin first."""
    wait_last: Any = getattr(settle_decision.get(), "wait_settled_last", None)
    if wait_last is not None:
        await wait_last()
    else:
        from trio.testing import wait_all_tasks_blocked as trio_wait

        await trio_wait(_AFTER_SETTLING)


async def wait_all_tasks_blocked() -> None:
    """Wait until every task is blocked (quiescent mode only, under ``trioflow.testing``).

    The ``wait_all_tasks_blocked`` of the harness's ``settle_decision`` if it
    has one, else :func:`trio.testing.wait_all_tasks_blocked`, imported when
    first used (``import trioflow`` never imports ``trio.testing``, which
    imports pytest)."""
    wait: Any = getattr(settle_decision.get(), "wait_all_tasks_blocked", None)
    if wait is None:
        from trio.testing import wait_all_tasks_blocked as trio_wait

        wait = trio_wait
    await wait()


@attrs.frozen
class Backend:
    """The async primitives the scheduler uses, from trio or from anyio."""

    name: str
    current_time: Callable[[], float]
    checkpoint: Callable[[], Any]
    checkpoint_if_cancelled: Callable[[], Any]
    sleep: Callable[[float], Any]
    open_nursery: Callable[[], Any]
    cancel_scope: Callable[..., Any]


_TRIO = Backend(
    "trio",
    trio.current_time,
    trio.lowlevel.checkpoint,
    trio.lowlevel.checkpoint_if_cancelled,
    trio.sleep,
    trio.open_nursery,
    trio.CancelScope,
)


def current_backend() -> Backend:
    """trio's primitives when running under trio, else anyio's."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return _anyio_backend()
    return _TRIO


# anyio's backend class (asyncio's) -> its primitives, looked up once: anyio's
# public functions find the running library's backend anew on every call
_anyio_backends: dict[type, Backend] = {}


def _anyio_backend() -> Backend:
    try:
        from anyio._core._eventloop import get_async_backend

        backend = get_async_backend()
    except Exception:  # (anyio moved it): its public functions, which look it up per call
        # (made here, not at import: reading them imports anyio's task modules)
        return Backend(
            "anyio",
            anyio.current_time,
            anyio.lowlevel.checkpoint,
            anyio.lowlevel.checkpoint_if_cancelled,
            anyio.sleep,
            anyio.create_task_group,
            anyio.CancelScope,
        )
    found = _anyio_backends.get(backend)
    if found is None:
        found = _anyio_backends[backend] = Backend(
            "anyio",
            backend.current_time,
            backend.checkpoint,
            backend.checkpoint_if_cancelled,
            backend.sleep,
            backend.create_task_group,
            backend.create_cancel_scope,
        )
    return found


class _AlwaysCheck:
    """The probe of a task whose cancel state is not where it is expected: always check."""

    __slots__ = ()
    effectively_cancelled = True


class _AnyioProbe:
    """On asyncio, whether anyio's chain of cancel scopes, from a task's innermost, is cancelled."""

    __slots__ = ("innermost",)

    def __init__(self, scope: Any) -> None:
        self.innermost = weakref.ref(scope)

    @property
    def effectively_cancelled(self) -> bool:
        s = self.innermost()
        while s is not None:
            if s._cancel_called:
                return True
            if s._shield:
                return False
            s = s._parent_scope
        return False


def _cancel_probe(be: Backend) -> Any:
    """A cheap check, for the task calling this, of whether its checkpoint would raise
    cancellation: an object whose ``effectively_cancelled`` says so (when true, or
    when the state is not where it is expected, await the backend's
    ``checkpoint_if_cancelled``).

    A worker checks for cancellation between two steps; trio's and anyio's
    ``checkpoint_if_cancelled`` are async calls that look the task up each
    time. This reads, for the worker's own task, the same state they read:
    on trio the task's cancel status itself, which stays the same for as long
    as the worker runs (a step leaves every cancel scope it enters); on
    asyncio, anyio's chain of cancel scopes, through a weak reference.
    """
    if be is _TRIO:
        status = getattr(trio.lowlevel.current_task(), "_cancel_status", None)
        if type(getattr(status, "effectively_cancelled", None)) is not bool:
            return _AlwaysCheck()
        return status
    try:
        import asyncio

        from anyio._backends._asyncio import _task_states

        state = _task_states.get(asyncio.current_task())  # type: ignore[arg-type]
        scope: Any = None if state is None else state.cancel_scope
        if scope is None or not all(hasattr(scope, a) for a in ("_cancel_called", "_shield", "_parent_scope")):
            return _AlwaysCheck()
        return _AnyioProbe(scope)
    except Exception:  # not asyncio, or anyio keeps it elsewhere now
        return _AlwaysCheck()


class _Counter:
    """An internal limiter: a slot count, and the groups parked until a slot frees."""

    __slots__ = ("capacity", "in_use", "name", "parked")

    def __init__(self, name: str, capacity: float) -> None:
        self.name = name
        self.capacity = capacity
        self.in_use = 0
        self.parked: list[_Group] = []


class _Group:
    """Ready units that need the same internal limiters, best first."""

    __slots__ = ("counters", "heap", "parked", "run_id")

    def __init__(self, counters: tuple[_Counter, ...], run_id: str | None) -> None:
        self.counters = counters
        self.run_id = run_id  # the run's id (for current_step())
        # (heap key, unit); in a plain run, the ready queue: heap keys only (see Run._unit_at)
        self.heap: list[Any] = []
        self.parked = False


class _PlanRuntime:
    """What every run of one plan needs, worked out once per plan.

    ``order[i]``: step ``i``'s place in the ready queue's order (longest
    remaining path first, then declaration order), shifted left 32 bits so a
    map item's index fits below it: a unit's heap key is one int.
    ``quick[i]``: step ``i`` needs no limiter, no retry, no timeout and maps
    over nothing (see ``_StepState.quick``).
    """

    __slots__ = ("__weakref__", "free", "index_at", "maps", "order", "quick")

    def __init__(self, plan: Plan) -> None:
        nodes = plan.nodes
        ranked = sorted(nodes, key=lambda n: (-n.rank, n.index))
        self.order = [0] * len(nodes)
        for position, node in enumerate(ranked):
            self.order[node.index] = position << 32
        self.index_at = [node.index for node in ranked]  # place in that order -> step index
        self.quick = [
            not s.limiters and s.max_concurrent is None and s.retry is None and s.timeout is None
            and s.map_over is None
            for s in (n.spec for n in nodes)
        ]
        # no step names a limiter or has a max_concurrent of its own
        self.free = all(not n.spec.limiters and n.spec.max_concurrent is None for n in nodes)
        self.maps = [n.index for n in nodes if n.spec.map_over is not None]  # (the map steps)


_runtimes: weakref.WeakKeyDictionary[Plan, _PlanRuntime] = weakref.WeakKeyDictionary()


def _runtime(plan: Plan) -> _PlanRuntime:
    runtime = _runtimes.get(plan)
    if runtime is None:
        runtime = _runtimes[plan] = _PlanRuntime(plan)
    return runtime


class _Item:
    """One item of a map step, as the scheduler runs it.

    A worker runs *units*: a plain step is its own unit (its
    :class:`_StepState`, so a wide fan-out keeps one object per step), a map
    step has one :class:`_Item` per item. Both have the fields below.
    """

    __slots__ = ("attempt", "gate_key", "held", "item", "kwargs", "order", "state", "woken")

    def __init__(self, state: _StepState, item: int) -> None:
        self.state = state
        self.item: int | None = item
        self.attempt = 0  # the attempt running now (for current_step())
        self.order = state.order + item + 1  # the heap key
        self.held: tuple[Line, ...] = ()  # keyed slots held while the unit runs
        self.gate_key: Hashable = _UNREAD  # limit_key's answer, for keyed limits
        self.kwargs: dict[str, Any] | None = None  # read for limit_key: the first attempt's
        self.woken: Line | None = None  # the line that promised it a token or slot

    def step_context(self) -> StepContext:
        """What ``current_step()`` gives inside the unit's attempt (made only when asked)."""
        return _step_context(self.state, self.attempt, self.item)

    @property
    def key(self) -> tuple[float, int, int]:
        """The unit's priority, comparable across runs and plans (rate and keyed lines)."""
        return _unit_key(self.state, self.item)


def _step_context(st: _StepState, attempt: int, item: int | None) -> StepContext:
    usage = st.usage
    if usage is _NO_USAGE:  # (a step's usage dict is made when first asked for)
        usage = st.usage = {}
    return StepContext(st.name, attempt, item, st.group.run_id, usage)


def _unit_key(st: _StepState, item: int | None) -> tuple[float, int, int]:
    node = st.node
    return (-node.rank, node.index, -1 if item is None else item)


class _StepState:
    """A step's progress within one run.

    The fields every run sets are slots; rarely used ones (map items, errors)
    live as class-level defaults, in a dict made only for the steps that set
    them, so setting up a run costs little per step, and a run keeps one
    object per step for the garbage collector to go through.
    """

    __slots__ = (
        "__dict__", "attempt", "attempts", "finished_at", "group", "name", "node", "order", "pending",
        "quick", "ready_at", "started_at", "status", "value",
    )

    # as the unit that runs the step (a plain step's own; see _Item)
    item: int | None = None
    held: tuple[Line, ...] = ()
    gate_key: Hashable = _UNREAD
    kwargs: dict[str, Any] | None = None
    woken: Line | None = None

    # made when the step's current_step() is first asked for (see _step_context)
    usage: dict[str, float] = _NO_USAGE  # type: ignore[assignment]
    error: BaseException | None = None
    skip_cause: str | None = None
    skip_reason: str | None = None  # "condition" or "dependency", for a skipped step
    external: tuple[tuple[int, Limiter], ...] = ()  # (id of the caller's limiter, limiter to acquire)
    # rate limits and keyed limiters, each with its line when it has one for all
    # keys (None: one line per key): a token or slot taken as the unit starts
    gates: tuple[tuple[Gate, Line | None], ...] = ()
    rates: tuple[RateLimit, ...] = ()  # rate limits: a token taken as each later attempt starts
    ok_items: list[int] | None = None  # a map step with pipes: its items that succeeded
    piped: set[int] | None = None  # a pipelined map step: items started (or resumed) early
    unpiped = False  # a map step with pipes that found it cannot start items early
    # its when= condition's answer and error, once asked (see Run._ask_when)
    when_answer: tuple[bool, Exception | None] | None = None
    items: list[Any]
    item_values: list[Any]
    item_errors: dict[int, Exception]
    items_left = 0
    # per item, for StepResult.items (None until the step takes its items)
    item_status: list[StepStatus | None] | None = None
    item_attempts: list[int]
    item_times: list[list[float | None]]  # [started_at, finished_at]
    item_failures: dict[int, Exception]  # every failed item (also under on_item_error="none")
    no_items: tuple[()] = ()  # (the items field of a plain step's result, see _step_fields_at)

    def __init__(self, node: Node, group: _Group, order: int, quick: bool = False) -> None:
        self.node = node
        self.name = node.spec.name
        self.pending = len(node.deps)
        self.group = group
        self.order = order  # see _PlanRuntime.order
        # a plain step with no limit, retry or timeout: one attempt, run inline by the worker
        self.quick = quick
        self.status: StepStatus | None = None
        self.value: Any = None
        self.attempts = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.ready_at: float | None = None  # when its last dependency finished (None: at the run's start)
        self.attempt = 0  # as a unit: the attempt running now (for current_step())

    @property
    def state(self) -> _StepState:
        """As a unit: the step it runs, itself."""
        return self

    def step_context(self) -> StepContext:
        """As a unit: what ``current_step()`` gives inside its attempt."""
        return _step_context(self, self.attempt, None)

    @property
    def key(self) -> tuple[float, int, int]:
        """As a unit: its priority (see :attr:`_Item.key`)."""
        return _unit_key(self, None)


# what a worker runs: a plain step's state, or one item of a map step
_Unit = _Item | _StepState


@attrs.frozen
class RunOptions:
    """A run's validated options."""

    max_concurrent: int | None = None
    limiter: Limiter | None = None
    limiters: Mapping[str, int | Limiter | Gate] = attrs.field(factory=dict)
    error_handling: str = "fail_fast"
    seed: int | None = None
    on_event: Callable[[Event], object] | None = None
    run_id: str | None = None
    resources: Mapping[str, Any] = attrs.field(factory=dict)  # shared, never copied
    functions: StepFunctions | None = None  # for result[step_function]


class Run:
    """One execution of a plan. Create, then ``await run.execute()`` once."""

    def __init__(
        self,
        flow_name: str,
        plan: Plan,
        inputs: Mapping[str, Any],
        options: RunOptions,
        completed: Mapping[str, StepResult] | None = None,
        recorder: Recorder | None = None,
        completed_items: Mapping[str, Mapping[int, Any] | Callable[[list[Any]], Mapping[int, Any]]] | None = None,
        item_recorder: Callable[[str, int, Any, Any, int, float, float], object] | None = None,
        on_value: Callable[[str, int | None, Any], Any] | None = None,
    ) -> None:
        """Prepare a run.

        Args:
            completed: results of steps recorded as succeeded by an earlier run
                with the same id; they are not run again.
            recorder: called with each step's result fields (see :data:`Recorder`)
                the moment the step reaches a final status (synchronously, in the
                scheduler).
            completed_items: for map steps, item index -> value of items recorded
                by an earlier run (or a function that makes that mapping from the
                step's list of items); only the missing items run.
            item_recorder: called as ``(step, index, value, kept, attempts, started,
                finished)`` when a map item succeeds (``kept``: what ``on_value``
                returned, or None; the times are those of the attempt that succeeded).
            on_value: called as ``(step, item, value)`` the moment a step function
                (or map item) returns, inside the attempt: an exception it raises
                fails that attempt as if the step had raised it, and what it
                returns is handed to the recorder (a store uses it to encode each
                value once, so a value it cannot record fails its step).
        """
        self.flow_name = flow_name
        self.plan = plan
        self.inputs = inputs
        self.options = options
        self.fail_fast = options.error_handling == "fail_fast"
        self._seed = options.seed
        self.on_event = options.on_event
        self.recorder = recorder
        self.item_recorder = item_recorder
        self.on_value = on_value
        self.completed_items = completed_items or {}
        self.resources = options.resources
        self.hooks = installed_hooks()  # wrap every attempt (see _hooks)
        self.be = current_backend()
        self.quiescent = quiescent_here(self.be is _TRIO)
        self.settle_decision = settle_decision.get() if self.quiescent else None
        self.unready_from = 0  # see _next_fixed
        # the clock's own bound method: one call per reading on the hot path
        self.now: Callable[[], float] = (
            trio.lowlevel.current_clock().current_time if self.be is _TRIO else self.be.current_time
        )
        self.busy = 0
        self.queued = 0  # units in the ready queue (parked ones included)
        self.queued_limited = 0  # of those, units that need an internal limiter
        self.scouts = 0
        self.returns = 0  # units that workers finished and then looked for more work
        self.pausing = 0  # workers at their schedule point between two units
        self.settling = 0  # quiescent mode: workers waiting for the instant to settle
        self.stopping = False
        self.hasty = False  # quiescent mode: fail-fast's cancellation lands as under plain trio
        self.cut = False  # a worker ended with its step's cancellation (trio), see _work
        self.failures: list[_StepState] = []
        self.stop_at = math.inf  # when fail-fast stopped the run (the first failure)
        # units waiting to retry: unit -> (the failed attempt's error, attempt, when it failed)
        self.retrying: dict[_Unit, tuple[Exception, int, float]] = {}
        self.event_errors: list[Exception] = []  # what on_event raised
        self.internal_errors: list[Exception] = []  # engine errors that belong to no unfinished step
        # (heap key of the group's best unit, sequence, group); in a plain run, the
        # free group's heap of (heap key, unit) itself
        self.ready: list[Any] = []
        self._seq = itertools.count()
        self.nursery: Any = None
        self.retry_log: list[list[Any]] = []  # for the timeline: see RunTrace

        held = _held_limiters.get()

        def external(limiter: Limiter) -> tuple[int, Limiter]:
            key = id(limiter)
            return (key, held.get(key, limiter))  # borrow the enclosing step's slot

        self.capacity: float = math.inf if options.max_concurrent is None else options.max_concurrent
        shared: tuple[tuple[int, Limiter], ...] = ()
        if options.limiter is not None:
            shared = (external(options.limiter),)
        named: dict[str, _Counter | tuple[int, Limiter]] = {}
        gates: dict[str, Gate] = {}
        for name, value in options.limiters.items():
            if isinstance(value, RateLimit | KeyedLimiter):
                gates[name] = value
                continue
            named[name] = _Counter(name, value) if isinstance(value, int) else external(value)
        # rate limits and keyed limiters: the lines this run waits in, and its waiters
        self.domain = current_domain() if gates else None
        self.gate_lines: dict[int, Line] = {}
        self.gate_waiting = 0  # units of this run waiting in a line
        self.woken: set[_Unit] = set()  # units woken with a promised token or slot, not yet taken
        self.granting = False
        self.granter_scope: Any = None
        # units that took keyed slots, to give them back if the run is cancelled (those
        # that gave them back, with ``held == ()``, are dropped now and then)
        self.holders: list[_Unit] = []
        self.holders_room = 1024  # appends left before the list is tidied
        free = _Group((), options.run_id)  # the group of steps that need no internal limiter
        runtime = _runtime(plan)
        order = runtime.order
        states: list[_StepState] = []
        if runtime.free and not shared:  # the common case, at the least cost per step
            quick = runtime.quick
            for node in plan.nodes:
                states.append(_StepState(node, free, order[node.index], quick[node.index]))
        else:
            self._set_up_groups(plan, states, free, shared, named, gates, order)
        self.states = states
        self.free = free
        # No internal limiter in this run: every unit is in the free group, and the
        # ready queue is that group's heap itself (rate limits and keyed limits are
        # passed as a unit is taken: see _take_gated).
        self.plain = all(st.group is free for st in states)
        if self.plain:
            self.ready = free.heap
            self.index_at = runtime.index_at
            self.items: dict[int, _Item] = {}  # a plain run's queued map items, by heap key
            if gates:  # rate limits or keyed limiters: passed as each unit is taken
                self._take = self._take_gated  # type: ignore[method-assign]

        for name, result in (completed or {}).items():
            st = self.states[plan.by_name[name]]
            st.status = result.status
            st.value = result.value
            st.attempts = result.attempts
            st.started_at = result.started_at
            st.finished_at = result.finished_at
            st.usage = dict(result.usage)
        self.resumed = frozenset(completed or ())

    def _set_up_groups(
        self,
        plan: Plan,
        states: list[_StepState],
        free: _Group,
        shared: tuple[tuple[int, Limiter], ...],
        named: dict[str, _Counter | tuple[int, Limiter]],
        gates: dict[str, Gate],
        order: list[int],
    ) -> None:
        """Make the step states of a run whose steps need limiters: each in its group."""
        groups: dict[tuple[int, ...], _Group] = {}
        # steps with the same limiters (and no max_concurrent) share their set-up:
        # (group, gates, rate limits, external limiters, whether they may be quick)
        alike: dict[tuple[str, ...], tuple[_Group, Any, Any, Any, bool]] = {}
        for node in plan.nodes:
            spec = node.spec
            if not spec.limiters and spec.max_concurrent is None:
                st = _StepState(node, free, order[node.index])
                if shared:
                    st.external = shared
                elif spec.retry is None and spec.timeout is None and spec.map_over is None:
                    st.quick = True
                states.append(st)
                continue
            known = alike.get(spec.limiters) if spec.max_concurrent is None else None
            if known is not None:
                # (the fewest attributes: a step's state is set up on the run's hot path)
                same, st_gates, rates, external, simple = known
                st = _StepState(node, same, order[node.index])
                st.gates = st_gates
                if rates:
                    st.rates = rates
                if external:
                    st.external = external
                if simple and spec.retry is None and spec.timeout is None and spec.map_over is None:
                    st.quick = True  # (as below)
                states.append(st)
                continue
            counters = [c for n in spec.limiters if n in named and isinstance(c := named[n], _Counter)]
            if spec.max_concurrent is not None:
                counters.append(_Counter(f"{spec.name}.max_concurrent", spec.max_concurrent))
                key: tuple[int, ...] = (-1 - node.index,)
            else:
                key = tuple(id(c) for c in counters)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(tuple(counters), self.options.run_id) if counters else free
            st = _StepState(node, group, order[node.index])
            if gates:
                self._set_gates(st, [gates[n] for n in spec.limiters if n in gates])
            acquire = list(shared)
            for n in spec.limiters:
                if n in gates:
                    continue
                lim = named[n]
                # the same CapacityLimiter given twice is acquired once
                if not isinstance(lim, _Counter) and lim not in acquire:
                    acquire.append(lim)
            st.external = tuple(acquire)
            if (
                group is free
                and not st.external
                and spec.retry is None
                and spec.timeout is None
                and spec.map_over is None
            ):
                st.quick = True  # (rate limits and keyed limits only: passed in _take)
            states.append(st)
            if spec.max_concurrent is None:
                alike[spec.limiters] = (group, st.gates, st.rates, st.external, group is free and not st.external)

    @property
    def seed(self) -> int:
        """The run's seed for retry jitter: ``seed=``, or one drawn when first needed."""
        if self._seed is None:
            self._seed = secrets.randbits(63)
        return self._seed

    # -- events -------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        """Hand ``event`` to ``on_event``; what the callback raises never reaches the steps.

        The run goes on as if nothing had happened (the callback only
        observes); the exception is kept for the :class:`FlowError` raised when
        the run ends, and no further event is sent to the callback.
        """
        on_event = self.on_event
        if on_event is not None:
            try:
                on_event(event)
            except Exception as exc:
                self.on_event = None
                add_note(
                    exc,
                    f"trioflow: the on_event callback of flow {self.flow_name!r} raised on "
                    f"{type(event).__name__}; it got no further events",
                )
                self.event_errors.append(exc)

    # -- ready queue ------------------------------------------------------------

    def _push(self, unit: _Unit) -> None:
        if self.plain:
            self.queued += 1
            if type(unit) is _Item:
                self.items[unit.order] = unit
            heapq.heappush(self.ready, unit.order)
            return
        group = unit.state.group
        self.queued += 1
        if group.counters:
            self.queued_limited += 1
        heap = group.heap
        better = not heap or unit.order < heap[0][0]
        heapq.heappush(heap, (unit.order, unit))
        if better and not group.parked:
            heapq.heappush(self.ready, (unit.order, next(self._seq), group))

    def _unit_at(self, key: int) -> _Unit:
        """The unit of a key taken from a plain run's ready queue.

        That queue holds heap keys only (one int per unit, no tuple: fewer
        objects for the garbage collector while a wide fan-out waits). A
        step's key is its place in the order shifted left 32 bits, an item's
        has its index + 1 below.
        """
        if key & _ITEM_BITS:
            return self.items.pop(key)
        return self.states[self.index_at[key >> 32]]

    def _peek_at(self, key: int) -> _Unit:
        """:meth:`_unit_at`, leaving the unit queued."""
        if key & _ITEM_BITS:
            return self.items[key]
        return self.states[self.index_at[key >> 32]]

    def _take(self) -> _Unit | None:
        if self.plain:
            if self.ready:
                self.queued -= 1
                return self._unit_at(heapq.heappop(self.ready))
            return None
        if self.gate_waiting:
            self._grant_due()
        ready = self.ready
        while ready:
            key, _, group = ready[0]
            heap = group.heap
            if group.parked or not heap or heap[0][0] != key:
                heapq.heappop(ready)  # stale entry
                continue
            for counter in group.counters:
                if counter.in_use >= counter.capacity:
                    heapq.heappop(ready)
                    group.parked = True
                    counter.parked.append(group)
                    break
            else:
                heapq.heappop(ready)
                unit: _Unit = heapq.heappop(heap)[1]
                self.queued -= 1
                if unit.state.gates and not self._admit(unit):
                    # no token or keyed slot now: the unit waits in a line, holding nothing
                    if group.counters:
                        self.queued_limited -= 1
                    if heap:
                        heapq.heappush(ready, (heap[0][0], next(self._seq), group))
                    continue
                for counter in group.counters:
                    counter.in_use += 1
                if group.counters:
                    self.queued_limited -= 1
                if heap:
                    heapq.heappush(ready, (heap[0][0], next(self._seq), group))
                return unit
        return None

    def _contended(self) -> bool:
        """Whether more units wait than there are free slots (so someone must choose),
        or may at this instant: while capacity is limited, a unit still running may
        end now too and make a more urgent unit ready, which the slot is then for."""
        return (
            self.queued > self.capacity - self.busy
            or self.queued_limited > 0
            or (self.busy > 0 and self.capacity < math.inf)
        )

    def _settle_wait(self) -> Awaitable[None] | None:
        """Quiescent mode, at a contended slot: what to await before taking it (``None``:
        take it at once). The harness decides (its ``settle`` hook does both at once,
        and returns the wait itself), unless fail-fast's cancellation lands as under
        plain trio (``hasty``): then no worker settles."""
        if self.hasty:
            return None
        # the decision and the settling in one call, where the hooks have it (looked up
        # each time: a finished run keeps nothing of the harness's, see EngineHooks.close)
        hook = getattr(self.settle_decision, "settle", None)
        if hook is not None:
            waiting: Awaitable[None] | None = hook(self.nursery, self._next_fixed)
            return waiting
        decide = self.settle_decision
        if decide is None or decide(self.nursery, self._next_fixed):
            return wait_all_tasks_blocked()
        return None

    def _next_fixed(self) -> bool:
        """Quiescent mode: whether nothing the run's other tasks may do at this instant can
        change which unit a freed slot goes to, so that taking it at once is as good as
        letting them run first.

        So when every step not yet begun is queued already (none waits for a
        dependency, nor for the items of the map step it pipes from), and no
        queued unit waits for a limiter's slot, a rate limit's token or a keyed
        slot that a unit ending now would give back: the slot is then for the
        head of the queue, whoever runs first. A failure at this instant
        changes nothing either, since the units due then still begin (see
        :meth:`_cancel_all`). Steps only ever leave the waiting state, so the
        scan goes on from where it stopped (``unready_from``).
        """
        if self.queued_limited or self.domain is not None:
            return False
        states = self.states
        i = self.unready_from
        end = len(states)
        while i < end:
            st = states[i]
            if st.pending and st.status is None:
                break
            i += 1
        self.unready_from = i
        return i == end

    def _release(self, unit: _Unit) -> None:
        self.busy -= 1
        if unit.held:
            self._give_back(unit)
        for counter in unit.state.group.counters:
            counter.in_use -= 1
            if counter.parked:
                for group in counter.parked:
                    group.parked = False
                    if group.heap:
                        heapq.heappush(self.ready, (group.heap[0][0], next(self._seq), group))
                counter.parked.clear()

    async def _settle_instant(self, waiting: Awaitable[None]) -> None:
        """Quiescent mode: await what :meth:`_settle_wait` gave (until the instant has
        settled), counted as a worker settling (see :meth:`_dispatch`)."""
        self.settling += 1
        try:
            await waiting
        finally:
            self.settling -= 1

    def _dispatch(self) -> None:
        """Make sure runnable work gets picked up: keep one scout on its way (none while
        a worker settles: it takes a unit once the instant has settled)."""
        if (
            not self.scouts
            and self.ready
            and self.busy < self.capacity
            and (not self.stopping or self.now() <= self.stop_at)  # (work due at the stop instant begins)
            and not self.settling
        ):
            self.scouts = 1
            self.nursery.start_soon(self._work, True, self.returns)

    # -- state transitions ---------------------------------------------------------

    def _make_ready(self, st: _StepState) -> None:
        if self.plan.conditional and not self._passes(st):
            return
        node = st.node
        if node.spec.map_over is None:
            self._push(st)
            return
        if node.map_source is not None:
            source = self.states[node.map_source].value
        else:
            param = next(p for p in node.inputs if p.key == node.spec.map_over)
            source = self.inputs.get(param.key, param.default)
        if st.piped is None:
            st.item_errors = {}
        try:
            if isinstance(source, str | bytes | Mapping):
                raise TypeError(f"it is a {type(source).__name__}")
            items = list(source)
        except Exception as exc:
            error = TypeError(
                f"map step {st.name!r} maps over {node.spec.map_over!r}, which must be a list or "
                f"other iterable of items (got {_short_repr(source)} that is a "
                f"{type(source).__name__}): {exc}"
            )
            now = self.now()
            st.started_at = now
            self._step_failed(st, error, 0, now)
            return
        if st.piped is not None:  # items already started one by one: start the rest
            st.items = items
            self._pipe_start(st, range(len(items)), items)
            return
        st.items = items
        st.item_values = [None] * len(items)
        st.item_status = [None] * len(items)
        st.item_attempts = [0] * len(items)
        st.item_times = [[None, None] for _ in items]
        st.item_failures = {}
        done = self.completed_items.get(st.name, {})
        if callable(done):  # a store matches its recorded items to these ones (see _durable)
            done = done(items)
        todo = [i for i in range(len(items)) if i not in done]
        for i, value in done.items():
            if 0 <= i < len(items):
                st.item_values[i] = value
                st.item_status[i] = StepStatus.SUCCEEDED
        if node.pipes:
            st.ok_items = [i for i in range(len(items)) if i in done]
            for c in node.pipes:
                self._pipe_ready(self.states[c])
        st.items_left = len(todo)
        if self.on_event is not None:
            now = self.now()
            self._emit(_ev.MapStarted(st.name, now, len(items), len(items) - len(todo), elapsed=now - self.started_at))
        if not todo:
            now = self.now()
            st.started_at = now
            self._step_succeeded(st, st.item_values, 0, now)
            return
        for i in todo:
            self._push(_Item(st, i))

    # -- rate limits and keyed limiters ------------------------------------------------

    def _set_gates(self, st: _StepState, gates: list[Gate]) -> None:
        """A step's rate limits and keyed limiters, each with its one line when it has one."""
        domain = self.domain
        gates = list(dict.fromkeys(gates))  # the same object named twice is passed once
        st.gates = tuple((g, None if g.keyed else g._line(None, domain)) for g in gates)
        rates = tuple(g for g in gates if isinstance(g, RateLimit))
        if rates:
            st.rates = rates

    def _take_gated(self) -> _Unit | None:
        """:meth:`_take` for a run with no internal limiter but rate limits or keyed
        limiters: the best unit that can take its tokens and keyed slots now."""
        if self.gate_waiting:
            self._grant_due()
        ready = self.ready
        while ready:
            unit = self._unit_at(heapq.heappop(ready))
            self.queued -= 1
            if unit.state.gates and not self._admit(unit):
                continue  # it waits in a line, holding nothing
            return unit
        return None

    def _admit(self, unit: _Unit) -> bool:
        """Take the unit's first-attempt rate tokens and keyed slots, all at once, as
        it starts; or make it wait, holding nothing (no run slot, no token, no keyed
        slot), in the line of the first that has none.

        Called by :meth:`_take` when the unit is taken to run (once: a unit that
        passes runs, and is never queued again), so a keyed slot is held only
        while the unit runs. A waiter is let back into the ready queue,
        best first, when a token is due (the run's granter task) or a holder of
        its key ends; it then competes for a run slot again, and takes what it
        needs as it starts.
        """
        gates = unit.state.gates
        if unit.woken is None and len(gates) == 1:  # the common case, at no cost
            gate, line = gates[0]
            if line is None:  # one line per key
                key = unit.gate_key
                if key is _UNREAD:
                    spec = unit.state.node.spec
                    if spec.params or unit.item is not None:
                        key = self._read_key(unit)  # (with copies of the arguments)
                        if key is _UNREAD:
                            return False
                    else:  # a step without arguments: limit_key() at once
                        try:
                            key = unit.gate_key = spec.limit_key()  # type: ignore[misc]
                        except Exception as exc:
                            self._fail_unstarted(unit, exc)
                            return False
                lines = gate._lines
                try:
                    line = lines.lines.get(key) if lines.domain is self.domain else None
                    if line is None:
                        line = gate._line(key, self.domain)
                except TypeError:
                    return self._unhashable(unit)
            capacity = line.capacity
            if capacity is not None:  # a keyed limiter's slots
                if line.in_use < capacity:
                    line.in_use += 1
                    unit.held = (line,)
                    self.holders.append(unit)
                    self.holders_room -= 1
                    if not self.holders_room:
                        self._hold(None)
                    return True
            elif line.try_take(self.now()):  # a rate limit's token
                return True
        return self._admit_slowly(unit)

    def _admit_slowly(self, unit: _Unit) -> bool:
        """:meth:`_admit` for a unit that was woken or has several gates."""
        st = unit.state
        woken = unit.woken
        if woken is not None:  # its promised token or slot is now taken, or given back
            self.woken.discard(unit)
            unit.woken = None
            woken.settle()
        keyed = any(line is None for _, line in st.gates)  # (a line per key)
        if keyed and unit.gate_key is _UNREAD and self._read_key(unit) is _UNREAD:
            if woken is not None:
                self._regrant(woken)
            return False
        now = self.now()
        key = unit.gate_key
        domain = self.domain
        try:
            lines = [gate._line(key, domain) if line is None else line for gate, line in st.gates]
        except TypeError:
            return self._unhashable(unit)  # (a woken unit's key was hashable: it waited)
        for line in lines:
            if not line.ready(now):
                self._wait_in(unit, line, woken)
                return False
        for line in lines:
            line.take(now)
        held = tuple(line for line in lines if line.capacity is not None)
        if held:
            unit.held = held
            self._hold(unit)
        return True

    def _hold(self, unit: _Unit | None) -> None:
        """Keep ``unit`` in :attr:`holders` (None: it is there), dropping now and then
        those that gave their slots back (amortized: O(1) each)."""
        holders = self.holders
        if unit is not None:
            holders.append(unit)
            self.holders_room -= 1
        if self.holders_room <= 0:
            holders[:] = [u for u in holders if u.held]
            self.holders_room = max(1024, len(holders))

    def _wait_in(self, unit: _Unit, line: Line, woken: Line | None) -> None:
        """Make ``unit`` wait in ``line``, best first, until it is let back."""
        self.gate_lines[id(line)] = line
        line.push(Waiter((*unit.key, next_sequence()), lambda: self._woken(unit, line), self, False))
        if line.bucket is not None:  # a token comes with time: the granter lets it through
            line.watchers[id(self)] = self._wake_granter
        # (the granter also keeps the run open while units wait for keyed slots
        # that other runs hold)
        self.gate_waiting += 1
        self._wake_granter()
        if woken is not None and woken is not line:
            self._regrant(woken)  # the slot promised to this unit is free for the next one

    def _regrant(self, line: Line) -> None:
        """A keyed slot promised to a unit that did not take it: let the next waiter have it."""
        if line.capacity is not None and line.heap:
            line.grant(self.now())

    def _wake_granter(self) -> None:
        """Start the granter, or make it look again (a token may be free now, or
        nothing waits any more)."""
        if not self.granting:
            if self.gate_waiting:
                self.granting = True
                self.nursery.start_soon(self._grant)
        elif self.granter_scope is not None:
            self.granter_scope.deadline = -math.inf

    def _read_key(self, unit: _Unit) -> Any:
        """Read the unit's limit key (once), or fail the unit and return ``_UNREAD``.

        limit_key is called with the step's keyword arguments; they are kept for
        the first attempt, which gets the very same copies. (Whether the key is
        hashable shows when its line is looked up: see :meth:`_unhashable`.)
        """
        st = unit.state
        spec = st.node.spec
        limit_key = spec.limit_key
        assert limit_key is not None
        try:
            if spec.params or unit.item is not None:
                kwargs = unit.kwargs = self._kwargs(st, unit.item)
                key = limit_key(**kwargs)
            else:
                key = limit_key()
        except _CopyError as exc:
            self._fail_unstarted(unit, exc.args[0])
            return _UNREAD
        except Exception as exc:
            self._fail_unstarted(unit, exc)
            return _UNREAD
        unit.gate_key = key
        return key

    def _unhashable(self, unit: _Unit) -> bool:
        """Fail a unit whose limit key is not hashable; False (it was not admitted)."""
        self._fail_unstarted(unit, TypeError(
            f"step {_label(unit.state.name, unit.item)!r}: limit_key returned {_short_repr(unit.gate_key)}, "
            f"which is not hashable; return a str, an int or a tuple"
        ))
        return False

    def _woken(self, unit: _Unit, line: Line) -> None:
        """A token or slot is due for ``unit``: back to the ready queue, to take it as it starts."""
        self.gate_waiting -= 1
        if not self.gate_waiting:
            self._wake_granter()  # so that it ends
        if (self.stopping and self.now() > self.stop_at) or unit.state.status is not None:
            line.settle()
            self._regrant(line)
            return
        unit.woken = line
        self.woken.add(unit)
        self._push(unit)
        self._dispatch()

    def _give_back(self, unit: _Unit) -> None:
        """Give back the unit's keyed slots, and let the next waiters of those keys through."""
        held = unit.held
        unit.held = ()  # (and so it is dropped from self.holders)
        for line in held:
            line.in_use -= 1
            if line.heap:
                line.grant(self.now())

    def _grant_due(self) -> None:
        """Let through, now, the waiters whose tokens are due (before a slot is given
        out, so a unit that got its token at this instant competes for it)."""
        now = self.now()
        for line in list(self.gate_lines.values()):
            line.grant(now)

    async def _grant(self) -> None:
        """While units of this run wait in lines: give rate tokens, best first, at
        their instants (keyed slots are given as holders end, by whoever ends)."""
        be = self.be
        try:
            while self.gate_waiting:
                now = self.now()
                wake = math.inf
                for line in list(self.gate_lines.values()):
                    line.grant(now)
                    wake = min(wake, line.next_time(now))
                if not self.gate_waiting:
                    return
                with be.cancel_scope(deadline=wake) as scope:
                    self.granter_scope = scope
                    if be is _TRIO:
                        await trio.sleep_forever()
                    else:
                        await anyio.sleep_forever()
                self.granter_scope = None
        finally:
            self.granting = False
            self.granter_scope = None

    def _fail_unstarted(self, unit: _Unit, error: Exception) -> None:
        """Fail a unit before its first attempt (its limit key could not be had)."""
        st = unit.state
        now = self.now()
        add_note(error, f"trioflow: step {_label(st.name, unit.item)!r} failed on attempt 1")
        if st.started_at is None:
            st.started_at = now
        if self.on_event is not None:
            self._emit(_ev.StepFailed(st.name, 1, now, error, unit.item, elapsed=now - self.started_at))
        if unit.item is None:
            self._step_failed(st, error, 1, now)
            return
        st.attempts = max(st.attempts, 1)
        st.item_errors[unit.item] = error
        st.item_status[unit.item] = StepStatus.FAILED  # type: ignore[index]
        st.item_times[unit.item] = [now, now]
        st.item_failures[unit.item] = error
        if self.fail_fast:
            self._step_failed(st, error, 1, now)
        else:
            self._item_done(st, now)

    def _leave_lines(self) -> None:
        """At the end of the run: leave every line, give back every keyed slot and
        every promised token or slot."""
        for line in self.gate_lines.values():
            line.purge(self)
            line.watchers.pop(id(self), None)
        for unit in self.woken:
            woken = unit.woken
            assert woken is not None
            unit.woken = None
            woken.settle()
            self.gate_lines[id(woken)] = woken
        self.woken.clear()
        for unit in self.holders:
            if unit.held:
                self._give_back(unit)
        self.holders.clear()
        now = self.now()
        for line in self.gate_lines.values():
            line.grant(now)  # other runs' waiters may pass now

    # -- conditions (when=) and optional dependencies ----------------------------------

    def _passes(self, st: _StepState) -> bool:
        """Whether a step whose dependencies are done runs: else it is skipped (or failed).

        Decided synchronously, the moment the step's last dependency ends, so a
        condition costs no checkpoint and gives the same answer under every
        schedule. A skip by a condition lets the steps after it go on (they skip
        too, unless they take it as an optional dependency).
        """
        node = st.node
        for d in node.deps:
            upstream = self.states[d]
            # only skips by a condition get here (a failure skips its descendants at once)
            if upstream.status is _SKIPPED and d not in node.tolerates:
                self._skip_by_condition(st, "dependency", upstream.name)
                return False
        if node.spec.when is None:
            return True
        run, exc = st.when_answer or self._ask_when(st)
        if exc is not None:
            now = self.now()
            add_note(exc, f"trioflow: the when= condition of step {st.name!r} raised")
            st.started_at = now
            if node.spec.map_over is not None and st.piped is None:
                st.item_errors = {}  # (a map step that failed before taking its items)
            if self.on_event is not None:
                self._emit(_ev.StepFailed(st.name, 0, now, exc, None, elapsed=now - self.started_at))
            self._step_failed(st, exc, 0, now)
            return False
        if not run:
            self._skip_by_condition(st, "condition", st.name)
            return False
        return True

    def _ask_when(self, st: _StepState) -> tuple[bool, Exception | None]:
        """Call the step's when= condition (once per run: the answer is kept), with
        the values of the steps and inputs it names, which have all ended."""
        node = st.node
        when = node.spec.when
        assert when is not None
        copy = node.spec.isolation == "copy"
        kwargs: dict[str, Any] = {}
        for pname, d in node.when_deps:
            upstream = self.states[d]
            if upstream.status is _SKIPPED:
                value = next(p.default for p in node.spec.when_params if p.name == pname)
            else:
                value = upstream.value
            kwargs[pname] = isolate(value) if copy else value
        for p in node.when_inputs:
            value = self.inputs.get(p.name, p.default)
            kwargs[p.name] = isolate(value) if copy else value
        try:
            answer: tuple[bool, Exception | None] = (bool(when(**kwargs)), None)
        except Exception as exc:
            answer = (False, exc)
        st.when_answer = answer
        return answer

    def _may_pipe(self, down: _StepState) -> bool:
        """Whether a pipelined map step whose only unfinished dependency is its map
        source may start items now: nothing it needs was skipped, and its when=
        condition (which does not name the map source, or it would have no pipe)
        holds. The condition is asked now, all it names having ended, and its
        answer is kept for the moment the step is ready; so the step's status and
        skip_reason are those it gets unpipelined.
        """
        node = down.node
        for d in node.deps:
            if d != node.map_source and self.states[d].status is _SKIPPED and d not in node.tolerates:
                return False
        if node.spec.when is None:
            return True
        run, exc = self._ask_when(down)
        return run and exc is None

    def _skip_by_condition(self, st: _StepState, reason: str, cause: str) -> None:
        """Skip ``st`` because of a condition (its own, or one upstream), then let the
        steps waiting for it go on: each runs, or is skipped in turn."""
        now = self.now()
        st.status = _SKIPPED
        st.skip_reason = reason
        st.skip_cause = cause
        st.finished_at = now
        self._record(st)
        if self.on_event is not None:
            self._emit(_ev.StepSkipped(st.name, now, cause, reason, elapsed=now - self.started_at))
        for c in st.node.children:
            child = self.states[c]
            child.pending -= 1
            if child.pending == 0 and child.status is None:
                self._make_ready(child)
            elif (
                child.pending == 1
                and child.status is None
                and child.node.map_source is not None
                and self.states[child.node.map_source].ok_items  # only its map source left
            ):
                self._pipe_ready(child)

    def _step_succeeded(
        self, st: _StepState, value: Any, attempts: int, now: float, kept: Any = None, hand_over: bool = False
    ) -> _StepState | None:
        """Record a success and make ready the steps waiting only for it.

        ``hand_over``: the caller, a worker, will run next the one quick step
        this made ready if nothing else is ready: that step is returned instead
        of queued.
        """
        st.status = _SUCCEEDED
        st.value = value
        if attempts > st.attempts:
            st.attempts = attempts
        st.finished_at = now
        recorder = self.recorder
        if recorder is not None:
            recorder(st.name, _SUCCEEDED, value, kept, None, st.attempts, st.started_at, now, st.usage)
        children = st.node.children
        if not children:
            return None
        states = self.states
        if len(children) == 1:  # a chain, or a fan-in: no list
            child = states[children[0]]
            child.pending -= 1
            if child.pending == 0:
                if child.status is None:
                    child.ready_at = now
                    if self.plain and child.quick and not self.plan.conditional:
                        if hand_over and not self.ready:
                            return child
                        self.queued += 1
                        heapq.heappush(self.ready, child.order)
                    else:
                        self._make_ready(child)
            elif child.pending == 1 and child.status is None and child.node.map_source is not None:
                source = states[child.node.map_source]
                if source.ok_items:  # only its map source left: catch up on its items
                    self._pipe_ready(child)
            return None
        newly_ready = []
        for c in children:
            child = states[c]
            child.pending -= 1
            if child.pending == 0 and child.status is None:
                child.ready_at = now
                newly_ready.append(child)
            elif child.pending == 1 and child.status is None and child.node.map_source is not None:
                source = states[child.node.map_source]
                if source.ok_items:  # only its map source left: catch up on its items
                    self._pipe_ready(child)
        for child in newly_ready:
            self._make_ready(child)
        if len(newly_ready) > 1 and self.on_event is not None:
            self._announce(newly_ready, now)
        return None

    # -- item-level pipelining -----------------------------------------------------------

    def _pipe_ready(self, down: _StepState, item: int | None = None) -> None:
        """Start items of map step ``down`` whose upstream items have succeeded (``item``,
        or all of them), if the upstream map step is the only dependency left."""
        if down.status is not None or down.pending != 1 or down.unpiped:
            return
        if callable(self.completed_items.get(down.name)):
            return  # resumed items are matched to the whole list: no pipelining
        assert down.node.map_source is not None
        up = self.states[down.node.map_source]
        if up.status is not None or down.node.index not in up.node.pipes:
            return  # (a step whose condition reads the whole list has no pipe)
        assert up.ok_items is not None
        if down.piped is None:
            if self.plan.conditional and not self._may_pipe(down):
                down.unpiped = True  # it waits for the whole list (and is skipped, or fails)
                return
            n = len(up.items)
            down.piped = set()
            down.items = [None] * n
            down.item_values = [None] * n
            down.item_errors = {}
            down.item_status = [None] * n
            down.item_attempts = [0] * n
            down.item_times = [[None, None] for _ in range(n)]
            down.item_failures = {}
            down.items_left = n
            if down.node.pipes:  # a chain of map steps pipelines through
                down.ok_items = []
            if self.on_event is not None:  # its item count is known from now on
                now = self.now()
                done = self.completed_items.get(down.name, {})  # (not callable: checked above)
                restored = 0 if callable(done) else len([i for i in done if 0 <= i < n])
                self._emit(_ev.MapStarted(down.name, now, n, restored, elapsed=now - self.started_at))
        self._pipe_start(down, up.ok_items if item is None else (item,), up.item_values)

    def _pipe_start(self, down: _StepState, indices: Any, values: list[Any]) -> None:
        piped = down.piped
        assert piped is not None
        done = self.completed_items.get(down.name, {})
        if callable(done):  # (never pipelined: see _pipe_ready)
            done = done(list(values))
        for i in indices:
            if i in piped:
                continue
            piped.add(i)
            down.items[i] = values[i]
            if i in done:
                down.item_values[i] = done[i]
                down.item_status[i] = StepStatus.SUCCEEDED  # type: ignore[index]
                down.items_left -= 1
            else:
                self._push(_Item(down, i))
        if not down.items_left and down.status is None:  # every item was recorded earlier
            now = self.now()
            if down.started_at is None:
                down.started_at = now
            self._step_succeeded(down, down.item_values, down.attempts, now)

    def _step_failed(self, st: _StepState, error: BaseException, attempts: int, now: float) -> None:
        st.status = StepStatus.FAILED
        st.error = error
        st.attempts = max(st.attempts, attempts)
        if _logging.logger.isEnabledFor(_logging.ERROR):
            _logging.step_failed(self.flow_name, self.options.run_id, st.name, st.attempts, error)
        st.finished_at = now
        self.failures.append(st)
        self._record(st)
        if self.fail_fast:
            self._stop()
            return
        for d in self.plan.descendants(st.node.index):
            child = self.states[d]
            if child.status is None:
                child.status = StepStatus.SKIPPED
                child.skip_cause = st.name
                child.skip_reason = "dependency"
                self._record(child)
                if self.on_event is not None:
                    self._emit(_ev.StepSkipped(child.name, now, st.name, elapsed=now - self.started_at))

    def _announce(self, ready: list[_StepState], now: float) -> None:
        """Emit :class:`BatchStarted` for the steps of ``ready`` (just queued) that start now.

        Those are the ones the ready queue hands a slot at once: it is walked
        in the order :meth:`_take` follows, against the free capacity, the
        internal limiters' free slots and the external limiters' free tokens,
        without taking anything. Nothing is emitted when fewer than two start.
        """
        free = self.capacity - self.busy
        if free < 2 or (self.stopping and now > self.stop_at):
            return
        members = {id(st) for st in ready}
        starting: dict[int, _StepState] = {}
        limited = self.queued_limited > 0 or any(st.external for st in ready)
        if free == math.inf and not limited:
            starting = {id(st): st for st in ready if st.status is None}
        else:
            used: dict[int, float] = {}  # internal limiter -> slots taken in this walk
            tokens: dict[int, float] = {}  # external limiter -> tokens left in this walk
            if self.plain:
                units = [(key, self._peek_at(key)) for key in sorted(self.ready)]
            else:
                groups = {id(g): g for _, _, g in self.ready if not g.parked and g.heap}
                units = sorted((entry for g in groups.values() for entry in g.heap), key=lambda e: e[0])
            for _, unit in units:
                if free < 1:
                    break
                st = unit.state
                group = st.group
                if any(c.in_use + used.get(id(c), 0) >= c.capacity for c in group.counters):
                    continue
                for c in group.counters:
                    used[id(c)] = used.get(id(c), 0) + 1
                free -= 1
                blocked = False
                for key, limiter in st.external:
                    left = tokens.get(key)
                    if left is None:
                        left = getattr(limiter, "available_tokens", math.inf)
                    tokens[key] = left - 1
                    blocked = blocked or left < 1
                if not blocked and id(st) in members:
                    starting[id(st)] = st
        if len(starting) > 1:
            names = tuple(st.name for st in ready if id(st) in starting)
            self._emit(_ev.BatchStarted(names, now, elapsed=now - self.started_at))

    def _stop(self) -> None:
        """Fail fast: start nothing after this instant, and cancel everything once the
        work of this instant has begun (see :meth:`_cancel_all`)."""
        if not self.stopping:
            self.stopping = True
            self.stop_at = self.now()
            # (under the harness: the tasks plain trio would run before the cancellation)
            cohort = getattr(self.settle_decision, "cancel_cohort", None)
            self.nursery.start_soon(self._cancel_all, None if cohort is None else cohort())

    async def _cancel_all(self, cohort: Any = None) -> None:
        """Cancel every step of the run, once the failures and the starts of the
        instant of the first failure have landed.

        The rule (docs/errors.rst): every attempt that fails at that instant is
        reported as failed, and every unit due then (ready, with a free slot)
        still begins its first attempt, so that statuses and attempts do not
        depend on which of the instant's events the async library runs first.
        Nothing begins after that instant (after the clock reading ``stop_at``),
        and nothing retries once the run has stopped.

        A unit taken at that instant begins even if the cancellation has already
        landed (the checks before its first attempt let it through, see
        ``_work``): it is then cancelled at its first await. The cancellation
        comes from a new task, one scheduling batch after the
        failure, so that the tasks woken in the same batch (for example, by the
        same clock tick) run first, and after the scouts on their way (which may
        have to acquire a caller's limiter, an await that a landed cancellation
        would stop). Under ``trioflow.testing`` (quiescent mode) it waits until
        every task is blocked, with a cushion, so that the workers settling at
        this instant (with none) wake and take their units before it.
        """
        hooks: Any = self.settle_decision
        if self.quiescent and cohort is not None and hooks.cancel_decision():
            # the harness chose to land it as plain trio does: once the tasks of the
            # failure's batch have run (a step elsewhere may be between two awaits)
            self.hasty = True  # (no worker settles from now on, as under plain trio)
            await hooks.wait_cohort(cohort)
            if self.scouts or self.settling:
                # scouts on their way (units due at this instant begin first, as under
                # plain trio) or workers that began to settle before: they go first
                await wait_after_settling()
        elif self.quiescent:
            await wait_after_settling()
        else:
            while self.scouts:
                await self._settle()
        # a unit whose attempt failed at the very instant the run stopped, and
        # that is waiting to retry, failed at that instant too: report it as
        # failed, as it is when it fails just after the first failure
        for unit, (error, attempt, failed_at) in list(self.retrying.items()):
            if failed_at >= self.stop_at:
                del self.retrying[unit]
                self._unit_failed(unit, error, attempt, failed_at)
        self.nursery.cancel_scope.cancel()

    def _engine_failed(self, unit: _Unit, exc: Exception) -> None:
        """An error of the engine itself (not the step's): fail the unit it belongs to."""
        add_note(exc, f"trioflow: internal error while running step {_label(unit.state.name, unit.item)!r}")
        st = unit.state
        if st.status is None and unit.item is None:
            self.retrying.pop(unit, None)
            self._unit_failed(unit, exc, st.attempts, self.now())
            return
        self.internal_errors.append(exc)  # the unit had finished: the run fails with it
        if self.fail_fast:
            self._stop()

    def _record(self, st: _StepState) -> None:
        """Record a step that did not succeed (a success is recorded inline, more cheaply)."""
        if self.recorder is not None:
            r = _step_result(st)
            self.recorder(r.name, r.status, r.value, None, r.error, r.attempts, r.started_at, r.finished_at, st.usage)

    # -- running units ---------------------------------------------------------------

    async def _work(self, scout: bool, returns: int) -> None:
        """A worker: take a unit and run it, then the next, until none is runnable.

        A chain of steps thus runs in one task. New workers are *scouts*: while
        more units wait, each sends two more scouts ahead as it takes its unit,
        so scouts double each scheduling batch and a wide fan-out of steps that
        block starts within log2(width) batches. They double only while no
        worker comes back for more (``returns``: the count of comebacks when
        the scout was sent): steps that end soon (quick ones, or ones that
        only pass a schedule point) are run by the workers already there, one
        more scout joining them per batch, instead of by a new task per step.
        The run's own task starts as a worker too (``scout=False``).
        """
        if scout:
            self.scouts -= 1
        checkpoint_if_cancelled = self.be.checkpoint_if_cancelled
        probe = _cancel_probe(self.be)  # (the worker's own cancel scope stays the same)
        # a run cancelled from outside starts nothing new: no unit, no further scout
        # (one that fail-fast stopped still begins the units due at the stop instant)
        if not self.stopping and probe.effectively_cancelled:
            await checkpoint_if_cancelled()
        if self.quiescent and self._contended() and (waiting := self._settle_wait()) is not None:
            await self._settle_instant(waiting)
        if (self.stopping and self.now() > self.stop_at) or self.busy >= self.capacity:
            return  # (fail-fast stopped the run before this instant: see _cancel_all)
        first = self._take()
        if first is None:
            return
        unit = first
        self.busy += 1
        # more scouts only when every other worker is blocked in a step: workers
        # that only paused between quick steps, or came back since this scout was
        # sent, take more units themselves (and one scout stays on its way); a
        # worker waiting for the instant to settle (quiescent mode) takes one too
        if self.ready and self.busy + self.settling < self.capacity:
            if self.pausing or self.returns != returns:
                self._dispatch()
            else:  # (no more scouts than units waiting for one)
                for _ in range(min(2, self.queued - self.scouts)):
                    self.scouts += 1
                    self.nursery.start_soon(self._work, True, returns)
        checked = True  # (just now)
        streak = 0
        now = self.now
        # A quick step (see _StepState.quick) runs inline, in this loop, when no
        # attempt hook wants to surround its attempt (events are sent from here).
        inline = not self.hooks
        on_value = self.on_value  # (a store's: what it keeps of the value, see _durable)
        on_trio = self.be is _TRIO
        plain = self.plain and self.domain is None  # (rate and keyed limits: _take_gated)
        ready = self.ready
        heappop = heapq.heappop
        if plain:  # (_unit_at, inline)
            states, index_at, items = self.states, self.index_at, self.items
        # a worker may run the next step of a chain with no queue in between (not
        # under the harness, whose quiescent mode counts the queued units)
        hand_over = plain and not self.quiescent
        # quiescent mode: the harness's decision and settling in one call (see _settle_wait)
        settle_hook = getattr(self.settle_decision, "settle", None)
        next_fixed = self._next_fixed
        outer = _current.get(None)  # (what current_step() finds between two steps)
        handed: _StepState | None = None
        at: float | None = None  # when the unit before ended, if no checkpoint came since
        while True:
            # A cancellation point at every step boundary, and a schedule point
            # every YIELD_EVERY steps, so a long run of quick steps cannot starve
            # the other tasks (the count keeps it deterministic).
            streak += 1
            if streak >= YIELD_EVERY:
                streak = 0
                at = None
                self.pausing += 1
                try:
                    # (trio's checkpoint(), in two halves: a unit taken at the instant
                    # fail-fast stopped the run begins even if the cancellation has
                    # landed meanwhile, see _cancel_all)
                    if on_trio:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    else:
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                finally:
                    self.pausing -= 1
                if not self.stopping or now() > self.stop_at:
                    await checkpoint_if_cancelled()
            # (a unit taken at the stop instant begins: no cancel check while stopping)
            elif not checked and not self.stopping and probe.effectively_cancelled:
                await checkpoint_if_cancelled()
            checked = False
            st = unit.state
            quick = False
            try:
                if inline and st.quick:
                    # the one attempt of _attempts, without its options
                    spec = st.node.spec
                    try:
                        kwargs = unit.kwargs  # (the copies limit_key was called with, if it was)
                        if kwargs is None:
                            kwargs = self._kwargs(st, None) if spec.params else None
                    except _CopyError as exc:  # no attempt began
                        self._unit_failed(unit, exc.args[0], 0, now(), before=1)
                        at = None
                    else:
                        st.attempts = 1
                        started = st.started_at = now() if at is None else at
                        unit.attempt = 1
                        quick = True
                        if self.on_event is not None:
                            self._emit(_ev.StepStarted(st.name, 1, started, None, elapsed=started - self.started_at))
                elif st.external:
                    at = None
                    await self._execute(unit)
                else:
                    at = None
                    await self._attempts(unit)
            except Exception as exc:  # the engine's own error: never a bare group
                at = None
                self._engine_failed(unit, exc)
            except trio.Cancelled:  # (as below: the run raises it once, see execute())
                self.cut = True
                return
            if quick:
                # The step's await is in one handler only (none of the engine's
                # around it): a cancellation unwinds it as cheaply as a task
                # written by hand. No token is kept while the step runs (one
                # object less per waiting step): a scout's task ends with a
                # cancellation, and execute() sets the run's own task back.
                _current.set(unit)
                try:
                    value = await (spec.fn() if kwargs is None else spec.fn(**kwargs))
                    kept = None if on_value is None else on_value(st.name, None, value)
                except Exception as exc:
                    _current.set(outer)
                    at = None
                    try:
                        error: Exception = exc if on_trio else explain(exc, f"step {st.name!r}")
                        self._unit_failed(unit, error, 1, now())
                    except Exception as engine_error:
                        self._engine_failed(unit, engine_error)
                except trio.Cancelled:
                    # Cancelled from outside the step (the run's task group, or the
                    # caller's scope): the worker ends here, and execute() raises the
                    # cancellation once for the run, so that a wide fan-out cancelled
                    # from outside does not end in a group of one per task.
                    self.cut = True
                    if not scout:
                        _current.set(outer)
                    return
                else:
                    _current.set(outer)
                    at = now()
                    try:
                        self.busy -= 1  # (_release: a quick unit holds no limiter)
                        if unit.held:  # (but keyed slots)
                            self._give_back(unit)
                        if self.on_event is not None:
                            self._emit(
                                _ev.StepSucceeded(st.name, 1, at, at - started, None, elapsed=at - self.started_at)
                            )
                        handed = self._step_succeeded(st, value, 1, at, kept, hand_over)
                    except Exception as exc:
                        at = None
                        self._engine_failed(unit, exc)
            if self.quiescent:
                if settle_hook is None:
                    waiting = self._settle_wait() if self._contended() else None
                elif not self.hasty and self._contended():  # (_settle_wait, inline)
                    waiting = settle_hook(self.nursery, next_fixed)
                else:
                    waiting = None
                if waiting is not None:
                    self.settling += 1  # (_settle_instant, inline)
                    try:
                        await waiting
                    finally:
                        self.settling -= 1
            if handed is not None:  # the next step of a chain: this worker runs it
                # (in the slot the step before gave back: nothing else is ready)
                if self.stopping and now() > self.stop_at:
                    self._push(handed)  # (a stopped run never takes it)
                    return
                unit = handed
                handed = None
                self.busy += 1
                continue
            if (self.stopping and now() > self.stop_at) or self.busy >= self.capacity:
                return  # (fail-fast stopped the run before this instant: see _cancel_all)
            elif plain:  # (_take, inline)
                if not ready:
                    return
                self.queued -= 1
                key = heappop(ready)
                unit = states[index_at[key >> 32]] if not key & _ITEM_BITS else items.pop(key)
            else:
                next_unit = self._take()
                if next_unit is None:
                    return
                unit = next_unit
            self.busy += 1
            self.returns += 1
            if not self.scouts and self.ready and self.busy < self.capacity:
                self._dispatch()

    def _kwargs(self, st: _StepState, item: int | None) -> dict[str, Any]:
        node = st.node
        copy = node.spec.isolation == "copy"
        mapped = node.spec.map_param if item is not None else None
        kwargs: dict[str, Any] = {}
        for pname, dep in node.data_deps:
            if pname != mapped:
                upstream = self.states[dep]
                # an optional dependency skipped by a condition gives its default
                value = upstream.value if upstream.status is not _SKIPPED else node.defaults[pname]
                kwargs[pname] = _isolate(st.name, pname, value) if copy and type(value) not in _ATOMS else value
        resources = self.resources
        for p in node.inputs:
            if resources and p.key in resources:
                kwargs[p.name] = resources[p.key]  # shared: the very object
            elif p.name != mapped:
                value = self.inputs.get(p.key, p.default)
                kwargs[p.name] = _isolate(st.name, p.name, value) if copy else value
        if mapped is not None:
            value = st.items[item]  # type: ignore[index]
            kwargs[mapped] = _isolate(st.name, mapped, value, item) if copy else value
        return kwargs

    async def _execute(self, unit: _Unit) -> None:
        """Acquire the step's external limiters, then run its attempts."""
        acquired: list[tuple[int, Limiter]] = []
        try:
            for key, limiter in unit.state.external:
                try:
                    await limiter.acquire()
                except Exception as exc:  # a broken limiter fails the unit, which never began
                    add_note(exc, f"trioflow: acquiring the limiter {limiter!r} raised")
                    self._unit_failed(unit, exc, 0, self.now(), before=1)
                    return
                acquired.append((key, limiter))
            lent = dict(_held_limiters.get())
            for key, _ in acquired:
                lent[key] = self._lent_limiter()
            token = _held_limiters.set(lent)
            try:
                await self._attempts(unit)
            finally:
                _held_limiters.reset(token)
        finally:
            for _, limiter in reversed(acquired):
                limiter.release()

    def _lent_limiter(self) -> Limiter:
        if self.be is _TRIO:
            return trio.CapacityLimiter(1)
        return anyio.CapacityLimiter(1)

    async def _attempts(self, unit: _Unit) -> None:
        now = self.now
        st = unit.state
        spec = st.node.spec
        item = unit.item
        retry = spec.retry
        emit = self.on_event is not None
        attempt = 0
        while True:
            try:
                kwargs = unit.kwargs  # (the copies limit_key was called with, if it was)
                if kwargs is None:
                    kwargs = self._kwargs(st, item) if spec.params or item is not None else {}
                else:
                    unit.kwargs = None
            except _CopyError as exc:  # no attempt began, and another cannot help
                self._unit_failed(unit, exc.args[0], attempt, now(), before=attempt + 1)
                return
            attempt += 1
            if attempt > st.attempts:  # counts the attempts that began (a map step: its items' largest)
                st.attempts = attempt
            started = now()
            if st.started_at is None:
                st.started_at = started
            if item is not None:
                st.item_attempts[item] = attempt
                if attempt == 1:
                    st.item_times[item][0] = started
            if emit:
                self._emit(_ev.StepStarted(st.name, attempt, started, item, elapsed=started - self.started_at))
            unit.attempt = attempt
            token = _current.set(unit)
            try:
                if self.hooks:
                    value = await self._hooked(st, item, attempt, kwargs, started)
                elif spec.timeout is None:
                    value = await spec.fn(**kwargs)
                else:
                    value = await self._call_with_timeout(spec.fn, kwargs, spec.timeout, started, st.name, item, attempt)
                kept = None if self.on_value is None else self.on_value(st.name, item, value)
            except Exception as exc:
                error: Exception = exc if self.be is _TRIO else explain(exc, f"step {_label(st.name, item)!r}")
            else:
                at = now()
                self._unit_succeeded(unit, value, kept, attempt, at, started)
                return
            finally:
                _current.reset(token)
            at = now()
            wait, error = (None, error) if self.stopping else next_wait(
                retry, error, attempt, seed=self.seed, step=st.name, item=item
            )
            if wait is None:
                self._unit_failed(unit, error, attempt, at)
                return
            # Decide to retry only once the failures of this instant have landed
            # (one scheduling batch later; in quiescent mode, once every task is
            # blocked): a failure at the same instant stops the run, and this
            # attempt's failure is then reported too, whatever the schedule.
            await self._settle()
            if self.stopping:
                self._unit_failed(unit, error, attempt, at)
                return
            if emit:
                self._emit(_ev.StepRetrying(st.name, attempt, at, error, wait, item, elapsed=at - self.started_at))
            if _logging.logger.isEnabledFor(_logging.WARNING):
                _logging.retrying(self.flow_name, self.options.run_id, _label(st.name, item), attempt, error, wait)
            entry = [st.name, item, attempt, started, at, wait, None]
            self.retry_log.append(entry)
            self.retrying[unit] = (error, attempt, at)
            await self.be.sleep(wait)
            entry[6] = now()
            # the next attempt begins only once the failures of this instant have
            # landed, too: a run that stops now never begins it, whatever the schedule
            if unit in self.retrying:
                await self._settle()
            if unit not in self.retrying:  # the run stopped, and reported this failure
                return
            del self.retrying[unit]
            if self.stopping:  # stopped during the wait: cancelled, as the cancellation lands
                if at >= self.stop_at:
                    self._unit_failed(unit, error, attempt, at)
                return
            for rate in st.rates:  # every attempt takes a token (the unit keeps its slot meanwhile)
                line = rate._line(unit.gate_key if rate.keyed else None, self.domain)
                await wait_turn(line, unit.key, self.be)

    async def _hooked(
        self, st: _StepState, item: int | None, attempt: int, kwargs: dict[str, Any], started: float
    ) -> Any:
        """One attempt's call, wrapped by the installed attempt hooks."""
        spec = st.node.spec
        ready = self.started_at if st.ready_at is None else st.ready_at
        info = Attempt(
            self.flow_name, st.name, item, attempt, self.options.run_id,
            "async" if spec.runner is None else spec.runner.name, started,
            started - ready if attempt == 1 else 0.0,
        )

        async def proceed() -> Any:
            if spec.timeout is None:
                return await spec.fn(**kwargs)
            return await self._call_with_timeout(spec.fn, kwargs, spec.timeout, started, st.name, item, attempt)

        return await call_through(self.hooks, info, proceed)

    async def _call_with_timeout(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        seconds: float,
        started: float,
        name: str,
        item: int | None,
        attempt: int,
    ) -> Any:
        with self.be.cancel_scope(deadline=started + seconds) as scope:
            return await fn(**kwargs)
        assert scope.cancelled_caught
        raise TimeoutError(f"step {_label(name, item)!r} timed out after {seconds:g}s (attempt {attempt})")

    def _unit_succeeded(
        self, unit: _Unit, value: Any, kept: Any, attempt: int, now: float, started: float
    ) -> None:
        st = unit.state
        self._release(unit)
        if self.on_event is not None:
            self._emit(
                _ev.StepSucceeded(st.name, attempt, now, now - started, unit.item, elapsed=now - self.started_at)
            )
        if unit.item is None:
            self._step_succeeded(st, value, attempt, now, kept)
            return
        st.item_values[unit.item] = value
        st.attempts = max(st.attempts, attempt)
        st.item_status[unit.item] = StepStatus.SUCCEEDED  # type: ignore[index]
        st.item_times[unit.item][1] = now
        if self.item_recorder is not None:
            self.item_recorder(st.name, unit.item, value, kept, attempt, started, now)
        if st.ok_items is not None:
            st.ok_items.append(unit.item)
            for c in st.node.pipes:
                self._pipe_ready(self.states[c], unit.item)
        self._item_done(st, now)

    async def _settle(self) -> None:
        """Let the other tasks woken at this instant run first (not cancellable).

        One scheduling batch; in quiescent mode, until every task is blocked.
        """
        if self.quiescent:
            with self.be.cancel_scope(shield=True):
                await wait_all_tasks_blocked()
        elif self.be is _TRIO:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await anyio.lowlevel.cancel_shielded_checkpoint()

    def _unit_failed(
        self, unit: _Unit, error: Exception, attempt: int, now: float, before: int | None = None
    ) -> None:
        st = unit.state
        self._release(unit)
        if before is None:
            add_note(error, f"trioflow: step {_label(st.name, unit.item)!r} failed on attempt {attempt}")
        else:
            add_note(error, f"trioflow: step {_label(st.name, unit.item)!r} failed before attempt {before}")
        if self.on_event is not None:
            self._emit(_ev.StepFailed(st.name, attempt, now, error, unit.item, elapsed=now - self.started_at))
        if unit.item is None:
            self._step_failed(st, error, attempt, now)
            return
        st.attempts = max(st.attempts, attempt)
        st.item_status[unit.item] = StepStatus.FAILED  # type: ignore[index]
        st.item_times[unit.item][1] = now
        st.item_failures[unit.item] = error
        if st.node.spec.on_item_error == "none":  # the item's value stays None
            if _logging.logger.isEnabledFor(_logging.WARNING):
                _logging.item_dropped(self.flow_name, self.options.run_id, st.name, unit.item, attempt, error)
            self._item_done(st, now)
            return
        st.item_errors[unit.item] = error
        if self.fail_fast:
            if st.status is None:  # (items failing at the same instant fail the step once)
                self._step_failed(st, error, attempt, now)
        else:
            self._item_done(st, now)

    def _item_done(self, st: _StepState, now: float) -> None:
        st.items_left -= 1
        if st.items_left or st.status is not None:
            return
        if not st.item_errors:
            self._step_succeeded(st, st.item_values, st.attempts, now)
            return
        errors = [st.item_errors[i] for i in sorted(st.item_errors)]
        error: BaseException = (
            errors[0]
            if len(errors) == 1
            else ExceptionGroup(f"{len(errors)} items of map step {st.name!r} failed", errors)
        )
        self._step_failed(st, error, st.attempts, now)

    # -- the run ---------------------------------------------------------------------

    async def execute(self) -> RunResult:
        """Run every step; return the result or raise :class:`FlowError`.

        A checkpoint. Outside cancellation propagates as it is, after every
        step task has ended.
        """
        be = self.be
        self.started_at = self.now()
        self.finished_at = self.started_at
        scope = enter_run(self.capacity)  # runners' per-run state (see _runners)
        if self.on_event is not None:
            self._emit(self._started_event())
        if _logging.logger.isEnabledFor(_logging.INFO):
            _logging.run_started(self.flow_name, self.options.run_id, len(self.states), len(self.resumed))
        ended = False
        escaped: BaseException | None = None
        try:
            try:
                async with be.open_nursery() as nursery:
                    self.nursery = nursery
                    if self.resumed:  # steps recorded as succeeded count as done
                        for st in self.states:
                            st.pending = sum(
                                1 for d in st.node.deps if self.states[d].status is not StepStatus.SUCCEEDED
                            )
                    initial = [st for st in self.states if st.pending == 0 and st.status is None]
                    if self.plain and not self.plan.conditional:
                        # the first units at once, in one heap
                        heap = self.ready
                        heap.extend(st.order for st in initial if st.node.spec.map_over is None)
                        heapq.heapify(heap)
                        self.queued += len(heap)
                        if len(heap) < len(initial):
                            for st in initial:
                                if st.node.spec.map_over is not None:
                                    self._make_ready(st)
                    else:
                        for st in initial:
                            self._make_ready(st)
                    if len(initial) > 1 and self.on_event is not None:
                        self._announce(initial, self.started_at)
                    if self.quiescent:
                        # (the harness asks about the tasks of the run's nursery)
                        self._dispatch()
                    else:
                        # this task is the run's first worker: no task to start for a chain
                        outer = _current.get(None)
                        try:
                            await self._work(False, self.returns)
                        except BaseException:
                            _current.set(outer)  # (left at the step the worker was running)
                            raise
                if self.cut:  # (workers ended with their steps' cancellation: is it the caller's?)
                    await be.checkpoint_if_cancelled()
                ended = True
            except BaseExceptionGroup as group:
                # our own nursery wrapped it: KeyboardInterrupt, SystemExit and
                # cancellation leave as themselves, engine errors as a FlowError
                escaped, errors = split_escaped(group, _cancelled_class(be))
                self.internal_errors.extend(errors)
                ended = escaped is None
        finally:
            exit_run(scope)
            self.finished_at = self.now()
            if self.domain is not None:
                self._leave_lines()
            self._cancel_unfinished()
            if not ended:  # cancelled from outside
                self._finished("cancelled")
        if escaped is not None:
            for exc in self.event_errors:
                add_note(escaped, f"trioflow: the on_event callback raised {exc!r} during the run")
            try:
                raise escaped
            finally:
                escaped = None  # (its traceback holds this frame: no cycle through the run)
        self._settle_map_errors()
        result = self.result()
        self._finished("failed" if self.failures or self.internal_errors else "succeeded")
        if self.failures or self.internal_errors or self.event_errors:
            raise self._flow_error(result)
        return result

    def _started_event(self) -> _ev.RunStarted:
        resumed = self.resumed
        return _ev.RunStarted(
            self.flow_name,
            self.options.run_id,
            self.started_at,
            tuple(st.name for st in self.states),
            tuple(st.name for st in self.states if st.name in resumed) if resumed else (),
            limiters={
                name: (cap, tuple(st.name for st in self.states if name in st.node.spec.limiters))
                for name, cap in self._capacities().items()
                if name in self.options.limiters
            },
        )

    def _finished(self, status: str) -> None:
        """Send RunFinished and log the run's end (what is wanted of either)."""
        emit = self.on_event is not None
        log = _logging.logger.isEnabledFor(_logging.INFO)
        if not emit and not log:
            return
        failed = tuple(st.name for st in sorted(self.failures, key=lambda s: s.node.index))
        duration = self.finished_at - self.started_at
        if emit:
            self._emit(
                _ev.RunFinished(
                    self.flow_name, self.finished_at, duration, status == "succeeded", failed, status, elapsed=duration
                )
            )
        if log:
            _logging.run_finished(self.flow_name, self.options.run_id, status, duration, failed)

    def _settle_map_errors(self) -> None:
        """A map step whose items failed together (fail-fast) holds them all, in item order."""
        if not self.fail_fast:
            return
        for st in self.failures:
            errors = getattr(st, "item_errors", None)
            if errors and len(errors) > 1:
                ordered = [errors[i] for i in sorted(errors)]
                st.error = ExceptionGroup(f"{len(ordered)} items of map step {st.name!r} failed", ordered)

    def _cancel_unfinished(self) -> None:
        cancelled = StepStatus.CANCELLED
        if self.recorder is None and self.on_event is None:  # (the common case, a cancelled wide fan-out)
            for st in self.states:
                if st.status is None:
                    st.status = cancelled
            return
        for st in self.states:
            if st.status is None:
                st.status = cancelled
                self._record(st)
                if self.on_event is not None:
                    self._emit(
                        _ev.StepCancelled(
                            st.name,
                            self.finished_at,
                            st.started_at is not None,
                            elapsed=self.finished_at - self.started_at,
                        )
                    )

    def result(self) -> RunResult:
        """The run's result, once every step has its final status.

        Step results are made when first looked up, from the step states,
        which the result keeps: each step's usage is frozen now (so a
        ``current_step()`` kept past the run changes nothing), and a map step's
        list of items is let go (it is in no result).
        """
        states = self.states
        for st in [st for st in states if st.usage is not _NO_USAGE]:
            st.usage = _frozen_usage(st.usage)  # type: ignore[assignment]
        for i in _runtime(self.plan).maps:
            states[i].__dict__.pop("items", None)
        return RunResult(
            flow=self.flow_name,
            steps=LazySteps(
                self.plan.by_name,
                lambda i: _step_result(states[i]),
                self.options.functions,
                functools.partial(_step_fields_at, states),
            ),
            started_at=self.started_at,
            finished_at=self.finished_at,
            run_id=self.options.run_id,
            _trace=RunTrace(self.plan, self._capacities(), self.resumed, self.retry_log),
        )

    def _capacities(self) -> dict[str, float]:
        caps: dict[str, float] = {}
        for name, value in self.options.limiters.items():
            if isinstance(value, RateLimit | KeyedLimiter):
                continue  # a rate or a limit per key: no one capacity to draw
            caps[name] = value if isinstance(value, int) else value.total_tokens
        if self.options.max_concurrent is not None:
            caps["max_concurrent (run)"] = self.options.max_concurrent
        return caps

    def _flow_error(self, result: RunResult) -> FlowError:
        failed = sorted(self.failures, key=lambda s: s.node.index)
        errors: list[Exception] = []
        for st in failed:
            if st.node.spec.map_over is not None and len(st.item_errors) > 1:
                errors.extend(st.item_errors[i] for i in sorted(st.item_errors))
            else:
                assert isinstance(st.error, Exception)
                errors.append(st.error)
        names = ", ".join(repr(s.name) for s in failed)
        if failed:
            message = f"{len(failed)} step{'s' if len(failed) > 1 else ''} of flow {self.flow_name!r} failed: {names}"
        else:
            message = f"flow {self.flow_name!r}: no step failed"
        if self.internal_errors:
            errors.extend(self.internal_errors)
            message += f"; {len(self.internal_errors)} internal error(s)"
        if self.event_errors:
            errors.extend(self.event_errors)
            message += "; the on_event callback raised (the steps ran on regardless: see .result)"
        if self.fail_fast and result.cancelled:
            message += f"; {len(result.cancelled)} cancelled"
        if result.skipped:
            message += f"; {len(result.skipped)} skipped"
        return FlowError(message, errors, result)


def _cancelled_class(be: Backend) -> type[BaseException]:
    return trio.Cancelled if be is _TRIO else anyio.get_cancelled_exc_class()


class _CopyError(Exception):
    """A step's argument could not be copied; ``args[0]`` is the TypeError for the user."""


def _isolate(step: str, param: str, value: Any, item: int | None = None) -> Any:
    """:func:`isolate`, with an error that names the step, the parameter and the type."""
    try:
        return isolate(value)
    except Exception as exc:
        error = TypeError(
            f"step {_label(step, item)!r} cannot get its own copy of {param!r}: a "
            f"{type(value).__module__}.{type(value).__qualname__} cannot be deep-copied ({exc}); "
            f"pass it as a shared resource (flow.run(resources=...)) or declare the step "
            f"with isolation='share' so that it gets the value as it is"
        )
        error.__cause__ = exc
        raise _CopyError(error) from None


def _step_result(st: _StepState) -> StepResult:
    (name, status, value, error, attempts, started, finished, usage, skip_reason, items) = _step_fields(st)
    return StepResult(
        name, status, value, error, attempts, started, finished, _frozen_usage(usage), skip_reason,
        tuple(StepResult(*item) for item in items),
    )


def _step_fields_at(states: list[_StepState], i: int) -> tuple[Any, ...]:
    """``_step_fields(states[i])``, with one call less (``functools.partial`` of it is a
    run result's ``fields``, called for every step when two runs are compared)."""
    st = states[i]
    if st.item_status is None and st.status is StepStatus.SUCCEEDED:  # (the usual case)
        return _SUCCEEDED_FIELDS(st)
    return _step_fields(st)


#: The fields of a succeeded plain step's result, in order (read in C).
_SUCCEEDED_FIELDS: Final = operator.attrgetter(
    "name", "status", "value", "error", "attempts", "started_at", "finished_at", "usage", "skip_reason", "no_items"
)


def _step_fields(st: _StepState) -> tuple[Any, ...]:
    """The fields of ``_step_result(st)``, in order: two runs' steps compare by them
    without making their results (see :class:`LazySteps`). A map step's items are
    the fields of their results too (items that never ended were cancelled)."""
    status = st.status
    assert status is not None
    ended = status is StepStatus.SUCCEEDED or status is StepStatus.FAILED
    items: tuple[Any, ...] = ()
    if st.item_status is not None:
        items = tuple(
            (
                f"{st.name}[{i}]",
                StepStatus.CANCELLED if item is None else item,
                st.item_values[i] if item is StepStatus.SUCCEEDED else None,
                st.item_failures.get(i),
                st.item_attempts[i],
                st.item_times[i][0],
                None if item is None else st.item_times[i][1],
            )
            for i, item in enumerate(st.item_status)
        )
    return (
        st.name,
        status,
        st.value if status is StepStatus.SUCCEEDED else None,
        st.error,
        st.attempts,
        st.started_at,
        st.finished_at if ended else None,
        st.usage,
        st.skip_reason,
        items,
    )


def _frozen_usage(usage: Mapping[str, float]) -> Mapping[str, float]:
    """A read-only copy of a step's usage (the usage itself once the run has frozen it)."""
    if type(usage) is MappingProxyType:
        return usage
    return MappingProxyType(dict(usage)) if usage else _NO_USAGE


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
