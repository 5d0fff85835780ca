"""The pure, synchronous model of a flow: steps, edges, validation, plans.

Nothing here is async. :class:`StepSpec` describes one step as the user
declared it; :func:`compile_plan` checks the whole graph (unknown names,
cycles, map targets) and returns a :class:`Plan` with dependency edges,
children, a topological order, stages, and each step's *rank*: the longest
cost-weighted path from the step to the end of the flow, which the scheduler
uses as its priority when capacity is short.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import inspect
import math
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FunctionType, MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar

import attrs

from ._exceptions import GraphError
from ._retry import Retry

T = TypeVar("T")

Isolation = Literal["copy", "share"]
OnItemError = Literal["fail", "none"]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close candidate exists, else ``""``."""
    import difflib  # only for error messages: not worth its import time in every program

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# code flags (inspect.CO_*), read directly on the hot path of adding a step
_CO_COROUTINE = inspect.CO_COROUTINE
_NO_DEFAULTS: Mapping[str, Any] = MappingProxyType({})
_NO_STEPS: frozenset[int] = frozenset()


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def check_async_callable(fn: object, what: str, *, runners: bool = False) -> None:
    """Raise a :class:`TypeError` showing the fix unless ``fn`` is an async callable.

    ``runners``: the caller takes ``runner=``, so the fix for a plain function names it.
    """
    if type(fn) is FunctionType and fn.__code__.co_flags & _CO_COROUTINE:
        return  # an ``async def`` function: the common case, decided by one flag
    if inspect.iscoroutine(fn):
        qual = getattr(fn, "__qualname__", "fn")
        fn.close()  # never awaited: close it so Python does not warn about it
        raise TypeError(
            f"{what} got a coroutine object ({qual}(...) was already called); "
            f"pass the async function itself: {qual}, not {qual}()"
        )
    if not callable(fn):
        raise TypeError(f"{what} expects an async function (got {fn!r} that is a {type(fn).__name__})")
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{what} expects an async function, but {getattr(fn, '__name__', fn)!r} is an async generator function "
            f"(it yields); a step returns one value: collect the items into a list and return it, "
            f"or make each item a map item with map_over="
        )
    if isinstance(fn, type):
        call = getattr(fn, "__call__", None)  # noqa: B004 - the instances' __call__
        if call is not None and inspect.iscoroutinefunction(call):
            raise TypeError(
                f"{what} got the class {fn.__name__}, whose instances are async callables; pass an "
                f"instance: {fn.__name__}()"
            )
    if not _is_async_callable(fn):
        name = getattr(fn, "__name__", repr(fn))
        if runners:
            raise TypeError(
                f"{what} expects an async function, but {name!r} is a plain function; "
                f"define it with 'async def', or run it in a worker: "
                f"@flow.step(runner=\"thread\") for blocking code, "
                f"@flow.step(runner=\"process\") for CPU-bound code"
            )
        raise TypeError(
            f"{what} expects an async function, but {name!r} is a plain function; "
            f"define it with 'async def', or wrap blocking code as "
            f"'async def {name}(...): return await trio.to_thread.run_sync(...)'"
        )


def _names(value: str | Iterable[str] | None, option: str, step: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(
            f"step {step!r}: {option}= takes a name or a list of names (got {value!r})"
        ) from None
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"step {step!r}: {option}= names must be strings (got {n!r} in {value!r})")
    return names


class Param(NamedTuple):
    """A parameter of a step function and what it may bind to.

    A named tuple, not an attrs class: a flow has one per parameter of every
    step, and a tuple is made in half the time.
    """

    name: str
    has_default: bool
    default: Any = None
    source: str | None = None  # the step or input it receives (``bind=``); None: its own name

    @property
    def key(self) -> str:
        """The name of the step or flow input this parameter receives."""
        return self.name if self.source is None else self.source


@attrs.frozen(eq=False)
class StepSpec:
    """A step as declared: the function and its options, validated."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    after: tuple[str, ...] = ()
    limiters: tuple[str, ...] = ()
    retry: Retry | None = None
    timeout: float | None = None
    map_over: str | None = None
    max_concurrent: int | None = None
    cost: float = 1.0
    isolation: Isolation = "copy"
    # the ``description=`` given; None: the first line of the function's docstring,
    # read only when asked for (see ``description``)
    _description: str | None = attrs.field(default="", alias="description")
    when: Callable[..., Any] | None = None
    when_params: tuple[Param, ...] = ()
    limit_key: Callable[..., Any] | None = None
    # the parameter that receives each item of a map step (the one bound to map_over)
    map_param: str | None = None
    # where the call runs (a trioflow._runners.Runner; None: the event loop).
    # ``fn`` is then already bound to it: an async function like any other.
    runner: Any = None
    on_item_error: OnItemError = "fail"

    @property
    def description(self) -> str:
        """The step's description: ``description=``, else its function's docstring summary."""
        if self._description is None:
            # ``fn`` may wrap the declared function (a runner, a cache): wrappers keep its
            # docstring (functools.wraps)
            return _summary(self.fn)
        return self._description


def make_spec(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    after: str | Iterable[str] | None = None,
    limiter: str | Iterable[str] | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
    map_over: str | None = None,
    max_concurrent: int | None = None,
    cost: float = 1.0,
    isolation: Isolation = "copy",
    description: str | None = None,
    bind: Mapping[str, str] | None = None,
    when: Callable[..., Any] | None = None,
    limit_key: Callable[..., Any] | None = None,
    runner: Any = None,
    on_item_error: OnItemError = "fail",
) -> StepSpec:
    """Validate one step's function and options (everything that needs no other step).

    ``runner``: a resolved runner (see ``_runners``), which checks ``fn`` itself;
    the spec's ``fn`` is then ``fn`` bound to the runner by ``bind``.
    """
    if runner is None and not (type(fn) is FunctionType and fn.__code__.co_flags & _CO_COROUTINE):
        check_async_callable(fn, "flow.step" if name is None else f"step {name!r}", runners=True)
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"cannot tell the step's name from {fn!r}; pass name='...'")
    if not isinstance(name, str) or not name:
        raise TypeError(f"a step name must be a non-empty string (got {name!r})")
    if runner is not None:
        runner.check(fn, name)
    params = _parameters(fn, name)
    if bind is not None:
        params = tuple(_bind(name, list(params), bind))
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(
            f"step {name!r}: retry= takes a trioflow.Retry (got {retry!r}); "
            f"for example retry=trioflow.Retry(max_attempts=3)"
        )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"step {name!r}: timeout= must be a number of seconds (got {timeout!r})")
        if not timeout > 0 or math.isnan(timeout):
            raise GraphError(f"step {name!r}: timeout= must be > 0 seconds (got {timeout!r})")
    if map_over is not None:
        if not isinstance(map_over, str):
            raise TypeError(f"step {name!r}: map_over= takes the name of a step or input (got {map_over!r})")
        if map_over not in {p.key for p in params}:
            bound = [p.name for p in params if p.name == map_over and p.source is not None]
            if bound:
                raise GraphError(
                    f"step {name!r} maps over {map_over!r}, but bind= binds parameter {map_over!r} "
                    f"to {dict(bind or {})[map_over]!r}; map_over= names the source: "
                    f"map_over={dict(bind or {})[map_over]!r}"
                )
            raise GraphError(
                f"step {name!r} maps over {map_over!r} but has no parameter named {map_over!r} "
                f"to receive each item; add one: async def {name}({map_over}): ..."
            )
    if max_concurrent is not None:
        check_max_concurrent(max_concurrent, f"step {name!r}: max_concurrent")
        if map_over is None:
            raise GraphError(
                f"step {name!r}: max_concurrent= limits the items of a map step, but this step "
                f"has no map_over=; use a named limiter (limiter=...) to limit plain steps"
            )
    if cost.__class__ is not float or cost != 1.0:  # the default needs no checks
        if isinstance(cost, bool) or not isinstance(cost, int | float):
            raise TypeError(f"step {name!r}: cost= must be a number of seconds (got {cost!r})")
        if not math.isfinite(cost) or cost < 0:
            raise GraphError(f"step {name!r}: cost= must be a finite number >= 0 (got {cost!r})")
        cost = float(cost)
    if isolation not in ("copy", "share"):
        raise GraphError(f"step {name!r}: isolation= must be 'copy' or 'share' (got {isolation!r})")
    if on_item_error != "fail":
        check_on_item_error(on_item_error, f"step {name!r}: on_item_error")
        if map_over is None:
            raise GraphError(
                f"step {name!r}: on_item_error= says what a failed map item becomes, but this step "
                f"has no map_over=; remove it, or make the step a map step"
            )
    if (
        after is None
        and limiter is None
        and retry is None
        and timeout is None
        and map_over is None
        and cost == 1.0
        and isolation == "copy"
        and when is None
        and limit_key is None
        and runner is None
    ):
        # a step without options (on_item_error and max_concurrent are then defaults too):
        # its spec takes the fields' defaults, and is made faster for it
        return StepSpec(name=name, fn=fn, params=params, description=description)
    return StepSpec(
        name=name,
        fn=fn,
        params=params,
        after=_names(after, "after", name),
        limiters=_names(limiter, "limiter", name),
        retry=retry,
        timeout=float(timeout) if timeout is not None else None,
        map_over=map_over,
        max_concurrent=max_concurrent,
        cost=cost,
        isolation=isolation,
        description=description,
        map_param=next(p.name for p in params if p.key == map_over) if map_over is not None else None,
        when=when,
        when_params=_when_params(name, when) if when is not None else (),
        limit_key=_check_limit_key(name, limit_key),
        runner=runner,
        on_item_error=on_item_error,
    )


def check_on_item_error(value: object, what: str) -> None:
    if value not in ("fail", "none"):
        raise GraphError(
            f"{what}={value!r} must be 'fail' (a failed item fails the step) or 'none' "
            f"(a failed item becomes None in the output list)"
        )


def _bind(step: str, params: list[Param], bind: object) -> list[Param]:
    """Apply ``bind={parameter: step or input}`` to a step's parameters."""
    if not isinstance(bind, Mapping):
        raise TypeError(
            f"step {step!r}: bind= takes a mapping of parameter names to step or input names "
            f"(got {bind!r}); for example bind={{'x': 'fetch_3'}}"
        )
    names = [p.name for p in params]
    unknown = [k for k in bind if k not in names]
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise TypeError(
            f"step {step!r}: bind= names parameter{'s' if len(unknown) > 1 else ''} {listed} "
            f"that the step function does not have (its parameters: {', '.join(names) or 'none'})"
            f"{did_you_mean(str(unknown[0]), names)}"
        )
    for k, v in bind.items():
        if not isinstance(v, str) or not v:
            raise TypeError(
                f"step {step!r}: bind={{{k!r}: ...}} must name a step or flow input (got {v!r})"
            )
    return [p._replace(source=bind[p.name]) if p.name in bind else p for p in params]


def _when_params(step: str, when: object) -> tuple[Param, ...]:
    """Check a ``when=`` predicate and read the steps and inputs it names."""
    if inspect.iscoroutinefunction(when) or _is_async_callable(when):
        raise TypeError(
            f"step {step!r}: when= takes a plain (synchronous) predicate, but {when!r} is async; "
            f"a condition reads its inputs and returns True or False, without awaiting"
        )
    if not callable(when):
        raise TypeError(
            f"step {step!r}: when= takes a predicate whose parameters name steps or inputs "
            f"(got {when!r}); for example when=lambda classify: classify == 'math'"
        )
    try:
        signature = inspect.signature(when)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"step {step!r}: cannot read the signature of when={when!r}: {exc}") from None
    params = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise GraphError(
                f"step {step!r}: parameter {p.name!r} of when= is positional-only; conditions "
                f"receive their inputs by name, so remove the '/' from the signature"
            )
        has_default = p.default is not p.empty
        params.append(Param(p.name, has_default, p.default if has_default else None))
    return tuple(params)


def _check_limit_key(step: str, limit_key: object) -> Callable[..., Any] | None:
    if limit_key is None:
        return None
    if not callable(limit_key) or _is_async_callable(limit_key):
        raise TypeError(
            f"step {step!r}: limit_key= takes a plain function of the step's arguments that "
            f"returns a hashable key (got {limit_key!r}); for example "
            f"limit_key=lambda url: urlsplit(url).netloc"
        )
    return limit_key


# A function's parameters and docstring summary, read once per function: flows
# built in loops add the same function many times, and inspect.signature and
# inspect.getdoc cost more than the rest of adding a step.
_PARAMS: weakref.WeakKeyDictionary[Any, tuple[Param, ...]] = weakref.WeakKeyDictionary()
_SUMMARIES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _cached(table: weakref.WeakKeyDictionary[Any, T], fn: object) -> T | None:
    try:
        return table.get(fn)
    except TypeError:  # not hashable, or not weakly referenceable: not cached
        return None


def _keep(table: weakref.WeakKeyDictionary[Any, T], fn: object, value: T) -> None:
    try:
        table[fn] = value
    except TypeError:
        pass


def _parameters(fn: Callable[..., Any], name: str) -> tuple[Param, ...]:
    """The parameters a step function takes by name (``*args``/``**kwargs`` take nothing)."""
    if type(fn) is FunctionType and not fn.__dict__:
        # a plain function with no attributes (so no __wrapped__ or __signature__ for
        # inspect.signature to follow): its code object lists the parameters
        code = fn.__code__
        if not code.co_posonlyargcount:
            return _code_parameters(code, fn.__defaults__, fn.__kwdefaults__)
    known = _cached(_PARAMS, fn)
    if known is not None:
        return known
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"step {name!r}: cannot read the signature of {fn!r}: {exc}") from None
    params: list[Param] = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue  # *args / **kwargs take nothing
        if p.kind is p.POSITIONAL_ONLY:
            raise GraphError(
                f"step {name!r}: parameter {p.name!r} is positional-only; steps receive "
                f"their inputs by name, so remove the '/' from the signature"
            )
        has_default = p.default is not p.empty
        params.append(Param(p.name, has_default, p.default if has_default else None))
    _keep(_PARAMS, fn, tuple(params))
    return tuple(params)


def _code_parameters(code: Any, defaults: tuple[Any, ...] | None, kwdefaults: dict[str, Any] | None) -> tuple[Param, ...]:
    """What inspect.signature reads from a plain function, read from its code object.

    ``co_varnames`` lists the positional parameters, then the keyword-only ones
    (then ``*args``, ``**kwargs`` and locals); ``defaults`` belong to the last
    positional ones.
    """
    positional = code.co_argcount
    count = positional + code.co_kwonlyargcount
    if not count:
        return ()
    names = code.co_varnames
    first_default = positional - len(defaults) if defaults else positional
    params: list[Param] = []
    for i in range(positional):
        if i < first_default:
            params.append(Param(names[i], False))
        else:
            params.append(Param(names[i], True, defaults[i - first_default]))  # type: ignore[index]
    for i in range(positional, count):
        pname = names[i]
        if kwdefaults is not None and pname in kwdefaults:
            params.append(Param(pname, True, kwdefaults[pname]))
        else:
            params.append(Param(pname, False))
    return tuple(params)


def _summary(fn: object) -> str:
    """The first line of the function's docstring (``""`` without one)."""
    known = _cached(_SUMMARIES, fn)
    if known is not None:
        return known
    doc = (inspect.getdoc(fn) or "").strip()
    summary = doc.splitlines()[0] if doc else ""
    _keep(_SUMMARIES, fn, summary)
    return summary


def check_max_concurrent(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= 1 or None (got {value!r} that is a {type(value).__name__})")
    if value < 1:
        raise GraphError(f"{what} must be at least 1 (got {value!r}); use None for no limit")


@attrs.frozen(eq=False)
class Node:
    """A step inside a compiled plan."""

    index: int
    spec: StepSpec
    # parameter name -> upstream step index (data dependencies)
    data_deps: tuple[tuple[str, int], ...]
    # parameter name -> flow input name, with default if optional
    inputs: tuple[Param, ...]
    deps: tuple[int, ...]  # every upstream step index (data + order-only), sorted
    children: tuple[int, ...]  # every downstream step index, sorted
    rank: float  # longest cost-weighted path from this step to the end
    map_source: int | None  # upstream step index the map step iterates, if a step
    depth: int  # stage number: 0 for steps with no dependencies
    # ``when=``: predicate parameter -> upstream step index, and its flow inputs
    when_deps: tuple[tuple[str, int], ...] = ()
    when_inputs: tuple[Param, ...] = ()
    # data parameter naming a step, with a default -> that default (optional dependencies)
    defaults: Mapping[str, Any] = attrs.field(factory=dict)
    # upstream steps whose skip by a condition this step tolerates: every parameter
    # (of the step or its condition) that receives it has a default, or none does (after=)
    tolerates: frozenset[int] = frozenset()
    # item-level pipelining: a map step over another map step starts item i as soon
    # as upstream item i has succeeded. ``pipes``: such map steps over this one
    # (all of them, but those whose when= condition names this step).
    pipes: tuple[int, ...] = ()


@attrs.frozen(eq=False)
class Plan:
    """A validated flow graph, ready for the scheduler."""

    nodes: tuple[Node, ...]
    by_name: Mapping[str, int]
    topo_order: tuple[int, ...]
    required_inputs: Mapping[str, tuple[str, ...]]  # input -> steps needing it (no default)
    optional_inputs: frozenset[str]
    stages: tuple[tuple[int, ...], ...]
    # None: not computed yet (see ``fingerprint``); only stores need it
    _fingerprint: str | None = attrs.field(alias="fingerprint")
    conditional: bool = False  # some step has a when= condition
    flow_name: str = ""  # the flow's name, part of the fingerprint
    # None: not computed yet (see ``limiter_users``)
    _limiter_users: dict[str, tuple[int, ...]] | None = attrs.field(default=None, alias="limiter_users")

    @property
    def limiter_users(self) -> Mapping[str, tuple[int, ...]]:
        """Each limiter name the steps use: the steps that use it, in declaration
        order (the names in the order they first appear). Computed once, when first
        asked (each run checks its ``limiters=`` against it)."""
        users = self._limiter_users
        if users is None:
            found: dict[str, list[int]] = {}
            for node in self.nodes:
                for name in node.spec.limiters:
                    found.setdefault(name, []).append(node.index)
            users = {name: tuple(indexes) for name, indexes in found.items()}
            object.__setattr__(self, "_limiter_users", users)
        return users

    @property
    def fingerprint(self) -> str:
        """A digest of the flow's structure: names, edges and options that change results."""
        digest = self._fingerprint
        if digest is None:
            digest = _fingerprint(self.flow_name, self.nodes)
            object.__setattr__(self, "_fingerprint", digest)  # computed once, when first asked
        return digest

    def descendants(self, index: int) -> list[int]:
        """Every step downstream of ``index`` (not including it), in declaration order."""
        seen: set[int] = set()
        stack = [index]
        while stack:
            for child in self.nodes[stack.pop()].children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return sorted(seen)


def _find_cycle(names: list[str], deps: Sequence[Sequence[int]]) -> list[str] | None:
    """A dependency cycle in execution order (first repeated at the end), or None."""
    state = [0] * len(names)  # 0 new, 1 on stack, 2 done
    for root in range(len(names)):
        if state[root]:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        path: list[int] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(deps[node]):
                stack[-1] = (node, i + 1)
                dep = deps[node][i]
                if state[dep] == 1:
                    # path walks from dependents to dependencies; execution order is the reverse
                    cycle = path[path.index(dep):]
                    cycle.reverse()
                    # start at the earliest-declared step, so the message is stable
                    first = cycle.index(min(cycle))
                    cycle = cycle[first:] + cycle[:first]
                    return [names[j] for j in cycle] + [names[cycle[0]]]
                if state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, 0))
                    path.append(dep)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def compile_plan(flow_name: str, specs: list[StepSpec]) -> Plan:
    """Check the whole graph and compute its edges, order, ranks and stages.

    One pass over the steps finds their edges; when every step comes after the
    steps it depends on (the usual way flows are written) the declaration
    order is the topological order and there can be no cycle, so the rest is
    linear too. The structure's fingerprint is computed when a store asks for it.

    Raises:
        GraphError: unknown ``after`` or ``map_over`` names, or a cycle.
    """
    if not specs:
        raise GraphError(f"flow {flow_name!r} has no steps; add one with @flow.step")
    n = len(specs)
    by_name = {s.name: i for i, s in enumerate(specs)}
    step_index = by_name.get
    deps_lists: list[tuple[int, ...]] = []
    data_deps_all: list[tuple[tuple[str, int], ...]] = []
    inputs_all: list[tuple[Param, ...]] = []
    defaults_all: list[Mapping[str, Any]] = []
    required: dict[str, list[str]] = {}
    optional: set[str] = set()
    when_all: list[tuple[tuple[tuple[str, int], ...], tuple[Param, ...]]] = []
    tolerates_all: list[frozenset[int]] = []
    children: list[list[int] | None] = [None] * n  # None: no step depends on it
    in_order = True  # every step is declared after the steps it depends on
    conditional = False
    no_when: tuple[tuple[tuple[str, int], ...], tuple[Param, ...]] = ((), ())
    # one tuple (i,) for every lone dependency or child i: in a chain, the step after
    # a step has it as its dependencies, and the step before it as its children
    single: dict[int, tuple[int]] = {}
    for i, spec in enumerate(specs):
        data: list[tuple[str, int]] = []
        inputs: list[Param] = []
        defaults: dict[str, Any] | None = None  # data parameters naming a step, with a default
        for p in spec.params:
            key = p.name if p.source is None else p.source  # p.key, inlined
            d = step_index(key)
            if d is not None:
                data.append((p.name, d))
                if p.has_default:
                    if defaults is None:
                        defaults = {}
                    defaults[p.name] = p.default
            else:
                inputs.append(p)
                if p.has_default:
                    optional.add(key)
                else:
                    required.setdefault(key, []).append(spec.name)
        when_data: list[tuple[str, int]] = []
        if spec.when is not None:
            conditional = True
            when_inputs: list[Param] = []
            for p in spec.when_params:
                d = step_index(p.name)
                if d is not None:
                    when_data.append((p.name, d))
                else:
                    when_inputs.append(p)
                    if p.has_default:
                        optional.add(p.name)
                    else:
                        required.setdefault(p.name, []).append(spec.name)
            when_all.append((tuple(when_data), tuple(when_inputs)))
        else:
            when_all.append(no_when)
        order: list[int] = []
        if spec.after:
            for a in spec.after:
                d = step_index(a)
                if d is None:
                    raise GraphError(
                        f"step {spec.name!r} runs after {a!r}, but no step is named {a!r}"
                        f"{did_you_mean(a, by_name)}"
                    )
                order.append(d)
        if not data and not when_data and not order:
            deps: tuple[int, ...] = ()
        elif len(data) == 1 and not when_data and not order:
            d = data[0][1]
            deps = single.get(d) or single.setdefault(d, (d,))
        else:
            deps = tuple(sorted({d for _, d in data} | {d for _, d in when_data} | set(order)))
        deps_lists.append(deps)
        data_deps_all.append(tuple(data) if data else ())
        inputs_all.append(tuple(inputs) if inputs else ())
        defaults_all.append(_NO_DEFAULTS if defaults is None else defaults)
        if deps:
            if deps[-1] >= i:
                in_order = False
            for d in deps:
                below = children[d]
                if below is None:
                    children[d] = [i]
                else:
                    below.append(i)
        # upstream steps whose skip this step tolerates: those that no parameter without a
        # default receives (order-only ones, or ones that every receiving parameter defaults)
        if defaults is None and not when_data and not order:
            tolerates_all.append(_NO_STEPS)
        else:
            when_defaults = {p.name for p in spec.when_params if p.has_default}
            needed = {d for pname, d in data if defaults is None or pname not in defaults}
            needed.update(d for pname, d in when_data if pname not in when_defaults)
            tolerates_all.append(frozenset(d for d in deps if d not in needed))

    down: list[tuple[int, ...]] = [
        () if c is None else (single.get(c[0]) or single.setdefault(c[0], (c[0],))) if len(c) == 1 else tuple(c)
        for c in children
    ]
    if in_order:
        # Kahn's algorithm with ties by declaration order would give this very order
        topo: list[int] | range = range(n)
    else:
        # Kahn's algorithm (children were appended in declaration order, so each list
        # is sorted); it leaves out the steps on or after a cycle, which a search then names
        topo = _topological_order(deps_lists, down)
        if len(topo) < n:
            for i, spec in enumerate(specs):
                if i in deps_lists[i]:
                    raise GraphError(f"cycle: {spec.name} -> {spec.name} (step {spec.name!r} depends on itself)")
            cycle = _find_cycle([s.name for s in specs], deps_lists) or []  # there is one
            raise GraphError("cycle: " + " -> ".join(cycle))

    rank = [0.0] * n
    for i in reversed(topo):
        after_i = down[i]
        if after_i:
            best = rank[after_i[0]]
            for c in after_i:
                if rank[c] > best:
                    best = rank[c]
            rank[i] = specs[i].cost + best
        else:
            rank[i] = specs[i].cost
    depth = [0] * n
    for i in topo:
        level = 0
        for d in deps_lists[i]:
            if depth[d] >= level:
                level = depth[d] + 1
        depth[i] = level
    stages: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for i in range(n):
        stages[depth[i]].append(i)

    pipes: dict[int, list[int]] = {}
    for i, spec in enumerate(specs):
        source = step_index(spec.map_over) if spec.map_over is not None else None
        # (a condition that reads the whole upstream list is answered only once that
        # list is complete: such a step waits for it, unpipelined)
        if (
            source is not None
            and specs[source].map_over is not None
            and all(d != source for _, d in when_all[i][0])
        ):
            pipes.setdefault(source, []).append(i)
    nodes: list[Node] = []
    for i, spec in enumerate(specs):
        if when_all[i] is no_when and not tolerates_all[i] and i not in pipes:
            node = Node(  # the other fields' defaults fit
                index=i,
                spec=spec,
                data_deps=data_deps_all[i],
                inputs=inputs_all[i],
                deps=deps_lists[i],
                children=down[i],
                rank=rank[i],
                map_source=step_index(spec.map_over) if spec.map_over is not None else None,
                depth=depth[i],
                defaults=defaults_all[i],
            )
        else:
            node = Node(
                index=i,
                spec=spec,
                data_deps=data_deps_all[i],
                inputs=inputs_all[i],
                deps=deps_lists[i],
                children=down[i],
                rank=rank[i],
                map_source=step_index(spec.map_over) if spec.map_over is not None else None,
                depth=depth[i],
                when_deps=when_all[i][0],
                when_inputs=when_all[i][1],
                defaults=defaults_all[i],
                tolerates=tolerates_all[i],
                pipes=tuple(pipes[i]) if i in pipes else (),
            )
        nodes.append(node)
    required_inputs = {k: tuple(v) for k, v in required.items()}
    return Plan(
        nodes=tuple(nodes),
        by_name=by_name,
        topo_order=tuple(topo),
        required_inputs=required_inputs,
        optional_inputs=frozenset(optional - set(required_inputs)),
        stages=tuple((single.get(s[0]) or (s[0],)) if len(s) == 1 else tuple(s) for s in stages),
        fingerprint=None,
        conditional=conditional,
        flow_name=flow_name,
    )


def _topological_order(deps_lists: list[tuple[int, ...]], children: list[tuple[int, ...]]) -> list[int]:
    """Kahn's algorithm, ties by declaration order: every step, unless there is a cycle."""
    pending = [len(ds) for ds in deps_lists]
    heap = [i for i, count in enumerate(pending) if count == 0]
    heapq.heapify(heap)
    topo: list[int] = []
    while heap:
        i = heapq.heappop(heap)
        topo.append(i)
        for c in children[i]:
            pending[c] -= 1
            if pending[c] == 0:
                heapq.heappush(heap, c)
    return topo


def _fingerprint(flow_name: str, nodes: Iterable[Node]) -> str:
    """A digest of the flow's structure: names, edges and options that change results."""
    h = hashlib.sha256(flow_name.encode())
    for n in nodes:
        s = n.spec
        h.update(
            repr(
                (
                    s.name,
                    [p.name for p in s.params],
                    s.after,
                    s.map_over,
                    getattr(s.fn, "__qualname__", type(s.fn).__qualname__),
                    *_extra_structure(s),
                )
            ).encode()
        )
    return h.hexdigest()[:16]


def _extra_structure(s: StepSpec) -> tuple[tuple[str, Any], ...]:
    """Bindings and conditions, in the fingerprint only when a step has them (older
    fingerprints stay valid)."""
    extra: list[tuple[str, Any]] = []
    if any(p.source is not None for p in s.params):
        extra.append(("bind", [(p.name, p.source) for p in s.params if p.source is not None]))
    if s.when is not None:
        extra.append(("when", [p.name for p in s.when_params]))
    return tuple(extra)


def describe(
    flow_name: str,
    plan: Plan,
    *,
    resources: frozenset[str] = frozenset(),
    typos: Mapping[str, str] | None = None,
) -> str:
    """The plan as text: numbered steps, their dependencies, and stages.

    ``resources`` are the declared resource names (listed apart from the
    inputs); ``typos`` maps an input to the step name it is one edit away from.
    """
    typos = typos or {}
    lines = [f"Plan for flow {flow_name!r}: {len(plan.nodes)} steps"]
    for n in plan.nodes:
        s = n.spec
        parts = [f"{n.index + 1}. {s.name}"]
        if s.description:
            parts.append(f"- {s.description}")
        deps = [plan.nodes[d].spec.name for d in n.deps]
        extras = [f"depends on: {', '.join(deps)}" if deps else "no dependencies"]
        inputs = [p.key for p in n.inputs if p.key not in resources]
        if inputs:
            extras.append("inputs: " + ", ".join(_typo_mark(i, typos) for i in inputs))
        shared = [p.key for p in n.inputs if p.key in resources]
        if shared:
            extras.append("resources: " + ", ".join(shared))
        if s.map_over is not None:
            extras.append(f"one call per item of {s.map_over}")
        if s.limiters:
            extras.append("limiter: " + ", ".join(s.limiters))
        if s.runner is not None:
            extras.append(f"runs in: {s.runner.name}")
        lines.append("  " + " ".join(parts) + f" ({'; '.join(extras)})")
    lines.append("Stages (steps in one stage can run together):")
    for k, stage in enumerate(plan.stages, 1):
        names = ", ".join(plan.nodes[i].spec.name for i in stage)
        together = f"{len(stage)} in parallel" if len(stage) > 1 else "1 step"
        lines.append(f"  stage {k} ({together}): {names}")
    return "\n".join(lines)


def _typo_mark(name: str, typos: Mapping[str, str]) -> str:
    step = typos.get(name)
    return name if step is None else f"{name} (likely a typo of step {step!r}?)"
