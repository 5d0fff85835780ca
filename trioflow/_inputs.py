"""What a step's parameters may name besides steps: flow inputs and shared resources.

Pure and synchronous. A parameter that names no step is a *flow input* (a
value given to each run, copied for each step under ``isolation="copy"``) or a
*resource* (an object given as ``flow.run(resources=...)``, such as an HTTP
client or a connection pool: the very same object for every step, never
copied, never recorded by a store).

``Flow(name, inputs=..., resources=...)`` declares them, so a misspelt
parameter is an error when the flow is planned, not a missing input at run
time. Without declarations, :func:`typo_marks` finds parameters one edit away
from a step's name for :meth:`Flow.describe` to flag.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._exceptions import GraphError
from ._graph import Plan, did_you_mean

# The parameter names that the running flow fills with resources: a step's
# Cache leaves them out of its key (a client is not part of what a call computes).
current_resources: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "trioflow_current_resources", default=frozenset()
)


def declared_names(value: object, what: str) -> frozenset[str] | None:
    """Validate ``Flow(inputs=...)`` or ``Flow(resources=...)``: a name or names."""
    if value is None:
        return None
    names: tuple[object, ...]
    if isinstance(value, str):
        names = (value,)
    elif isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise TypeError(
            f"Flow({what}=...) takes a tuple of parameter names, for example "
            f"{what}=('topic',) (got {value!r} that is a {type(value).__name__})"
        )
    else:
        names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(
                f"Flow({what}=...) takes parameter names, which are identifier strings "
                f"(got {name!r} in {value!r})"
            )
    return frozenset(names)  # type: ignore[arg-type]


def damerau_levenshtein(a: str, b: str) -> int:
    """Edit distance counting insertions, deletions, substitutions and swaps of two
    adjacent letters (the optimal string alignment distance)."""
    if a == b:
        return 0
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[i - 2][j - 2] + 1)
        rows.append(row)
    return rows[len(a)][len(b)]


def one_edit_away(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one insertion, deletion,
    substitution or swap of two adjacent letters."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    return damerau_levenshtein(a, b) == 1


def typo_marks(plan: Plan, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """Flow inputs one edit away from a step name: input -> that step's name."""
    steps = list(plan.by_name)
    marks: dict[str, str] = {}
    for name in (*plan.required_inputs, *sorted(plan.optional_inputs)):
        if name in exclude or name in marks:
            continue
        for step in steps:
            if one_edit_away(name, step):
                marks[name] = step
                break
    return marks


@attrs.frozen
class Declarations:
    """A flow's declared inputs (``None``: not declared) and resources."""

    inputs: frozenset[str] | None = None
    resources: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        both = sorted((self.inputs or frozenset()) & self.resources)
        if both:
            raise GraphError(
                f"Flow(): {both[0]!r} is declared both as an input and as a resource; "
                f"an input is copied for each step, a resource is shared: choose one"
            )

    @property
    def active(self) -> bool:
        return self.inputs is not None or bool(self.resources)


def apply_declarations(flow_name: str, plan: Plan, declared: Declarations) -> Plan:
    """Check a compiled plan against the flow's declarations.

    Parameters that name a declared resource stop being inputs. With declared
    inputs, any other parameter must be one of them.

    Raises:
        GraphError: a declared name is a step's name, a parameter names no step,
            declared input or declared resource (with a "did you mean"), or a map
            step maps over a resource.
    """
    for kind, names in (("input", declared.inputs or ()), ("resource", declared.resources)):
        for name in sorted(names):
            if name in plan.by_name:
                raise GraphError(
                    f"flow {flow_name!r} declares {kind} {name!r}, but {name!r} is also a step; "
                    f"a parameter named {name!r} receives the step's output, so rename one of them"
                )
    candidates = [*plan.by_name, *(declared.inputs or ()), *declared.resources]
    for node in plan.nodes:
        spec = node.spec
        if spec.map_over is not None and spec.map_over in declared.resources:
            raise GraphError(
                f"map step {spec.name!r} maps over {spec.map_over!r}, which is a resource (shared, "
                f"never split into items); map over a step or an input instead"
            )
        if declared.inputs is None:
            continue
        for p in node.inputs:
            if p.key in declared.inputs or p.key in declared.resources:
                continue
            default = " (it has a default, but undeclared parameters are not inputs)" if p.has_default else ""
            raise GraphError(
                f"step {spec.name!r} has parameter {p.name!r} that names no step, declared input "
                f"or declared resource of flow {flow_name!r}{default}"
                f"{did_you_mean(p.name, candidates)}; fix the name, or add it to "
                f"Flow(inputs=...) or Flow(resources=...)"
            )
    if not declared.resources:
        return plan
    return attrs.evolve(
        plan,
        required_inputs={k: v for k, v in plan.required_inputs.items() if k not in declared.resources},
        optional_inputs=plan.optional_inputs - declared.resources,
    )


def resource_users(plan: Plan, name: str) -> list[str]:
    """Steps with a parameter ``name`` that names no step."""
    return [n.spec.name for n in plan.nodes if any(p.key == name for p in n.inputs)]


def check_resources(
    flow_name: str,
    plan: Plan,
    resources: object,
    inputs: Mapping[str, Any],
    declared: Declarations,
) -> Mapping[str, Any]:
    """Validate ``flow.run(resources=...)`` against the plan and the inputs.

    Raises:
        TypeError: ``resources`` is not a mapping with string keys.
        GraphError: a resource name is a step's name or an input's name, or a
            declared resource that a step uses is missing.
    """
    if resources is None:
        resources = {}
    if not isinstance(resources, Mapping):
        raise TypeError(
            f"flow.run(resources=...) takes a mapping of parameter names to shared objects, "
            f"for example resources={{'client': client}} (got {resources!r} that is a "
            f"{type(resources).__name__})"
        )
    # A resource no step uses is fine: an application passes the same resources to
    # every flow it runs. A misspelt key leaves its parameter a missing input,
    # whose error suggests the key.
    for key in resources:
        if not isinstance(key, str):
            raise TypeError(
                f"flow.run(resources=...) keys must be parameter names (strings), got {key!r} "
                f"that is a {type(key).__name__}"
            )
        if key in plan.by_name:
            raise GraphError(
                f"resource {key!r} names a step of flow {flow_name!r}; a parameter named {key!r} "
                f"receives the step's output, so rename the resource or the step"
            )
        if key in inputs or (declared.inputs is not None and key in declared.inputs):
            raise GraphError(
                f"{key!r} is given as a resource but is also an input of flow {flow_name!r}; "
                f"an input is copied for each step, a resource is shared: pass it as one of them"
            )
    for name in sorted(declared.resources):
        users = resource_users(plan, name)
        if users and name not in resources:
            raise GraphError(
                f"flow {flow_name!r} is missing resource {name!r} (needed by "
                f"{', '.join(repr(u) for u in users)}); pass it in flow.run(resources={{{name!r}: ...}})"
            )
    for node in plan.nodes if resources else ():
        if node.spec.map_over is not None and node.spec.map_over in resources:
            raise GraphError(
                f"map step {node.spec.name!r} maps over {node.spec.map_over!r}, which is given as a "
                f"resource (shared, never split into items); pass it as an input instead"
            )
    return dict(resources)
