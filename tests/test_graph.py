"""The pure graph model: plan edges, order, ranks, stages, descendants."""

from __future__ import annotations

from typing import Any

import pytest

from trioflow import Flow, GraphError
from trioflow._graph import check_async_callable, did_you_mean


def _flow(spec: dict[str, tuple[tuple[str, ...], dict[str, Any]]], step_factory: Any) -> Flow:
    flow = Flow("g")
    for name, (deps, options) in spec.items():
        flow.add(step_factory(name, deps), **options)
    return flow


def _names(flow: Flow, indices: Any) -> list[str]:
    return [flow.plan().nodes[i].spec.name for i in indices]


def test_edges_children_and_depths(step_factory: Any) -> None:
    flow = _flow(
        {
            "a": ((), {}),
            "b": (("a",), {}),
            "c": ((), {"after": ["a"]}),
            "d": (("b", "c"), {}),
            "e": ((), {}),
        },
        step_factory,
    )
    plan = flow.plan()
    by = {n.spec.name: n for n in plan.nodes}
    assert _names(flow, by["d"].deps) == ["b", "c"]
    assert _names(flow, by["a"].children) == ["b", "c"]
    assert [p for p, _ in by["d"].data_deps] == ["b", "c"]
    assert by["c"].data_deps == ()
    assert _names(flow, by["c"].deps) == ["a"]
    assert {n: by[n].depth for n in by} == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 0}
    assert [_names(flow, s) for s in plan.stages] == [["a", "e"], ["b", "c"], ["d"]]
    assert dict(plan.by_name) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}


def test_topological_order_breaks_ties_by_declaration(step_factory: Any) -> None:
    flow = _flow(
        {
            "z": (("y",), {}),
            "y": ((), {}),
            "x": ((), {}),
            "w": (("x", "z"), {}),
        },
        step_factory,
    )
    assert _names(flow, flow.plan().topo_order) == ["y", "z", "x", "w"]


def test_rank_is_the_longest_cost_weighted_path_to_the_end(step_factory: Any) -> None:
    flow = _flow(
        {
            "a": ((), {"cost": 2}),
            "b": (("a",), {"cost": 5}),
            "c": (("a",), {}),
            "d": (("b", "c"), {"cost": 0.5}),
            "e": ((), {}),
        },
        step_factory,
    )
    ranks = {n.spec.name: n.rank for n in flow.plan().nodes}
    assert ranks == {"a": 7.5, "b": 5.5, "c": 1.5, "d": 0.5, "e": 1.0}


def test_descendants_follow_data_and_order_edges(step_factory: Any) -> None:
    flow = _flow(
        {
            "a": ((), {}),
            "b": (("a",), {}),
            "c": ((), {"after": "b"}),
            "d": ((), {}),
            "e": (("c", "d"), {}),
        },
        step_factory,
    )
    plan = flow.plan()
    assert _names(flow, plan.descendants(0)) == ["b", "c", "e"]
    assert _names(flow, plan.descendants(3)) == ["e"]
    assert plan.descendants(4) == []


def test_map_source(step_factory: Any) -> None:
    flow = Flow("g")
    flow.add(step_factory("docs"))
    flow.add(step_factory("each", ("docs",)), map_over="docs")
    flow.add(step_factory("each_input", ("items",)), map_over="items")
    plan = flow.plan()
    assert [n.map_source for n in plan.nodes] == [None, 0, None]
    assert dict(plan.required_inputs) == {"items": ("each_input",)}


def test_fingerprint_depends_on_structure_only(step_factory: Any) -> None:
    def build(after: str | None) -> Flow:
        flow = Flow("g")
        flow.add(step_factory("a"))
        flow.add(step_factory("b"), after=after)
        return flow

    assert build("a").plan().fingerprint == build("a").plan().fingerprint
    assert build("a").plan().fingerprint != build(None).plan().fingerprint


def test_describe(step_factory: Any) -> None:
    flow = Flow("jokes")

    async def joke(topic: str) -> str:
        """Write a joke.

        More text.
        """
        return topic

    flow.add(joke)
    flow.add(step_factory("french", ("joke",)), limiter="llm")
    flow.add(step_factory("shout", ("joke",)))
    flow.add(step_factory("each", ("lines",)), map_over="lines")
    assert flow.describe() == "\n".join(
        [
            "Plan for flow 'jokes': 4 steps",
            "  1. joke - Write a joke. (no dependencies; inputs: topic)",
            "  2. french (depends on: joke; limiter: llm)",
            "  3. shout (depends on: joke)",
            "  4. each (no dependencies; inputs: lines; one call per item of lines)",
            "Stages (steps in one stage can run together):",
            "  stage 1 (2 in parallel): joke, each",
            "  stage 2 (2 in parallel): french, shout",
        ]
    )


def test_did_you_mean() -> None:
    assert did_you_mean("fetc", ["fetch", "parse"]) == "; did you mean 'fetch'?"
    assert did_you_mean("zzz", ["fetch", "parse"]) == ""
    assert did_you_mean("x", []) == ""


def test_check_async_callable_accepts_async_callables() -> None:
    async def f() -> None: ...

    class C:
        async def __call__(self) -> None: ...

    check_async_callable(f, "x")
    check_async_callable(C(), "x")


def test_cycle_in_a_larger_graph_names_only_the_cycle(step_factory: Any) -> None:
    flow = _flow(
        {
            "start": ((), {}),
            "p": (("start", "r"), {}),
            "q": (("p",), {}),
            "r": (("q",), {}),
            "end": (("r",), {}),
        },
        step_factory,
    )
    with pytest.raises(GraphError) as info:
        flow.plan()
    assert str(info.value) == "cycle: p -> q -> r -> p"


def test_issue_16_a_function_added_many_times_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import inspect as inspect_module

    from trioflow import _graph

    reads: list[object] = []
    docs: list[object] = []
    real = inspect_module.signature
    real_getdoc = inspect_module.getdoc

    def counting(fn: Any, *args: Any, **kwargs: Any) -> inspect_module.Signature:
        reads.append(fn)
        return real(fn, *args, **kwargs)

    def counting_getdoc(fn: Any) -> str | None:
        docs.append(fn)
        return real_getdoc(fn)

    monkeypatch.setattr(_graph.inspect, "signature", counting)
    monkeypatch.setattr(_graph.inspect, "getdoc", counting_getdoc)

    async def fetch(url: str, retries: int = 2) -> str:
        """Fetch a page.

        More text that the plan never shows."""
        return url

    @functools.wraps(fetch)
    async def wrapped(*args: Any, **kwargs: Any) -> str:  # inspect.signature follows __wrapped__
        return await fetch(*args, **kwargs)

    flow = Flow("f")
    for i in range(50):
        flow.add(fetch, name=f"fetch{i}")
        flow.add(wrapped, name=f"wrapped{i}")
    # a plain function's code object lists its parameters; a wrapped one is read once
    assert reads == [wrapped]
    assert docs == []  # docstrings are read when a description is asked for, not before
    for spec in (flow._specs[14], flow._specs[15]):
        assert [(p.name, p.has_default, p.default) for p in spec.params] == [("url", False, None), ("retries", True, 2)]
        assert spec.description == "Fetch a page."
    assert "fetch49 - Fetch a page." in flow.describe()
    assert "wrapped49 - Fetch a page." in flow.describe()
    assert len(docs) == 2  # once per function


def _signature_cases() -> list[Any]:
    default = object()

    async def none() -> None: ...
    async def plain(a, b, c): ...  # type: ignore[no-untyped-def]
    async def defaults(a, b=1, c=None): ...  # type: ignore[no-untyped-def]
    async def star(a, *args, b, c=3, **kwargs): ...  # type: ignore[no-untyped-def]
    async def kw_only(*, x, y=default): ...  # type: ignore[no-untyped-def]
    async def all_defaults(a=[], b={}): ...  # type: ignore[no-untyped-def]  # noqa: B006
    async def with_locals(a, b=2):  # type: ignore[no-untyped-def]
        c = a + b
        return c

    async def late_defaults(a, b): ...  # type: ignore[no-untyped-def]
    late_defaults.__defaults__ = (5,)
    late_defaults.__kwdefaults__ = None
    return [none, plain, defaults, star, kw_only, all_defaults, with_locals, late_defaults, lambda q, r=1: q]


@pytest.mark.parametrize("fn", _signature_cases())
def test_issue_16_parameters_read_from_code_match_inspect_signature(fn: Any) -> None:
    import inspect as inspect_module

    from trioflow import _graph

    expected = [
        (p.name, p.default is not p.empty, None if p.default is p.empty else p.default)
        for p in inspect_module.signature(fn).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    got = [(p.name, p.has_default, p.default) for p in _graph._parameters(fn, "s")]
    assert len(got) == len(expected)
    for (name, has, value), (ename, ehas, evalue) in zip(got, expected, strict=True):
        assert (name, has) == (ename, ehas)
        assert value is evalue


def test_issue_16_fingerprints_stay_what_stores_recorded() -> None:
    # plan() computes the fingerprint when a store asks for it; the value must stay
    # what the eager computation gave (these digests come from it), or runs recorded
    # before could not resume
    async def fetch(url: str, retries: int = 2) -> str:
        return url

    async def parse(page: str) -> int:
        return len(page)

    async def store(parse: int, fetch: str) -> None:
        return None

    async def late(store: None, extra: str = "x") -> None:
        return None

    async def report(summary: str) -> str:
        return summary

    async def summary(topic: str) -> str:
        return topic

    for fn in (fetch, parse, store, late, report, summary):
        fn.__qualname__ = fn.__name__  # as if defined at module level
    flow = Flow("pinned")
    flow.add(fetch)
    flow.add(parse, bind={"page": "fetch"})
    flow.add(store, after=["fetch"], when=lambda parse: parse > 0)
    flow.add(late, map_over="store")
    assert flow.plan().fingerprint == "a4696a18692370dd"

    backwards = Flow("pinned out of order")  # a step declared before its dependency
    backwards.add(report)
    backwards.add(summary, cost=3)
    plan = backwards.plan()
    assert plan.fingerprint == "ccfa085887673f05"
    assert plan.topo_order == (1, 0)
    assert [n.rank for n in plan.nodes] == [1.0, 4.0]

    import attrs

    # a plan whose fingerprint was not asked for yet computes it after evolve() too
    fresh = Flow("pinned out of order")
    fresh.add(report)
    fresh.add(summary, cost=3)
    assert attrs.evolve(fresh.plan(), optional_inputs=frozenset()).fingerprint == "ccfa085887673f05"


@pytest.mark.parametrize("seed", range(20))
def test_issue_16_declaration_order_is_the_topological_order_when_dependencies_come_first(seed: int) -> None:
    # compile_plan skips Kahn's algorithm for such flows; check that it would give the same
    import random

    from trioflow._graph import _topological_order

    rng = random.Random(seed)
    n = rng.randrange(1, 40)
    deps = [tuple(sorted(rng.sample(range(i), rng.randrange(0, min(i, 4) + 1)))) for i in range(n)]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, ds in enumerate(deps):
        for d in ds:
            children[d].append(i)
    assert _topological_order(deps, [tuple(c) for c in children]) == list(range(n))

    flow = Flow("dag")
    for i in range(n):
        params = ", ".join(f"s{d}" for d in deps[i])
        namespace: dict[str, Any] = {}
        exec(f"async def s{i}({params}):\n    return 1\n", namespace)
        flow.add(namespace[f"s{i}"])
    plan = flow.plan()
    assert plan.topo_order == tuple(range(n))
    assert [node.deps for node in plan.nodes] == deps
    assert [node.children for node in plan.nodes] == [tuple(c) for c in children]
    depth = [0] * n
    rank = [0.0] * n
    for i in range(n):
        depth[i] = max((depth[d] + 1 for d in deps[i]), default=0)
    for i in reversed(range(n)):
        rank[i] = 1.0 + max((rank[c] for c in children[i]), default=0.0)
    assert [node.depth for node in plan.nodes] == depth
    assert [node.rank for node in plan.nodes] == rank
    assert [list(s) for s in plan.stages] == [[i for i in range(n) if depth[i] == k] for k in range(max(depth) + 1)]
