"""Plans (seed 4): build a flow from a JSON plan of tool steps.

A plan is ``{"steps": [{"step_id", "description", "tool", "depends_on",
"parallel_group"}, ...]}`` (a dict, or its JSON text). Each step becomes a
flow step named by its ``step_id`` that awaits
``tool(description, *outputs_of_depends_on_in_order)``; dependencies are data
edges, so a step runs the moment its last dependency finishes.
``parallel_group`` is a hint from the planner: it is checked (members of one
group must not depend on each other, even indirectly) and never waits for
anything. Pure and synchronous: nothing here runs a step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs

from ._exceptions import GraphError
from ._graph import Param, StepSpec, check_async_callable, compile_plan, did_you_mean, make_spec

__all__ = ["Tool", "plan_specs"]

Tool = Callable[..., Awaitable[Any]]
CacheWrapper = Callable[[StepSpec, object], StepSpec]  # checks a cache= option and wraps the step

_FIELDS = ("step_id", "description", "tool", "depends_on", "parallel_group")


def _load(plan: object) -> list[Any]:
    if isinstance(plan, str | bytes | bytearray):
        import json

        try:
            plan = json.loads(plan)
        except ValueError as exc:
            raise GraphError(f"Flow.from_plan: the plan is not valid JSON: {exc}") from None
    if not isinstance(plan, Mapping):
        raise TypeError(
            f"Flow.from_plan takes a plan object (a dict, or its JSON text) with a 'steps' list "
            f"(got {_short(plan)} that is a {type(plan).__name__})"
        )
    if "steps" not in plan:
        raise GraphError(
            f"Flow.from_plan: the plan has no 'steps' list (keys: {sorted(map(str, plan))}); "
            f'expected {{"steps": [{{"step_id": ..., "tool": ..., "depends_on": [...]}}]}}'
        )
    steps = plan["steps"]
    if not isinstance(steps, list) or not steps:
        raise GraphError(f"Flow.from_plan: 'steps' must be a non-empty list of steps (got {_short(steps)})")
    return steps


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _step_id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise GraphError(f"{where}: step_id must be a string or an int (got {value!r})")
    text = str(value)
    if not text:
        raise GraphError(f"{where}: step_id must not be empty")
    return text


def _depends_on(value: object, where: str) -> tuple[str, ...]:
    """A plan step's ``depends_on``: a list of step ids, one scalar id (of any type,
    ``0`` included), or null. Linear in the number of dependencies."""
    if value is None:
        return ()
    if isinstance(value, bool) or value == "" or (isinstance(value, Mapping) and not value):
        raise GraphError(
            f"{where}: depends_on is {value!r}, which names no step; give a list of step "
            f"ids, one step id, or [] (or leave it out) for no dependencies"
        )
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        items: Sequence[object] = value
    elif isinstance(value, Mapping | set | frozenset):
        raise GraphError(f"{where}: depends_on must be a list of step ids (got {_short(value)})")
    else:
        items = (value,)  # one scalar id: 0 and "0" are dependencies too
    deps = tuple(_step_id(d, f"{where} depends_on") for d in items)
    if len(set(deps)) != len(deps):
        seen: set[str] = set()
        for d in deps:
            if d in seen:
                raise GraphError(f"{where} lists dependency {d!r} twice in depends_on")
            seen.add(d)
    return deps


# step options a plan's tool may set for its steps (the others come from the plan itself)
_TOOL_OPTIONS = ("after", "cache", "cost", "isolation", "limiter", "retry", "timeout")
_PLAN_OWNED = {
    "name": "the plan's step_id names each step",
    "description": "the plan's description describes each step",
    "map_over": "plan steps take their dependencies' outputs whole",
    "max_concurrent": "it limits map items, and plan steps are not map steps",
}


def _tool_options(
    options: object, tools: Mapping[str, Tool]
) -> dict[str, dict[str, Any]]:
    """Check ``from_plan(options=...)``: tool name -> step options."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"Flow.from_plan(options=...) takes a mapping of tool names to step options, "
            f'such as {{"search": {{"timeout": 10}}}} (got {_short(options)})'
        )
    checked: dict[str, dict[str, Any]] = {}
    for tool_name, opts in options.items():
        if tool_name not in tools:
            known = ", ".join(repr(t) for t in tools) or "none"
            raise GraphError(
                f"Flow.from_plan(options=...) has options for tool {tool_name!r}, which is not "
                f"in tools (known: {known}){did_you_mean(str(tool_name), map(str, tools))}"
            )
        if not isinstance(opts, Mapping):
            raise TypeError(
                f"Flow.from_plan(options=...): the options of tool {tool_name!r} must be a mapping "
                f'of step options, such as {{"timeout": 10}} (got {_short(opts)})'
            )
        for key in opts:
            if key in _PLAN_OWNED:
                raise GraphError(
                    f"Flow.from_plan(options=...): tool {tool_name!r} sets {key!r}, which a tool "
                    f"cannot set ({_PLAN_OWNED[key]}); options may be: {', '.join(_TOOL_OPTIONS)}"
                )
            if key not in _TOOL_OPTIONS:
                raise GraphError(
                    f"Flow.from_plan(options=...): tool {tool_name!r} has an unknown option "
                    f"{key!r}{did_you_mean(str(key), _TOOL_OPTIONS)}; options may be: "
                    f"{', '.join(_TOOL_OPTIONS)}"
                )
        checked[tool_name] = dict(opts)
    return checked


def _with_options(
    spec: StepSpec, options: Mapping[str, Any], wrap_cache: CacheWrapper | None
) -> StepSpec:
    """``spec`` with a tool's step options, validated as ``flow.step`` validates them."""
    options = dict(options)
    cache = options.pop("cache", None)

    async def placeholder() -> None:  # pragma: no cover - never called, only validated
        return None

    checked = make_spec(placeholder, name=spec.name, **options)
    spec = attrs.evolve(
        spec,
        after=checked.after,
        limiters=checked.limiters,
        retry=checked.retry,
        timeout=checked.timeout,
        cost=checked.cost,
        isolation=checked.isolation,
    )
    if cache is not None:
        if wrap_cache is None:  # pragma: no cover - Flow.from_plan always gives one
            raise GraphError(f"step {spec.name!r}: cache= needs a Flow to wrap the step")
        spec = wrap_cache(spec, cache)
    return spec


def _make_call(tool: Tool, description: str, deps: tuple[str, ...]) -> Callable[..., Awaitable[Any]]:
    async def call(**outputs: Any) -> Any:
        return await tool(description, *(outputs[d] for d in deps))

    call.__qualname__ = call.__name__ = getattr(tool, "__name__", "tool")
    return call


def plan_specs(
    flow_name: str,
    plan: object,
    tools: Mapping[str, Tool],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    wrap_cache: CacheWrapper | None = None,
) -> list[StepSpec]:
    """Validate a plan and turn each of its steps into a :class:`StepSpec`.

    ``options`` maps a tool name to step options (``retry``, ``limiter``,
    ``timeout``, ...) that every step using that tool gets.

    Raises:
        GraphError: an unknown tool or dependency, a duplicate ``step_id``, a
            cycle, or a ``parallel_group`` whose members depend on each other;
            each names the step.
        TypeError: ``plan`` or ``tools`` has the wrong shape, or a tool is not
            an async function.
    """
    if not isinstance(tools, Mapping):
        raise TypeError(
            f"Flow.from_plan(plan, tools): tools must map tool names to async functions "
            f"(got {_short(tools)} that is a {type(tools).__name__})"
        )
    for key, tool in tools.items():
        check_async_callable(tool, f"Flow.from_plan: tool {key!r}")
    tool_options = _tool_options(options, tools)
    raw_steps = _load(plan)
    specs: list[StepSpec] = []
    seen: dict[str, int] = {}
    groups: dict[str, list[str]] = {}
    for position, raw in enumerate(raw_steps):
        where = f"plan step {position + 1}"
        if not isinstance(raw, Mapping):
            raise GraphError(f"{where} must be an object with step_id, tool, ... (got {_short(raw)})")
        for key in raw:
            if key not in _FIELDS:
                hint = did_you_mean(str(key), _FIELDS)
                if hint:  # most likely a typo of a field that matters; other keys are notes
                    raise GraphError(f"{where} has a field {key!r}{hint}")
        if "step_id" not in raw:
            raise GraphError(f"{where} has no 'step_id'; give every step a unique id")
        name = _step_id(raw["step_id"], where)
        where = f"plan step {name!r}"
        if name in seen:
            raise GraphError(
                f"{where} is defined twice (steps {seen[name] + 1} and {position + 1}); "
                f"step ids must be unique"
            )
        seen[name] = position
        description: object = raw.get("description")
        if description is None:
            description = ""
        elif not isinstance(description, str):
            raise GraphError(f"{where}: description must be a string (got {_short(description)})")
        tool_name = raw.get("tool")
        if not isinstance(tool_name, str):
            raise GraphError(f"{where}: tool must be the name of a tool (got {_short(tool_name)})")
        if tool_name not in tools:
            known = ", ".join(repr(t) for t in tools) or "none"
            raise GraphError(
                f"{where} uses tool {tool_name!r}, which is not in tools (known: {known})"
                f"{did_you_mean(tool_name, tools)}; add it to the tools mapping"
            )
        deps = _depends_on(raw.get("depends_on"), where)
        group = raw.get("parallel_group")
        if group is not None:
            if isinstance(group, bool) or not isinstance(group, str | int):
                raise GraphError(f"{where}: parallel_group must be a string, an int or null (got {group!r})")
            groups.setdefault(str(group), []).append(name)
        spec = StepSpec(
            name=name,
            fn=_make_call(tools[tool_name], description, deps),
            params=tuple(Param(d, False) for d in deps),
            description=f"[{tool_name}] {description}" if description else f"[{tool_name}]",
        )
        if tool_name in tool_options:
            spec = _with_options(spec, tool_options[tool_name], wrap_cache)
        specs.append(spec)
    ids = list(seen)
    for spec in specs:
        for p in spec.params:
            if p.name not in seen:
                raise GraphError(
                    f"plan step {spec.name!r} depends on {p.name!r}, but the plan has no step "
                    f"with that id{did_you_mean(p.name, ids)}"
                )
    compiled = compile_plan(flow_name, specs)  # cycles: "cycle: a -> b -> a"
    for group, members in groups.items():
        indices = {compiled.by_name[m] for m in members}
        for m in members:
            below = set(compiled.descendants(compiled.by_name[m])) & indices
            if below:
                other = compiled.nodes[min(below)].spec.name
                raise GraphError(
                    f"plan step {other!r} depends on {m!r} (directly or through other steps), "
                    f"so they cannot run in parallel, yet both are in parallel_group {group!r}; "
                    f"fix the group or the dependencies"
                )
    return specs
