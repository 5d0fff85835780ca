"""Flow.from_plan and describe() for the planner's JSON plans (issue 3)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing
from _backends import on_trio

import trioflow
from trioflow import BatchStarted, Flow, FlowError, GraphError

pytestmark = pytest.mark.anyio


calls: list[tuple[str, tuple[Any, ...]]] = []


async def echo(description: str, *inputs: Any) -> str:
    calls.append((description, inputs))
    await anyio.lowlevel.checkpoint()
    return f"<{description}{''.join(' ' + str(i) for i in inputs)}>"


def timed(seconds: float) -> Any:
    async def tool(description: str, *inputs: Any) -> str:
        if on_trio():
            await trio.sleep(seconds)
        else:
            await anyio.lowlevel.checkpoint()
        return description

    return tool


def step(step_id: Any, tool: str = "echo", depends_on: Any = (), group: Any = None, **extra: Any) -> dict[str, Any]:
    return {"step_id": step_id, "description": f"do {step_id}", "tool": tool,
            "depends_on": list(depends_on), "parallel_group": group, **extra}


TOOLS = {"echo": echo}


async def test_tools_get_the_description_and_dependency_outputs_in_depends_on_order() -> None:
    calls.clear()
    plan = {"steps": [step("a"), step("b"), step("c", depends_on=["b", "a"])]}
    result = await Flow.from_plan(plan, TOOLS).run()
    assert result["c"] == "<do c <do b> <do a>>"
    assert ("do c", ("<do b>", "<do a>")) in calls
    assert list(result.outputs) == ["a", "b", "c"]


async def test_plan_as_json_text_and_int_step_ids() -> None:
    text = json.dumps({"steps": [step(1), step(2, depends_on=[1])]})
    flow = Flow.from_plan(text, TOOLS, name="numbers")
    result = await flow.run()
    assert result["2"] == "<do 2 <do 1>>"
    assert flow.name == "numbers"
    assert flow.steps == ("1", "2")


@pytest.mark.trio_only
async def test_steps_run_as_soon_as_their_dependencies_are_done() -> None:
    plan = {"steps": [
        {"step_id": "slow", "tool": "slow", "depends_on": []},
        {"step_id": "fast", "tool": "fast", "depends_on": []},
        {"step_id": "after_fast", "tool": "fast", "depends_on": ["fast"]},
        {"step_id": "join", "tool": "fast", "depends_on": ["slow", "after_fast"]},
    ]}
    result = await Flow.from_plan(plan, {"slow": timed(5), "fast": timed(1)}).run()
    starts = {name: s.started_at - result.started_at for name, s in result.steps.items()}
    assert starts == {"slow": 0, "fast": 0, "after_fast": 1, "join": 5}
    assert result.duration == 6


@pytest.mark.trio_only
async def test_parallel_group_never_slows_anything() -> None:
    tools = {"slow": timed(5), "fast": timed(1)}
    grouped = {"steps": [
        {"step_id": "a", "tool": "slow", "parallel_group": 1},
        {"step_id": "b", "tool": "fast"},
        {"step_id": "c", "tool": "fast", "depends_on": ["b"], "parallel_group": 1},  # no edge to a
        {"step_id": "d", "tool": "fast", "depends_on": ["c"], "parallel_group": "late"},
    ]}
    plain = {"steps": [{k: v for k, v in s.items() if k != "parallel_group"} for s in grouped["steps"]]}
    r1 = await Flow.from_plan(grouped, tools).run()
    r2 = await Flow.from_plan(plain, tools).run()
    assert r1.duration == r2.duration == 5
    assert r1.steps["d"].finished_at - r1.started_at == 3  # d did not wait for group 1's slow a


async def test_parallel_batches_are_announced() -> None:
    plan = {"steps": [step("root"), step("x", depends_on=["root"]), step("y", depends_on=["root"]),
                      step("z", depends_on=["root"])]}
    events: list[Any] = []
    await Flow.from_plan(plan, TOOLS).run(on_event=events.append)
    batches = [e for e in events if isinstance(e, BatchStarted)]
    assert [e.steps for e in batches] == [("x", "y", "z")]
    assert str(batches[0]).endswith("Executing 3 steps in parallel: x, y, z")


def test_describe_numbers_steps_and_shows_stages() -> None:
    plan = {"steps": [step("fetch"), step("parse", depends_on=["fetch"]), step("lint"),
                      step("report", depends_on=["parse", "lint"])]}
    text = Flow.from_plan(plan, TOOLS, name="pipeline").describe()
    assert text.splitlines() == [
        "Plan for flow 'pipeline': 4 steps",
        "  1. fetch - [echo] do fetch (no dependencies)",
        "  2. parse - [echo] do parse (depends on: fetch)",
        "  3. lint - [echo] do lint (no dependencies)",
        "  4. report - [echo] do report (depends on: parse, lint)",
        "Stages (steps in one stage can run together):",
        "  stage 1 (2 in parallel): fetch, lint",
        "  stage 2 (1 step): parse",
        "  stage 3 (1 step): report",
    ]


async def test_a_failing_tool_names_the_step() -> None:
    async def broken(description: str, *inputs: Any) -> str:
        raise ConnectionError("tool down")

    plan = {"steps": [step("a", tool="broken"), step("b", depends_on=["a"]), step("c")]}
    with pytest.raises(FlowError) as info:
        await Flow.from_plan(plan, {"broken": broken, "echo": echo}).run(error_handling="continue")
    err = info.value
    assert err.result.failed == ["a"]
    assert err.result.skipped == ["b"]
    assert err.result["c"] == "<do c>"
    assert "trioflow: step 'a' failed on attempt 1" in err.exceptions[0].__notes__


async def test_a_plan_flow_is_reusable() -> None:
    flow = Flow.from_plan({"steps": [step("a"), step("b", depends_on=["a"])]}, TOOLS)
    first, second = await flow.run(), await flow.run()
    assert dict(first.outputs) == dict(second.outputs)


async def test_current_step_inside_a_tool() -> None:
    async def who(description: str) -> str:
        trioflow.current_step().add_usage(calls=1)
        return trioflow.current_step().name

    result = await Flow.from_plan({"steps": [step("s-1", tool="who")]}, {"who": who}).run()
    assert result["s-1"] == "s-1"
    assert dict(result.usage) == {"calls": 1}


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("a", tool="serch")],
         "plan step 'a' uses tool 'serch', which is not in tools (known: 'echo', 'search'); "
         "did you mean 'search'?; add it to the tools mapping"),
        ([step("fetch"), step("b", depends_on=["fecth"])],
         "plan step 'b' depends on 'fecth', but the plan has no step with that id; did you mean 'fetch'?"),
        ([step("a"), step("a")], "plan step 'a' is defined twice (steps 1 and 2); step ids must be unique"),
        ([step("a", depends_on=["c"]), step("b", depends_on=["a"]), step("c", depends_on=["b"])],
         "cycle: a -> b -> c -> a"),
        ([step("a", depends_on=["a"])], "cycle: a -> a (step 'a' depends on itself)"),
        ([step("a", group="g"), step("b", depends_on=["a"], group="g")],
         "plan step 'b' depends on 'a' (directly or through other steps), so they cannot run in "
         "parallel, yet both are in parallel_group 'g'; fix the group or the dependencies"),
        ([step("a", group=2), step("m", depends_on=["a"]), step("b", depends_on=["m"], group=2)],
         "plan step 'b' depends on 'a' (directly or through other steps), so they cannot run in "
         "parallel, yet both are in parallel_group '2'; fix the group or the dependencies"),
        ([step("a", depends_on=["b", "b"]), step("b")], "plan step 'a' lists dependency 'b' twice in depends_on"),
        ([{"step_id": "a", "tool": "echo", "depend_on": []}],
         "plan step 1 has a field 'depend_on'; did you mean 'depends_on'?"),
        ([{"tool": "echo"}], "plan step 1 has no 'step_id'; give every step a unique id"),
        ([step(True)], "plan step 1: step_id must be a string or an int (got True)"),
        ([step("a", tool=3)], "plan step 'a': tool must be the name of a tool (got 3)"),
        ([step("a", group=[1])], "plan step 'a': parallel_group must be a string, an int or null (got [1])"),
        ([], "Flow.from_plan: 'steps' must be a non-empty list of steps (got [])"),
    ],
)
def test_bad_plans_are_graph_errors_naming_the_step(steps: list[Any], message: str) -> None:
    async def search(description: str) -> str:
        return description  # pragma: no cover

    with pytest.raises(GraphError) as info:
        Flow.from_plan({"steps": steps}, {"echo": echo, "search": search})
    assert str(info.value) == message


def test_notes_in_a_step_are_ignored() -> None:
    flow = Flow.from_plan({"steps": [step("a", reasoning="because", expected_output="text")]}, TOOLS)
    assert flow.steps == ("a",)


def test_bad_plan_shapes() -> None:
    with pytest.raises(GraphError, match=r"the plan is not valid JSON"):
        Flow.from_plan("{steps: ", TOOLS)
    with pytest.raises(GraphError, match=r"the plan has no 'steps' list \(keys: \['plan'\]\)"):
        Flow.from_plan({"plan": []}, TOOLS)
    with pytest.raises(TypeError, match=r"takes a plan object .* \(got \[1\] that is a list\)"):
        Flow.from_plan([1], TOOLS)  # type: ignore[arg-type]


def test_tools_must_be_async_functions() -> None:
    def sync_tool(description: str) -> str:
        return description

    with pytest.raises(TypeError, match=r"Flow.from_plan: tool 'x' expects an async function, but 'sync_tool'"):
        Flow.from_plan({"steps": [step("a", tool="x")]}, {"x": sync_tool})
    with pytest.raises(TypeError, match=r"tools must map tool names to async functions"):
        Flow.from_plan({"steps": [step("a")]}, [echo])  # type: ignore[arg-type]


# -- the example ------------------------------------------------------------------------


def test_plan_example_prints_the_plan_and_the_parallel_batches() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "plan_example.py"
    spec = importlib.util.spec_from_file_location("_plan_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines: list[str] = []
    code = trio.run(module.main, lambda *parts: lines.append(" ".join(map(str, parts))),
                    clock=trio.testing.MockClock(autojump_threshold=0))
    assert code == 0
    text = "\n".join(lines)
    assert "stage 1 (3 in parallel): search_papers, search_web, fetch_guidelines" in text
    assert "Executing 3 steps in parallel: search_papers, search_web, fetch_guidelines" in text
    assert "Executing 2 steps in parallel: outline, cite" in text
    assert lines[-1] == "done in 0.900 s (sequential would take 1.550 s)"
