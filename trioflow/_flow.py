"""``trioflow.Flow``: define steps, then run them."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import attrs
import trio

from . import _runners
from ._exceptions import GraphError
from ._graph import (
    Isolation,
    OnItemError,
    Plan,
    StepSpec,
    check_max_concurrent,
    compile_plan,
    describe,
    did_you_mean,
    make_spec,
)
from ._inputs import (
    Declarations,
    apply_declarations,
    check_resources,
    current_resources,
    declared_names,
    typo_marks,
)
from ._limits import KeyedLimiter, RateLimit
from ._results import RunResult, StepFunctions
from ._retry import Retry
from ._scheduler import _TRIO, Limiter, Run, RunOptions, current_backend

if TYPE_CHECKING:
    from ._cache import Cache
    from ._events import Event
    from ._open_run import RunHandle

F = TypeVar("F", bound=Callable[..., Any])

ErrorHandling = Literal["fail_fast", "continue"]


class Flow:
    """A reusable graph of async steps.

    A parameter of a step that names another step makes it depend on that step
    and receive its output; any other parameter is a flow input. A flow can be
    run any number of times, also concurrently; runs share nothing but what the
    caller passes in.

    Args:
        name: the flow's name, in messages, events and stores.
        inputs: the names of the flow's inputs. When given, every parameter
            that names no step or declared resource must be one of them (a
            parameter with a default is an optional declared input), so a
            misspelt parameter is a :class:`GraphError` from ``plan()``,
            :meth:`describe` and :meth:`run`, not a missing input.
        resources: the names of parameters that receive shared objects given
            as ``flow.run(resources=...)`` (an HTTP client, a pool).

    Raises:
        TypeError: ``name`` is not a non-empty string, or ``inputs`` or
            ``resources`` is not a tuple of parameter names.
        GraphError: a name is declared both as an input and as a resource.

    Example:
        >>> import trio
        >>> from trioflow import Flow
        >>> flow = Flow("jokes")
        >>> @flow.step
        ... async def joke(topic: str) -> str:
        ...     return f"a joke about {topic}"
        >>> @flow.step
        ... async def shout(joke: str) -> str:
        ...     return joke.upper()
        >>> trio.run(flow.run, {"topic": "cats"})["shout"]
        'A JOKE ABOUT CATS'
    """

    def __init__(
        self,
        name: str = "flow",
        *,
        inputs: Iterable[str] | None = None,
        resources: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Flow(name=...) must be a non-empty string (got {name!r})")
        self.name = name
        self._declared = Declarations(
            declared_names(inputs, "inputs"),
            declared_names(resources, "resources") or frozenset(),
        )
        self._specs: list[StepSpec] = []
        self._names: set[str] = set()
        self._plan: Plan | None = None
        self._functions = StepFunctions()

    def __repr__(self) -> str:
        return f"<trioflow.Flow {self.name!r} with {len(self._specs)} steps>"

    @property
    def steps(self) -> tuple[str, ...]:
        """Step names in declaration order."""
        return tuple(s.name for s in self._specs)

    # -- definition ------------------------------------------------------------------

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
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
        cache: Cache | None = None,
        on_item_error: OnItemError = "fail",
        bind: Mapping[str, str] | None = None,
        when: Callable[..., Any] | None = None,
        limit_key: Callable[..., Any] | None = None,
        runner: str | _runners.Runner | None = None,
    ) -> Callable[[F], F]: ...

    def step(self, fn: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Declare a step; use bare (``@flow.step``) or with options.

        Args:
            name: the step's name (default: the function's name).
            after: steps that must finish first, without passing their output.
            limiter: name(s) of limiters given to :meth:`run` as ``limiters=``.
            retry: a :class:`Retry` policy.
            timeout: seconds allowed per attempt; expiry raises :class:`TimeoutError`
                inside the step.
            map_over: a step or input whose items are mapped: one call per item,
                the output is the list of results in item order.
            max_concurrent: at most this many items of this map step at once.
            cost: estimated seconds, used as priority when capacity is short.
            isolation: ``"copy"`` (default) gives the step its own copy of mutable
                inputs; ``"share"`` passes them as they are.
            cache: a :class:`Cache` that memoizes the step's output by its input
                values, across runs; concurrent identical calls run once.
            on_item_error: for a map step, ``"fail"`` (default): a failed item
                (after its retries) fails the step; ``"none"``: it becomes
                ``None`` in the output list and the step succeeds (the error is
                in :attr:`StepResult.items` and in the events).
            bind: ``{parameter: step or input}``: the parameter receives that
                step's output (or flow input) instead of the one its own name
                names, so flows built in loops need no made-up signatures.
            when: a synchronous predicate whose parameters name steps or inputs
                (they become dependencies); when it returns false the step is
                ``skipped`` with ``skip_reason="condition"``.
            limit_key: with a keyed limiter (:class:`KeyedLimiter`,
                ``RateLimit(keyed=True)``): called with the step's keyword
                arguments, returns the hashable key whose limit applies.
            runner: where a plain (``def``) function runs: ``"thread"`` (blocking
                code, in a worker thread), ``"process"`` (CPU-bound code, in a
                worker process, cancelled for real) or a :class:`DaskRunner`
                (a Dask cluster). See :doc:`scaling`.

        Returns:
            The function itself, unchanged (or a decorator that returns it).

        Raises:
            GraphError: a duplicate name or an invalid option value.
            TypeError: ``fn`` is not an async function (nor a plain function
                with ``runner=``), or cannot run on its runner.
        """
        if fn is None:

            def decorator(f: F) -> F:
                self.add(f, **options)
                return f

            return decorator
        self.add(fn, **options)
        return fn

    def add(self, fn: Callable[..., Any], /, **options: Any) -> None:
        """Add a step: the non-decorator form of :meth:`step`, with the same options."""
        if not _STEP_OPTIONS.issuperset(options):
            bad = sorted(set(options) - _STEP_OPTIONS)[0]
            raise TypeError(
                f"flow.step() got an unknown option {bad!r}{did_you_mean(bad, _STEP_OPTIONS)}"
            )
        cache = options.pop("cache", None)
        runner = options.pop("runner", None)
        if runner is not None:
            runner = _runners.resolve(runner)
            if getattr(runner, "copies_arguments", False):
                # pickling to another process already gives the step its own copy
                options.setdefault("isolation", "share")
        spec = make_spec(fn, runner=runner, **options)
        if runner is not None:
            spec = attrs.evolve(spec, fn=_runners.bind(runner, spec.fn))
        if cache is not None:
            spec = _cached(spec, cache)
        if spec.name in self._names:
            raise GraphError(
                f"flow {self.name!r} already has a step named {spec.name!r}; "
                f"give this one another name with name='...'"
            )
        self._specs.append(spec)
        self._names.add(spec.name)
        self._plan = None
        self._functions.add(fn, spec.name)

    def plan(self) -> Plan:
        """The compiled, validated graph (cached until a step is added).

        Raises:
            GraphError: a cycle, an unknown ``after`` name, or no steps at all.
        """
        if self._plan is None:
            plan = compile_plan(self.name, self._specs)
            if self._declared.active:
                plan = apply_declarations(self.name, plan, self._declared)
            self._plan = plan
        return self._plan

    def describe(self) -> str:
        """The plan as text: numbered steps, dependencies, and stages that can run together.

        Without declared inputs (``Flow(name, inputs=...)``), a flow input one
        edit away from a step's name (an insertion, deletion, substitution or
        swap of two adjacent letters) is marked as a likely typo.

        Raises:
            GraphError: a cycle, an unknown name, or (with declared inputs) a
                parameter that names no step, input or resource.
        """
        plan = self.plan()
        marks = {} if self._declared.inputs is not None else typo_marks(plan, self._declared.resources)
        return describe(self.name, plan, resources=self._declared.resources, typos=marks)

    def to_mermaid(self) -> str:
        """The flow's graph as a mermaid ``flowchart``, to paste into Markdown or docs.

        Steps are boxes (a map step a double box naming what it maps over, a
        step with limiters names them), flow inputs are parallelograms, data
        edges are solid arrows and order-only edges (``after=``) dashed ones.

        Raises:
            GraphError: the flow is invalid (a cycle, an unknown ``after`` name).
        """
        from ._diagram import to_mermaid

        return to_mermaid(self.name, self.plan())

    def to_dot(self) -> str:
        """The flow's graph in graphviz's DOT language (``dot -Tsvg``), drawn as :meth:`to_mermaid`.

        Raises:
            GraphError: the flow is invalid (a cycle, an unknown ``after`` name).
        """
        from ._diagram import to_dot

        return to_dot(self.name, self.plan())

    @classmethod
    def from_plan(
        cls,
        plan: str | bytes | Mapping[str, Any],
        tools: Mapping[str, Callable[..., Any]],
        *,
        name: str = "plan",
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Flow:
        """Build a flow from a JSON plan of tool steps (the planner's format).

        ``plan`` is ``{"steps": [{"step_id", "description", "tool", "depends_on",
        "parallel_group"}, ...]}`` or its JSON text. Each step becomes a step
        named by its ``step_id`` (ints become strings) that awaits
        ``tools[tool](description, *outputs_of_depends_on_in_order)``. Steps run
        as soon as their dependencies are done; ``parallel_group`` is checked
        against the dependencies and never delays anything.

        Args:
            plan: the plan, as a dict or JSON text.
            tools: tool name -> async function.
            name: the flow's name.
            options: step options per tool name, given to every step that uses
                the tool: ``{"search": {"retry": Retry(max_attempts=3),
                "limiter": "http", "timeout": 10}}``. Any option of
                :meth:`step` except the ones the plan sets itself (``name``,
                ``description``) and the map options.

        Returns:
            A new :class:`Flow`, validated (see :meth:`describe` to print it).

        Raises:
            GraphError: an unknown tool or dependency, a duplicate ``step_id``, a
                cycle, a ``parallel_group`` whose members depend on each other,
                or an unknown tool or option name in ``options``.
            TypeError: a tool is not an async function, or ``plan`` has the wrong type.
        """
        from ._plan import plan_specs  # JSON plans: a feature of their own

        flow = cls(name)
        for spec in plan_specs(name, plan, tools, options, _cached):
            flow._specs.append(spec)
            flow._names.add(spec.name)
        flow.plan()
        return flow

    # -- running ---------------------------------------------------------------------

    def _prepare(
        self,
        inputs: Mapping[str, Any] | None,
        max_concurrent: int | None,
        limiter: Limiter | None,
        limiters: Mapping[str, int | Limiter | RateLimit | KeyedLimiter] | None,
        error_handling: str,
        seed: int | None,
        on_event: Callable[[Event], object] | None,
        run_id: str | None,
        resources: Mapping[str, Any] | None = None,
    ) -> tuple[Plan, dict[str, Any], RunOptions]:
        plan = self.plan()
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, Mapping):
            raise TypeError(f"flow.run(inputs=...) takes a mapping of input names to values (got {inputs!r})")
        for key in inputs:
            if not isinstance(key, str):
                raise TypeError(
                    f"flow.run(inputs=...) keys must be input names (strings), got {key!r} that "
                    f"is a {type(key).__name__}; an input is a step parameter that names no step"
                )
        shared = check_resources(self.name, plan, resources, inputs, self._declared)
        known_inputs = (set(plan.required_inputs) | plan.optional_inputs | (self._declared.inputs or set())) - set(shared)
        for key in inputs:
            if key in plan.by_name:
                raise GraphError(
                    f"input {key!r} names a step of flow {self.name!r}; a step's output "
                    f"comes from running it, so remove {key!r} from the inputs"
                )
            if key not in known_inputs:
                raise GraphError(
                    f"input {key!r} is not used by any step of flow {self.name!r}"
                    f"{did_you_mean(key, known_inputs)}"
                )
        missing = [name for name in plan.required_inputs if name not in inputs and name not in shared]
        if missing:
            details = "; ".join(
                f"{name!r} (needed by {', '.join(repr(s) for s in plan.required_inputs[name])})"
                for name in missing
            )
            hint = ""
            if len(missing) == 1:
                hint = did_you_mean(missing[0], list(plan.by_name) + list(inputs) + list(shared))
            raise GraphError(
                f"flow {self.name!r} is missing input{'s' if len(missing) > 1 else ''} {details}"
                f"{hint}; pass {'them' if len(missing) > 1 else 'it'} in flow.run(inputs)"
            )
        if max_concurrent is not None:
            check_max_concurrent(max_concurrent, "flow.run(max_concurrent=...)")
        if limiter is not None:
            _check_limiter(limiter, "flow.run(limiter=...)")
        if limiters is not None and not isinstance(limiters, Mapping):
            raise TypeError(
                f"flow.run(limiters=...) takes a mapping of limiter names to sizes or "
                f"CapacityLimiters, for example limiters={{'llm': 2}} (got {_short(limiters)} that "
                f"is a {type(limiters).__name__})"
            )
        limiters = dict(limiters or {})
        users = plan.limiter_users
        for lname, value in limiters.items():
            if isinstance(value, int) and not isinstance(value, bool):
                check_max_concurrent(value, f"flow.run(limiters={{{lname!r}: ...}})")
            elif isinstance(value, RateLimit | KeyedLimiter):
                for node in (plan.nodes[i] for i in users.get(lname, ())):
                    if value.keyed and node.spec.limit_key is None:
                        raise GraphError(
                            f"step {node.spec.name!r} uses the keyed limiter {lname!r} ({value!r}) "
                            f"but has no limit_key=; give the step limit_key=lambda ...: key, a "
                            f"function of its arguments that returns the key to limit by"
                        )
            else:
                _check_limiter(value, f"flow.run(limiters={{{lname!r}: ...}})")
        for lname, indexes in users.items():
            if lname not in limiters:
                raise GraphError(
                    f"step {plan.nodes[indexes[0]].spec.name!r} uses limiter {lname!r}, but flow.run() "
                    f"got no limiter by that name; pass limiters={{{lname!r}: 2}} (or a CapacityLimiter)"
                    f"{did_you_mean(lname, limiters)}"
                )
        _check_limiter_names(self.name, plan, limiters)
        if error_handling not in ("fail_fast", "continue"):
            raise GraphError(
                f"flow.run(error_handling={error_handling!r}) must be 'fail_fast' or 'continue'"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"flow.run(seed=...) must be an int or None (got {seed!r})")
        if on_event is not None:
            _check_on_event(on_event)
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise TypeError(f"flow.run(run_id=...) must be a non-empty string (got {run_id!r})")
        options = RunOptions(
            max_concurrent=max_concurrent,
            limiter=limiter,
            limiters=limiters,
            error_handling=error_handling,
            seed=seed,
            on_event=on_event,
            run_id=run_id,
            resources=shared,
            functions=self._functions,
        )
        # optional inputs left out stay out: each step falls back on its own default
        return plan, dict(inputs), options

    async def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        max_concurrent: int | None = None,
        limiter: Limiter | None = None,
        limiters: Mapping[str, int | Limiter | RateLimit | KeyedLimiter] | None = None,
        error_handling: ErrorHandling = "fail_fast",
        seed: int | None = None,
        on_event: Callable[[Event], object] | None = None,
        store: Any = None,
        run_id: str | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run the flow: every step as soon as its dependencies have finished.

        Works under trio and under asyncio (through anyio). A checkpoint. It
        returns only when every task it started has ended.

        Args:
            inputs: values for the flow inputs (parameters that name no step).
            max_concurrent: at most this many steps (and map items) at once;
                ``1`` is sequential mode and gives the same result.
            limiter: a shared ``CapacityLimiter`` every step must hold, so that
                several runs share one budget.
            limiters: named limits for ``@flow.step(limiter=...)``: an int, a
                ``CapacityLimiter`` shared with other code, a :class:`RateLimit`
                or a :class:`KeyedLimiter` (these two are shared by every run
                given the same object).
            error_handling: ``"fail_fast"`` cancels everything at the first
                failure; ``"continue"`` runs all independent work and skips the
                dependents of failed steps.
            seed: seeds the retry jitter, for reproducible timing.
            on_event: a synchronous callable that receives each event; it must
                not block.
            store: where to record each step as it finishes, to resume a run.
            run_id: the run's id in the store (and in :func:`current_step`).
            resources: shared objects by parameter name (an
                ``httpx.AsyncClient``, an LLM client, a connection pool): a step
                parameter that names a resource receives that very object,
                whatever its ``isolation``. Resources are not inputs: a store
                never records them and they are not part of a resumed run's
                identity.

        Returns:
            The :class:`RunResult`.

        Raises:
            FlowError: one or more steps failed; ``.result`` holds the partial result.
            GraphError: invalid flow or arguments, raised before any step runs.
        """
        plan, resolved, options = self._prepare(
            inputs, max_concurrent, limiter, limiters, error_handling, seed, on_event, run_id, resources
        )
        # an application that set a tracer provider has imported opentelemetry
        if "opentelemetry" in sys.modules:
            from . import _otel

            if _otel.active():  # opentelemetry-api is installed and a provider set: spans per run and attempt
                return await _otel.traced_run(
                    self.name, options.run_id, lambda: self._execute(plan, resolved, options, store)
                )
        return await self._execute(plan, resolved, options, store)

    async def _execute(self, plan: Plan, inputs: dict[str, Any], options: RunOptions, store: Any) -> RunResult:
        token = current_resources.set(frozenset(options.resources)) if options.resources else None
        try:
            if store is not None:
                from ._durable import run_with_store  # stores are imported when first used

                return await run_with_store(self.name, plan, inputs, options, store)
            return await Run(self.name, plan, inputs, options).execute()
        finally:
            if token is not None:
                current_resources.reset(token)

    def open_run(
        self, inputs: Mapping[str, Any] | None = None, **run_options: Any
    ) -> contextlib.AbstractAsyncContextManager[RunHandle]:
        """Start a run in the block's own nursery, to watch its events as they come.

        Example::

            async with flow.open_run({"topic": "cats"}, limiters={"llm": 2}) as run:
                async for event in run.events():
                    print(event)
                result = await run.result()

        ``run_options`` are the options of :meth:`run`, ``on_event`` included
        (it is called too). Entering the block waits for the run to start
        (after its inputs and options were checked, and a store accepted its
        id): invalid ones raise there, before any step runs. Leaving the block
        before the run ended cancels the run and waits for it; nothing outlives
        the block. If the run failed and :meth:`RunHandle.result
        <trioflow.RunHandle.result>` has not raised the failure, the block
        raises it (once). Works on trio and asyncio.

        Returns:
            An async context manager whose value is a :class:`~trioflow.RunHandle`.

        Raises:
            TypeError: an option :meth:`run` does not take.
            GraphError: as :meth:`run`, when the block is entered.
        """
        from ._open_run import open_run  # a feature layered on the scheduler

        return open_run(self, inputs, dict(run_options))


_STEP_OPTIONS = frozenset(
    {
        "name", "after", "limiter", "retry", "timeout", "map_over", "max_concurrent", "cost",
        "isolation", "description", "cache", "runner", "bind", "when", "limit_key", "on_item_error",
    }
)


def _check_on_event(on_event: object) -> None:
    if not callable(on_event):
        raise TypeError(f"flow.run(on_event=...) must be a callable taking an event (got {on_event!r})")
    call = getattr(on_event, "__call__", None)  # noqa: B004 - a class's __call__ may be async
    if inspect.iscoroutinefunction(on_event) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"flow.run(on_event=...) takes a plain (synchronous) callable, but {on_event!r} is an "
            f"async function whose events would never be awaited; pass a def function, or send "
            f"the events on with a memory channel's send_nowait"
        )


def _cached(spec: StepSpec, cache: object) -> StepSpec:
    """``spec`` memoized by ``cache`` (the ``cache=`` option)."""
    from ._cache import Cache  # imported when first used: it brings the stores and codecs

    if not isinstance(cache, Cache):
        raise TypeError(
            f"step {spec.name!r}: cache= takes a trioflow.Cache (got {cache!r}); "
            f"for example cache=trioflow.Cache(ttl=3600)"
        )
    return attrs.evolve(spec, fn=cache.wrap(spec.fn, spec.name))


def _check_limiter_names(flow_name: str, plan: Plan, limiters: Mapping[Any, object]) -> None:
    """Every ``limiters`` key is a string that some step uses (else a misspelt name)."""
    used = plan.limiter_users
    for key in limiters:
        if not isinstance(key, str):
            raise TypeError(
                f"flow.run(limiters=...) keys must be limiter names (strings), got {key!r} that is a "
                f"{type(key).__name__}"
            )
        if key not in used:
            users = f"; the steps use {', '.join(repr(u) for u in sorted(used))}" if used else (
                "; no step names a limiter (use @flow.step(limiter=...), or limiter= for the whole run)"
            )
            raise GraphError(
                f"flow.run(limiters=...) has limiter {key!r}, but no step of flow {flow_name!r} uses "
                f"it{did_you_mean(key, used) or users}"
            )


def _check_limiter(value: object, what: str) -> None:
    if current_backend() is not _TRIO and isinstance(value, trio.CapacityLimiter):
        raise TypeError(
            f"{what} got a trio.CapacityLimiter, which works only under trio, but this run is on "
            f"asyncio; use anyio.CapacityLimiter, which works on both"
        )
    total = getattr(value, "total_tokens", None)
    if isinstance(total, int | float) and not isinstance(total, bool) and total < 1:
        raise GraphError(
            f"{what} got a limiter with total_tokens={total!r}, so no step could ever run; give it "
            f"at least 1 token"
        )
    if isinstance(value, trio.CapacityLimiter):
        return
    acquire = getattr(value, "acquire", None)
    if callable(acquire) and callable(getattr(value, "release", None)):
        if not inspect.iscoroutinefunction(acquire):
            raise TypeError(
                f"{what} got {_short(value)} (a {type(value).__name__}) whose acquire() is not async; "
                f"a limiter must be awaited without blocking the event loop: use "
                f"anyio.CapacityLimiter (or trio.CapacityLimiter under trio)"
            )
        return
    raise TypeError(
        f"{what} takes a CapacityLimiter (trio.CapacityLimiter or anyio.CapacityLimiter), "
        f"got {value!r} that is a {type(value).__name__}"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
