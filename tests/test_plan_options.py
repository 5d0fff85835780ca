"""Flow.from_plan: scalar depends_on of any type (issue 9 item 18) and per-tool options (issue 11 item 7)."""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

import trioflow
from trioflow import Flow, FlowError, GraphError, Retry

pytestmark = pytest.mark.anyio


async def echo(description: str, *inputs: Any) -> str:
    await anyio.lowlevel.checkpoint()
    return f"<{description}{''.join(' ' + str(i) for i in inputs)}>"


TOOLS = {"echo": echo}


# -- issue 9 item 18: depends_on ---------------------------------------------------------


@pytest.mark.parametrize("dep", [0, "0"])
async def test_issue_9_item_18_a_scalar_zero_is_one_dependency(dep: Any) -> None:
    plan = {"steps": [
        {"step_id": 0, "description": "first", "tool": "echo"},
        {"step_id": "b", "description": "second", "tool": "echo", "depends_on": dep},
    ]}
    flow = Flow.from_plan(plan, TOOLS)
    assert "depends on: 0" in flow.describe()
    result = await flow.run()
    assert result["b"] == "<second <first>>"


async def test_issue_9_item_18_a_scalar_string_and_null() -> None:
    plan = {"steps": [
        {"step_id": "a", "description": "a", "tool": "echo", "depends_on": None},
        {"step_id": "b", "description": "b", "tool": "echo", "depends_on": "a"},
    ]}
    assert (await Flow.from_plan(plan, TOOLS).run())["b"] == "<b <a>>"


@pytest.mark.parametrize(
    ("dep", "shown"), [(False, "False"), ("", "''"), ({}, "{}"), (True, "True")]
)
def test_issue_9_item_18_false_empty_string_and_empty_object_are_refused(dep: Any, shown: str) -> None:
    plan = {"steps": [
        {"step_id": "a", "tool": "echo"},
        {"step_id": "b", "tool": "echo", "depends_on": dep},
    ]}
    with pytest.raises(GraphError) as info:
        Flow.from_plan(plan, TOOLS)
    assert str(info.value) == (
        f"plan step 'b': depends_on is {shown}, which names no step; give a list of step "
        f"ids, one step id, or [] (or leave it out) for no dependencies"
    )


def test_issue_9_item_18_a_duplicate_dependency_is_named() -> None:
    plan = {"steps": [{"step_id": "a", "tool": "echo"},
                      {"step_id": "b", "tool": "echo", "depends_on": ["a", "a"]}]}
    with pytest.raises(GraphError, match=r"^plan step 'b' lists dependency 'a' twice in depends_on$"):
        Flow.from_plan(plan, TOOLS)


def _wide(n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"step_id": f"s{i}", "tool": "echo"} for i in range(n)]
    steps.append({"step_id": "join", "tool": "echo", "depends_on": [f"s{i}" for i in range(n)]})
    return {"steps": steps}


def test_issue_9_item_18_from_plan_is_linear_in_the_dependency_count() -> None:
    # a ratio of two sizes measured in the same process, not a wall-clock bound: a
    # quadratic check makes the 8x larger plan cost ~64x, a linear one ~8x
    # (the garbage collector is off while measuring: its full collections scan every
    # live object, which grows the cost of building many objects faster than linearly)
    def cost(n: int) -> float:
        plan = _wide(n)
        best = float("inf")
        for _ in range(3):
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                Flow.from_plan(plan, TOOLS)
                best = min(best, time.perf_counter() - start)
            finally:
                gc.enable()
        return best

    small, large = cost(1000), cost(8000)
    assert large / small < 24


# -- issue 11 item 7: options per tool -----------------------------------------------------


async def test_issue_11_item_7_options_apply_to_every_step_of_the_tool() -> None:
    attempts: dict[str, int] = {}

    async def flaky(description: str, *inputs: Any) -> str:
        attempts[description] = attempts.get(description, 0) + 1
        await anyio.lowlevel.checkpoint()
        if attempts[description] < 3:
            raise ConnectionError("try again")
        return description

    plan = {"steps": [
        {"step_id": "a", "description": "a", "tool": "flaky"},
        {"step_id": "b", "description": "b", "tool": "flaky"},
        {"step_id": "c", "description": "c", "tool": "echo", "depends_on": ["a", "b"]},
    ]}
    flow = Flow.from_plan(
        plan, {"flaky": flaky, "echo": echo},
        options={"flaky": {"retry": Retry(max_attempts=3), "limiter": "http", "timeout": 10}},
    )
    result = await flow.run(limiters={"http": 1})
    assert result["c"] == "<c a b>"
    assert [result.steps[n].attempts for n in "abc"] == [3, 3, 1]
    with pytest.raises(GraphError, match="uses limiter 'http'"):
        await flow.run()


@pytest.mark.trio_only
async def test_issue_11_item_7_a_limiter_and_timeout_from_options_hold() -> None:
    async def slow(description: str, *inputs: Any) -> str:
        await trio.sleep(2 if description != "hang" else 100)
        return description

    plan = {"steps": [{"step_id": s, "description": s, "tool": "slow"} for s in ("a", "b", "c")]}
    result = await Flow.from_plan(plan, {"slow": slow}, options={"slow": {"limiter": "one"}}).run(
        limiters={"one": 1})
    assert result.duration == 6
    hang = {"steps": [{"step_id": "h", "description": "hang", "tool": "slow"}]}
    with pytest.raises(FlowError) as info:
        await Flow.from_plan(hang, {"slow": slow}, options={"slow": {"timeout": 5}}).run()
    assert isinstance(info.value.exceptions[0], TimeoutError)
    assert info.value.result.duration == 5


async def test_issue_11_item_7_after_and_cache_options() -> None:
    calls: list[str] = []

    async def note(description: str, *inputs: Any) -> str:
        calls.append(description)
        await anyio.lowlevel.checkpoint()
        return description

    plan = {"steps": [{"step_id": "a", "description": "a", "tool": "echo"},
                      {"step_id": "n", "description": "n", "tool": "note"}]}
    cache = trioflow.Cache()
    flow = Flow.from_plan(plan, {"echo": echo, "note": note},
                          options={"note": {"after": "a", "cache": cache}})
    assert "n (no dependencies)" not in flow.describe()
    await flow.run()
    await flow.run()
    assert calls == ["n"]


def test_issue_11_item_7_unknown_tool_in_options() -> None:
    plan = {"steps": [{"step_id": "a", "tool": "echo"}]}
    with pytest.raises(GraphError) as info:
        Flow.from_plan(plan, TOOLS, options={"ecko": {"timeout": 1}})
    assert str(info.value) == (
        "Flow.from_plan(options=...) has options for tool 'ecko', which is not in tools "
        "(known: 'echo'); did you mean 'echo'?"
    )


def test_issue_11_item_7_unknown_option_name() -> None:
    plan = {"steps": [{"step_id": "a", "tool": "echo"}]}
    with pytest.raises(GraphError) as info:
        Flow.from_plan(plan, TOOLS, options={"echo": {"retries": 3}})
    assert str(info.value) == (
        "Flow.from_plan(options=...): tool 'echo' has an unknown option 'retries'; did you mean "
        "'retry'?; options may be: after, cache, cost, isolation, limiter, retry, timeout"
    )


def test_issue_11_item_7_options_the_plan_owns_are_refused() -> None:
    plan = {"steps": [{"step_id": "a", "tool": "echo"}]}
    with pytest.raises(GraphError, match="tool 'echo' sets 'map_over', which a tool cannot set"):
        Flow.from_plan(plan, TOOLS, options={"echo": {"map_over": "x"}})


def test_issue_11_item_7_bad_option_values_name_the_step() -> None:
    plan = {"steps": [{"step_id": "a", "tool": "echo"}]}
    with pytest.raises(GraphError, match=r"^step 'a': timeout= must be > 0 seconds \(got -1\)$"):
        Flow.from_plan(plan, TOOLS, options={"echo": {"timeout": -1}})
    with pytest.raises(TypeError, match=r"takes a trioflow\.Retry"):
        Flow.from_plan(plan, TOOLS, options={"echo": {"retry": 3}})
    with pytest.raises(TypeError, match="must be a mapping of step options"):
        Flow.from_plan(plan, TOOLS, options={"echo": 3})  # type: ignore[dict-item]
