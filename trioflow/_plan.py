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

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._exceptions import GraphError
from ._graph import Param, StepSpec, check_async_callable, compile_plan, did_you_mean

__all__ = ["Tool", "plan_specs"]

Tool = Callable[..., Awaitable[Any]]

_FIELDS = ("step_id", "description", "tool", "depends_on", "parallel_group")


def _load(plan: object) -> list[Any]:
    if isinstance(plan, str | bytes | bytearray):
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


def _make_call(tool: Tool, description: str, deps: tuple[str, ...]) -> Callable[..., Awaitable[Any]]:
    async def call(**outputs: Any) -> Any:
        return await tool(description, *(outputs[d] for d in deps))

    call.__qualname__ = call.__name__ = getattr(tool, "__name__", "tool")
    return call


def plan_specs(flow_name: str, plan: object, tools: Mapping[str, Tool]) -> list[StepSpec]:
    """Validate a plan and turn each of its steps into a :class:`StepSpec`.

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
        depends_on = raw.get("depends_on") or []
        if isinstance(depends_on, str | int) and not isinstance(depends_on, bool):
            depends_on = [depends_on]
        if not isinstance(depends_on, Sequence) or isinstance(depends_on, str):
            raise GraphError(f"{where}: depends_on must be a list of step ids (got {_short(depends_on)})")
        deps = tuple(_step_id(d, f"{where} depends_on") for d in depends_on)
        for d in deps:
            if deps.count(d) > 1:
                raise GraphError(f"{where} lists dependency {d!r} twice in depends_on")
        group = raw.get("parallel_group")
        if group is not None:
            if isinstance(group, bool) or not isinstance(group, str | int):
                raise GraphError(f"{where}: parallel_group must be a string, an int or null (got {group!r})")
            groups.setdefault(str(group), []).append(name)
        specs.append(
            StepSpec(
                name=name,
                fn=_make_call(tools[tool_name], description, deps),
                params=tuple(Param(d, False) for d in deps),
                description=f"[{tool_name}] {description}" if description else f"[{tool_name}]",
            )
        )
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
