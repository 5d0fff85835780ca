"""The node executor (seed 1) on trioflow's engine: see :mod:`trioflow.nodes`.

``ParallelExecutor.execute_parallel`` is :func:`trioflow.gather` over one call
per node, so limits, cancellation and result order are the engine's; each call
deep-copies the context first and captures the node's exception in its
:class:`NodeResult`. ``merge_states`` and :func:`canonical` are pure.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import attrs

from ._exceptions import TrioflowError, add_note
from ._graph import check_async_callable
from ._map import gather
from ._scheduler import current_backend

StateT = TypeVar("StateT")
"""The type of :attr:`RunContext.state` (any type that ``copy.deepcopy`` can copy)."""


@attrs.frozen
class End:
    """Returned by a node to end :func:`run_graph` (the class itself works too)."""


@runtime_checkable
class BaseNode(Protocol):
    """A node: anything with ``async def run(self, ctx)``.

    ``run`` works on ``ctx`` (its own deep copy, when run in parallel) and
    returns the next node, :class:`End`, or a list of nodes to fan out in
    parallel (:func:`run_graph`). A node that fans out may set a
    ``merge_strategy`` attribute to choose how the branches are merged.
    """

    async def run(self, ctx: RunContext[Any]) -> BaseNode | End | type[End] | Sequence[BaseNode]:
        """Do the node's work on ``ctx`` and say what runs next."""
        ...


@attrs.define
class RunContext(Generic[StateT]):
    """What nodes work on: the state and facts about the execution.

    ``state`` may be a pydantic model, an attrs class, a dataclass, a dict, or
    any value ``copy.deepcopy`` can copy. Nodes mutate their context (the
    state, ``metadata``, ``provenance``) freely: in parallel, each node has its
    own deep copy.

    Attributes:
        state: the user's state.
        execution_id: identifies the execution (for logs and records).
        user_id: the user the execution runs for, if any.
        metadata: free-form facts; merged key by key in node order.
        provenance: what happened, in order (nodes append to it); merged in node order.
    """

    state: StateT
    execution_id: str
    user_id: str | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    provenance: list[Any] = attrs.Factory(list)


@attrs.frozen
class NodeResult(Generic[StateT]):
    """How one node ran in :meth:`ParallelExecutor.execute_parallel`.

    Attributes:
        node: the node.
        next_node: what its ``run`` returned (``None`` if it raised).
        context: its own copy of the context, as the node left it.
        execution_time_ms: how long ``run`` took, on the async library's clock
            (virtual and exact under ``trio.testing.MockClock``).
        error: the exception ``run`` raised, or ``None``.
        inherited_provenance: how many ``context.provenance`` entries the node
            inherited (the entries after them are its own); merging keeps the
            inherited ones once.
    """

    node: BaseNode
    next_node: Any
    context: RunContext[StateT]
    execution_time_ms: float
    error: Exception | None = None
    inherited_provenance: int = attrs.field(default=0, kw_only=True)

    @property
    def ok(self) -> bool:
        """True when the node returned without raising."""
        return self.error is None


class MergeStrategy(enum.StrEnum):
    """How :func:`merge_states` picks the merged context."""

    FIRST_SUCCESS = "first_success"
    """The first successful result in node order."""
    ALL_SUCCESS = "all_success"
    """Every node must succeed; the first node's state, everyone's provenance."""
    MAJORITY = "majority"
    """The most common final state (by :func:`canonical`), ties to node order."""


class ParallelExecutionError(ExceptionGroup[Exception], TrioflowError):
    """Some nodes failed where all had to succeed (``MergeStrategy.ALL_SUCCESS``).

    An :class:`ExceptionGroup` of the failed nodes' exceptions, so ``except*``
    works.

    Attributes:
        failed_nodes: the :class:`NodeResult` of each failed node, in node order.
        partial_results: the :class:`NodeResult` of each node that succeeded.
    """

    failed_nodes: list[NodeResult[Any]]
    partial_results: list[NodeResult[Any]]

    def __new__(
        cls, failed_nodes: Sequence[NodeResult[Any]], partial_results: Sequence[NodeResult[Any]]
    ) -> Self:
        failed = list(failed_nodes)
        errors = [r.error for r in failed if r.error is not None]
        if not errors or len(errors) != len(failed):
            raise ValueError(
                "ParallelExecutionError(failed_nodes, partial_results) needs at least one "
                "failed_nodes entry, each a NodeResult whose .error is set"
            )
        names = ", ".join(f"{_node_name(r.node)}: {r.error!r}" for r in failed[:10])
        total = len(failed) + len(partial_results)
        message = f"{len(failed)} of {total} nodes failed ({names})"
        return super().__new__(cls, message, errors)

    def __init__(
        self, failed_nodes: Sequence[NodeResult[Any]], partial_results: Sequence[NodeResult[Any]]
    ) -> None:
        errors = [r.error for r in failed_nodes if r.error is not None]
        super().__init__(self.message, errors)
        self.failed_nodes = list(failed_nodes)
        self.partial_results = list(partial_results)

    def derive(self, excs: Sequence[Exception]) -> ParallelExecutionError:  # type: ignore[override]
        keep = {id(e) for e in excs}
        failed = [r for r in self.failed_nodes if id(r.error) in keep]
        if len(failed) != len(excs):  # split() on nested groups: keep what we can name
            failed = self.failed_nodes
        return ParallelExecutionError(failed, self.partial_results)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failed_nodes, self.partial_results))


class MergeError(TrioflowError):
    """Nothing to merge: no node succeeded (or there were no results).

    ``__cause__`` is an :class:`ExceptionGroup` of the nodes' errors, if any;
    ``results`` are the results that were given.
    """

    def __init__(self, message: str, results: Sequence[NodeResult[Any]] = ()) -> None:
        super().__init__(message)
        self.results: list[NodeResult[Any]] = list(results)


# -- canonical serialization -----------------------------------------------------------


def canonical(value: object) -> str:
    """A canonical text form of a state, equal exactly when the states are equal in content.

    Handles pydantic models (without importing pydantic unless it is already
    imported), attrs classes, dataclasses, dicts (keys sorted), lists, tuples,
    sets (sorted), enums, and plain objects (their ``__dict__``); the class
    name is part of the form, so two classes with the same fields differ.
    """
    return json.dumps(_plain(value, 0), separators=(",", ":"), ensure_ascii=False)


def _qualname(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain(value: object, depth: int) -> Any:
    if value is None or (isinstance(value, bool | int | str) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else {"float": repr(value)}
    if depth > 200:
        return {"repr": repr(value)}
    d = depth + 1
    if isinstance(value, enum.Enum):
        return {"enum": _qualname(value), "value": _plain(value.value, d)}
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        dump = getattr(value, "model_dump", None) or value.dict  # pydantic 2, else 1
        return {"model": _qualname(value), "fields": _plain(dump(), d)}
    cls: Any = type(value)
    if attrs.has(cls):
        fields = {f.name: _plain(getattr(value, f.name), d) for f in attrs.fields(cls)}
        return {"attrs": _qualname(value), "fields": fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _plain(getattr(value, f.name), d) for f in dataclasses.fields(value)}
        return {"dataclass": _qualname(value), "fields": fields}
    if isinstance(value, Mapping):
        pairs = [(_plain(k, d), _plain(v, d)) for k, v in value.items()]
        pairs.sort(key=lambda kv: json.dumps(kv[0], separators=(",", ":")))
        return {"dict": [list(kv) for kv in pairs]}
    if isinstance(value, list):
        return [_plain(v, d) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_plain(v, d) for v in value]}
    if isinstance(value, set | frozenset):
        items = [_plain(v, d) for v in value]
        items.sort(key=lambda v: json.dumps(v, separators=(",", ":")))
        return {"set": items}
    if isinstance(value, bytes | bytearray):
        return {"bytes": bytes(value).hex()}
    fields_dict = getattr(value, "__dict__", None)
    if isinstance(fields_dict, dict):
        return {"object": _qualname(value), "fields": _plain(fields_dict, d)}
    return {"repr": repr(value)}


# -- merging ---------------------------------------------------------------------------


def _node_name(node: object) -> str:
    return type(node).__name__


def _check_strategy(strategy: object) -> MergeStrategy:
    if isinstance(strategy, MergeStrategy):
        return strategy
    if isinstance(strategy, str) and strategy in MergeStrategy._value2member_map_:
        return MergeStrategy(strategy)
    choices = ", ".join(f"MergeStrategy.{m.name}" for m in MergeStrategy)
    raise ValueError(f"merge strategy {strategy!r} is not one of {choices}")


def _merge(
    results: Sequence[NodeResult[StateT]], strategy: MergeStrategy | str
) -> tuple[RunContext[StateT], list[NodeResult[StateT]]]:
    """The merged context and the results it was merged from."""
    strategy = _check_strategy(strategy)
    results = list(results)
    for i, r in enumerate(results):
        if not isinstance(r, NodeResult):
            raise TypeError(f"merge_states() takes NodeResults (got {r!r} at position {i})")
    successes = [r for r in results if r.error is None]
    if strategy is MergeStrategy.ALL_SUCCESS and len(successes) < len(results):
        raise ParallelExecutionError([r for r in results if r.error is not None], successes)
    if not successes:
        errors = [r.error for r in results if r.error is not None]
        what = f"all {len(results)} nodes failed" if results else "there are no results"
        cause = ExceptionGroup("the nodes' errors", errors) if errors else None
        raise MergeError(f"cannot merge states with {strategy.name}: {what}", results) from cause
    if strategy is MergeStrategy.FIRST_SUCCESS:
        chosen = successes[:1]
    elif strategy is MergeStrategy.ALL_SUCCESS:
        chosen = successes
    else:
        forms = [canonical(r.context.state) for r in successes]
        counts = Counter(forms)
        best = max(counts.values())
        winner = next(f for f in forms if counts[f] == best)  # ties: first in node order
        chosen = [r for r, f in zip(successes, forms, strict=True) if f == winner]
    first = chosen[0].context
    provenance = list(first.provenance)
    metadata = dict(first.metadata)
    for r in chosen[1:]:
        provenance.extend(r.context.provenance[r.inherited_provenance :])
        metadata.update(r.context.metadata)
    merged = RunContext(
        state=first.state,
        execution_id=first.execution_id,
        user_id=first.user_id,
        metadata=metadata,
        provenance=provenance,
    )
    return merged, chosen


def merge_states(
    results: Sequence[NodeResult[StateT]], strategy: MergeStrategy | str = MergeStrategy.FIRST_SUCCESS
) -> RunContext[StateT]:
    """Merge parallel results into one context.

    * ``FIRST_SUCCESS``: the first successful result in node order.
    * ``ALL_SUCCESS``: every node must have succeeded; the state is the first
      node's, ``metadata`` is merged key by key in node order (later nodes
      win), and ``provenance`` is the inherited entries once, then each node's
      own entries in node order.
    * ``MAJORITY``: the most common final state among the successes, compared
      by :func:`canonical` serialization, ties to node order; ``metadata`` and
      ``provenance`` are merged over the results that share that state.

    Failed results are ignored except by ``ALL_SUCCESS``. A new
    :class:`RunContext` is returned; its state is the chosen result's state
    object (not a copy).

    Raises:
        ParallelExecutionError: ``ALL_SUCCESS`` and a node failed.
        MergeError: no node succeeded, or ``results`` is empty.
        ValueError: an unknown strategy.
    """
    return _merge(results, strategy)[0]


# -- execution -------------------------------------------------------------------------


def _check_node(node: object, where: str) -> None:
    if isinstance(node, type):
        raise TypeError(
            f"{where} is the class {node.__name__}, not a node; pass an instance: {node.__name__}()"
        )
    run = getattr(node, "run", None)
    if run is None:
        raise TypeError(
            f"{where} is {node!r}, which has no run method; a node needs "
            f"'async def run(self, ctx)' (see trioflow.nodes.BaseNode)"
        )
    check_async_callable(run, f"{where} ({_node_name(node)}.run)")


def _is_end(value: object) -> bool:
    return value is End or isinstance(value, End)


def _check_next(value: object, node: object) -> None:
    if _is_end(value):
        return
    if isinstance(value, list | tuple):
        if not value:
            raise TypeError(f"node {_node_name(node)} returned an empty list; return End() to stop")
        for i, n in enumerate(value):
            _check_node(n, f"node {_node_name(node)} returned a list whose item {i}")
        return
    _check_node(value, f"node {_node_name(node)}'s next node")


def _check_max_concurrent(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"ParallelExecutor(max_concurrent=...) must be an int >= 1 (got {value!r} that is a "
            f"{type(value).__name__})"
        )
    if value < 1:
        raise ValueError(f"ParallelExecutor(max_concurrent={value!r}) must be at least 1")


class _NodeCall:
    """One node's run on its own copy of the context, as a zero-argument call for ``gather``."""

    __slots__ = ("__name__", "ctx", "inherited", "node")

    def __init__(self, node: BaseNode, ctx: RunContext[Any], inherited: int) -> None:
        self.node = node
        self.ctx = ctx
        self.inherited = inherited
        self.__name__ = _node_name(node)  # what current_step().name shows outside a flow

    async def __call__(self) -> NodeResult[Any]:
        be = current_backend()
        own = copy.deepcopy(self.ctx)
        started = be.current_time()
        try:
            next_node = await self.node.run(own)
            _check_next(next_node, self.node)
        except Exception as exc:
            elapsed = (be.current_time() - started) * 1000
            return NodeResult(self.node, None, own, elapsed, exc, inherited_provenance=self.inherited)
        elapsed = (be.current_time() - started) * 1000
        return NodeResult(self.node, next_node, own, elapsed, None, inherited_provenance=self.inherited)


@attrs.frozen
class ParallelExecutor:
    """Runs independent nodes concurrently, each on its own deep copy of the context.

    Built on :func:`trioflow.gather`: at most ``max_concurrent`` nodes at once,
    cancellation from outside stops every node at its next await, results in
    node order. Works under trio and asyncio.

    Args:
        max_concurrent: at most this many nodes at once (an int >= 1).
    """

    max_concurrent: int = attrs.field(default=4, validator=_check_max_concurrent)

    async def execute_parallel(
        self, nodes: Sequence[BaseNode], ctx: RunContext[StateT]
    ) -> list[NodeResult[StateT]]:
        """Run ``nodes`` concurrently; never raises for a node's own exception.

        A checkpoint. Each node runs on a deep copy of ``ctx`` (``ctx`` itself
        is never changed); a node that raises (or returns something that is not
        a node, a list of nodes or :class:`End`) has the exception in its
        result's ``error``, and the others go on.

        Returns:
            One :class:`NodeResult` per node, in node order.

        Raises:
            TypeError: a node has no ``async def run(self, ctx)``, or ``ctx`` is
                not a :class:`RunContext`.
        """
        nodes = list(nodes)
        if not isinstance(ctx, RunContext):
            raise TypeError(
                f"execute_parallel(nodes, ctx) takes a trioflow.nodes.RunContext as ctx "
                f"(got {ctx!r}); wrap your state: RunContext(state, execution_id='...')"
            )
        for i, node in enumerate(nodes):
            _check_node(node, f"execute_parallel(): node {i}")
        inherited = len(ctx.provenance)
        calls = [_NodeCall(node, ctx, inherited) for node in nodes]
        return await gather(*calls, max_concurrent=self.max_concurrent)

    async def execute_single_with_isolation(
        self, node: BaseNode, ctx: RunContext[StateT]
    ) -> NodeResult[StateT]:
        """Run one node on its own deep copy of ``ctx``; never raises for the node's own exception.

        The building block of :meth:`execute_parallel`: ``ctx`` itself is never
        changed, and an exception the node raises is in the result's ``error``.
        Always a checkpoint.

        Returns:
            The node's :class:`NodeResult`.

        Raises:
            TypeError: ``node`` has no ``async def run(self, ctx)``, or ``ctx`` is
                not a :class:`RunContext`.
        """
        if not isinstance(ctx, RunContext):
            raise TypeError(
                f"execute_single_with_isolation(node, ctx) takes a trioflow.nodes.RunContext as "
                f"ctx (got {ctx!r}); wrap your state: RunContext(state, execution_id='...')"
            )
        _check_node(node, "execute_single_with_isolation(): node")
        await current_backend().checkpoint()
        result: NodeResult[StateT] = await _NodeCall(node, ctx, len(ctx.provenance))()
        return result

    def merge_states(
        self,
        results: Sequence[NodeResult[StateT]],
        strategy: MergeStrategy | str = MergeStrategy.FIRST_SUCCESS,
    ) -> RunContext[StateT]:
        """:func:`merge_states`, as a method."""
        return merge_states(results, strategy)


def _rejoin(fanner: object, strategy: MergeStrategy, results: list[NodeResult[Any]], kept: list[NodeResult[Any]]) -> Any:
    """The next node after a merged fan-out: the first kept branch's; under
    ``ALL_SUCCESS`` every branch must lead to the same node type (or End)."""
    nexts = [r.next_node for r in kept]
    if strategy is MergeStrategy.ALL_SUCCESS:
        kinds = {End if _is_end(n) else type(n) for n in nexts}
        if len(kinds) > 1:
            raise MergeError(
                f"the {len(nexts)} branches fanned out by {_node_name(fanner)} do not "
                f"rejoin: they return next nodes of different types "
                f"({', '.join(sorted(k.__name__ for k in kinds))}); return the same "
                f"node type (or End) from every branch",
                results,
            )
    return nexts[0]


async def _fan_out(
    fanner: object, nodes: Sequence[BaseNode], ctx: RunContext[StateT], executor: ParallelExecutor, default: MergeStrategy
) -> tuple[RunContext[StateT], Any]:
    """Run ``nodes`` in parallel, each branch to its rejoin, and merge them with the
    strategy of ``fanner`` (the node that returned them): the merged context and next node."""
    strategy = _check_strategy(getattr(fanner, "merge_strategy", default))
    results = await executor.execute_parallel(nodes, ctx)
    nested = [i for i, r in enumerate(results) if r.error is None and isinstance(r.next_node, list | tuple)]
    if nested:  # a branch that fans out again: all its branches run, merged by its own strategy

        async def settle(i: int) -> None:
            r = results[i]
            try:
                merged, following = await _fan_out(r.node, r.next_node, r.context, executor, default)
            except Exception as exc:  # the nested fan-out failed: so did this branch
                results[i] = attrs.evolve(r, next_node=None, error=exc)
            else:
                results[i] = attrs.evolve(r, next_node=following, context=merged)

        await gather(*(functools.partial(settle, i) for i in nested))
    merged, kept = _merge(results, strategy)
    return merged, _rejoin(fanner, strategy, results, kept)


async def run_graph(
    start_node: BaseNode,
    ctx: RunContext[StateT],
    *,
    executor: ParallelExecutor | None = None,
    strategy: MergeStrategy | str = MergeStrategy.ALL_SUCCESS,
) -> RunContext[StateT]:
    """Run ``start_node``, then each next node it leads to, until one returns :class:`End`.

    A node that returns a list of nodes fans them out through ``executor``
    (each on its own copy of the context), the results are merged with
    :func:`merge_states`, and the graph goes on from the merged context with
    the next node of the result(s) kept. The strategy is the fanning-out
    node's ``merge_strategy`` attribute if it has one, else ``strategy``.
    Under ``ALL_SUCCESS`` the branches must rejoin: their next nodes must be of
    one type (or all :class:`End`); the first branch's next node is taken.
    A branch that itself returns a list fans out again, on its own context:
    every branch of every level runs, and each nested fan-out is merged with
    its own node's ``merge_strategy`` (a nested fan-out that fails to merge
    fails its branch) before the outer merge.

    ``ctx`` itself is not changed: the graph runs on a deep copy. A
    checkpoint; works under trio and asyncio.

    Args:
        start_node: the first node.
        ctx: the initial context.
        executor: runs fan-outs (default: ``ParallelExecutor()``).
        strategy: the default merge strategy for fan-outs.

    Returns:
        The final context.

    Raises:
        ParallelExecutionError: an ``ALL_SUCCESS`` fan-out had failures.
        MergeError: no branch of a fan-out succeeded, or branches did not rejoin.
        Exception: whatever a node outside a fan-out raised, with a note naming it.
    """
    default = _check_strategy(strategy)
    executor = ParallelExecutor() if executor is None else executor
    if not isinstance(ctx, RunContext):
        raise TypeError(
            f"run_graph(start_node, ctx) takes a trioflow.nodes.RunContext as ctx (got {ctx!r}); "
            f"wrap your state: RunContext(state, execution_id='...')"
        )
    _check_node(start_node, "run_graph(): start_node")
    ctx = copy.deepcopy(ctx)
    current: Any = start_node
    previous: object = None
    count = 0
    while not _is_end(current):
        count += 1
        if isinstance(current, list | tuple):
            ctx, following = await _fan_out(previous, current, ctx, executor, default)
            previous, current = current, following
            continue
        try:
            following = await current.run(ctx)
            _check_next(following, current)
        except Exception as exc:
            add_note(exc, f"trioflow.nodes.run_graph: node {_node_name(current)} (node {count}) raised")
            raise
        previous, current = current, following
    return ctx
