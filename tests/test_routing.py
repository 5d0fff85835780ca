"""Explicit wiring (``bind=``), conditional steps (``when=``) and optional
dependencies (issue 13 items 4 and 6). Results on trio and asyncio; timings on
trio in virtual time."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, GraphError, StepStatus

# -- bind= (item 6) ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_flows_built_in_a_loop_wire_parameters_by_bind(anyio_backend: Any) -> None:
    flow = Flow("loop")

    async def fetch(n: int, base: int) -> int:
        await anyio.sleep(n)
        return base * n

    async def add(x: int, y: int) -> int:
        return x + y

    for n in range(1, 4):
        flow.add(fetch, name=f"fetch_{n}", bind={"n": f"n_{n}"})
        flow.add(add, name=f"sum_{n}", bind={"x": f"fetch_{n}", "y": "offset"})
    result = await flow.run({"n_1": 1, "n_2": 2, "n_3": 3, "base": 10, "offset": 5})
    assert [result[f"sum_{n}"] for n in range(1, 4)] == [15, 25, 35]
    assert flow.plan().nodes[flow.plan().by_name["sum_2"]].deps == (flow.plan().by_name["fetch_2"],)


@pytest.mark.anyio
async def test_bind_with_map_over_maps_the_bound_parameter(anyio_backend: Any) -> None:
    flow = Flow("m")

    @flow.step
    async def urls() -> list[str]:
        return ["a", "bb", "ccc"]

    @flow.step(bind={"u": "urls"}, map_over="urls")
    async def size(u: str, scale: int = 2) -> int:
        return len(u) * scale

    @flow.step(bind={"u": "words"}, map_over="words")
    async def upper(u: str) -> str:
        return u.upper()

    result = await flow.run({"words": ["x", "y"]})
    assert result["size"] == [2, 4, 6]
    assert result["upper"] == ["X", "Y"]


@pytest.mark.trio
async def test_bind_keeps_the_timing_rules(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("t")

    async def slow(seconds: float) -> float:
        await trio.sleep(seconds)
        return trio.current_time()

    flow.add(slow, name="a", bind={"seconds": "three"})
    flow.add(slow, name="b", bind={"seconds": "a"})  # waits for a, then sleeps a's end time
    result = await flow.run({"three": 3.0})
    assert (result.steps["b"].started_at, result["b"]) == (3.0, 6.0)


def test_bind_errors_name_the_thing() -> None:
    flow = Flow("e")

    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=re.escape(
        "step 'f': bind= names parameter 'y' that the step function does not have "
        "(its parameters: x)"
    )):
        flow.add(f, bind={"y": "a"})
    with pytest.raises(TypeError, match=re.escape("step 'f': bind= takes a mapping")):
        flow.add(f, bind=["x"])
    with pytest.raises(TypeError, match=re.escape("step 'f': bind={'x': ...} must name a step or flow input (got 3)")):
        flow.add(f, bind={"x": 3})
    with pytest.raises(GraphError, match=re.escape("map_over= names the source: map_over='src'")):
        flow.add(f, bind={"x": "src"}, map_over="x")


@pytest.mark.anyio
async def test_a_bind_source_that_is_no_step_is_an_input_and_must_be_given(anyio_backend: Any) -> None:
    flow = Flow("e")

    @flow.step
    async def fetch_3() -> int:
        return 3

    @flow.step(bind={"x": "fetch3"})
    async def total(x: int) -> int:
        return x

    with pytest.raises(GraphError, match=re.escape(
        "flow 'e' is missing input 'fetch3' (needed by 'total'); did you mean 'fetch_3'?"
    )):
        await flow.run()


# -- when= and optional dependencies (item 4) -------------------------------------------


def _router(two_step: bool) -> Flow:
    flow = Flow("router")

    @flow.step
    async def classify(question: str) -> str:
        return "math" if any(c.isdigit() for c in question) else "chat"

    @flow.step(when=lambda classify: classify == "math")
    async def math(question: str) -> str:
        return f"math answer to {question}"

    if two_step:

        @flow.step
        async def fmt(math: str) -> str:
            return f"<{math}>"

    @flow.step(when=lambda classify: classify != "math")
    async def chat(question: str) -> str:
        return f"chat answer to {question}"

    if two_step:

        @flow.step
        async def respond(fmt: str | None = None, chat: str | None = None) -> str:
            return fmt if fmt is not None else f"{chat}"

    else:

        @flow.step  # type: ignore[no-redef]
        async def respond(math: str | None = None, chat: str | None = None) -> str:
            return math if math is not None else f"{chat}"

    return flow


@pytest.mark.anyio
@pytest.mark.parametrize("two_step", [False, True])
async def test_the_router_runs_exactly_one_branch(anyio_backend: Any, two_step: bool) -> None:
    flow = _router(two_step)
    math = await flow.run({"question": "what is 2+2"})
    expected = "math answer to what is 2+2"
    assert math["respond"] == (f"<{expected}>" if two_step else expected)
    assert math.steps["chat"].status is StepStatus.SKIPPED
    assert math.steps["chat"].skip_reason == "condition"
    assert math.steps["math"].skip_reason is None
    assert math.skipped == ["chat"]

    chat = await flow.run({"question": "hello"})
    assert chat["respond"] == "chat answer to hello"
    assert chat.steps["math"].skip_reason == "condition"
    expected_skipped = ["math", "fmt"] if two_step else ["math"]
    assert chat.skipped == expected_skipped
    if two_step:
        assert chat.steps["fmt"].skip_reason == "dependency"
        assert chat.steps["fmt"].started_at is None
    assert chat.ok is False  # skipped steps are not successes
    assert chat.failed == []


@pytest.mark.trio
async def test_a_condition_costs_no_time_and_dependents_start_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow = Flow("t")
    events: list[Any] = []

    @flow.step
    async def a() -> int:
        await trio.sleep(2)
        return 1

    @flow.step(when=lambda a: a > 5)
    async def b(a: int) -> int:
        await trio.sleep(10)
        return a

    @flow.step
    async def c(a: int, b: int = 0) -> int:
        await trio.sleep(1)
        return a + b

    result = await flow.run(on_event=events.append)
    assert result["c"] == 1
    assert result.steps["c"].started_at == 2.0
    assert result.duration == 3.0
    skipped = [e for e in events if isinstance(e, trioflow.StepSkipped)]
    assert skipped == [trioflow.StepSkipped("b", 2.0, "b", "condition")]
    assert str(skipped[0]) == "[+   2.000s] skipped  b (its condition is false)"
    assert (result.steps["b"].started_at, result.steps["b"].finished_at) == (None, None)


@pytest.mark.anyio
async def test_a_required_dependency_on_a_skipped_step_skips_as_dependency(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step(when=lambda go: go)
    async def a() -> int:
        return 1

    @flow.step
    async def b(a: int) -> int:
        return a

    @flow.step(after=["a"])
    async def c() -> str:
        return "ran"  # an order-only dependency does not need a's output

    @flow.step
    async def d(b: int = 7) -> int:
        return b  # b was skipped because of a condition upstream: the default applies

    result = await flow.run({"go": False})
    assert result.skipped == ["a", "b"]
    assert [result.steps[n].skip_reason for n in ("a", "b")] == ["condition", "dependency"]
    assert (result["c"], result["d"]) == ("ran", 7)
    ran = await flow.run({"go": True})
    assert ran.outputs == {"a": 1, "b": 1, "c": "ran", "d": 1}


@pytest.mark.anyio
async def test_a_skip_caused_by_a_failure_still_skips_optional_dependents(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step
    async def broken() -> int:
        raise RuntimeError("boom")

    @flow.step
    async def after_it(broken: int = 0) -> int:
        return broken

    @flow.step
    async def later(after_it: int = 5) -> int:
        return after_it

    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue")
    steps = info.value.result.steps
    assert steps["after_it"].status is StepStatus.SKIPPED
    assert steps["after_it"].skip_reason == "dependency"
    assert steps["later"].skip_reason == "dependency"
    assert steps["broken"].skip_reason is None


@pytest.mark.anyio
async def test_conditions_may_read_inputs_and_defaults(anyio_backend: Any) -> None:
    flow = Flow("f")
    seen: list[Any] = []

    def check(mode: str, limit: int = 3) -> bool:
        seen.append((mode, limit))
        return mode == "on"

    @flow.step(when=check)
    async def maybe() -> str:
        return "ran"

    assert (await flow.run({"mode": "on"}))["maybe"] == "ran"
    assert (await flow.run({"mode": "off", "limit": 1})).steps["maybe"].skip_reason == "condition"
    assert seen == [("on", 3), ("off", 1)]
    with pytest.raises(GraphError, match="missing input 'mode' \\(needed by 'maybe'\\)"):
        await flow.run()


@pytest.mark.anyio
async def test_a_condition_that_raises_fails_the_step(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> dict[str, int]:
        return {}

    @flow.step(when=lambda a: a["key"] > 1)
    async def b() -> int:
        return 1

    with pytest.raises(FlowError) as info:
        await flow.run()
    (error,) = info.value.exceptions
    assert isinstance(error, KeyError)
    assert error.__notes__ == ["trioflow: the when= condition of step 'b' raised"]
    step = info.value.result.steps["b"]
    assert (step.status, step.attempts) == (StepStatus.FAILED, 0)


@pytest.mark.anyio
async def test_a_condition_gets_its_own_copy_of_mutable_values(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> list[int]:
        return [1]

    def mutating(a: list[int]) -> bool:
        a.append(2)
        return True

    @flow.step(when=mutating)
    async def b(a: list[int]) -> list[int]:
        return a

    assert (await flow.run())["b"] == [1]


def test_condition_options_are_checked() -> None:
    flow = Flow("f")

    async def s() -> None: ...

    async def predicate() -> bool:
        return True

    with pytest.raises(TypeError, match="when= takes a plain \\(synchronous\\) predicate"):
        flow.add(s, when=predicate)
    with pytest.raises(TypeError, match="when= takes a predicate whose parameters name steps or inputs \\(got 3\\)"):
        flow.add(s, when=3)
    flow.add(s, when=lambda s: True)
    with pytest.raises(GraphError, match="cycle: s -> s"):
        flow.plan()


@pytest.mark.anyio
async def test_conditions_make_the_same_result_sequentially(anyio_backend: Any) -> None:
    flow = _router(two_step=True)
    for question in ("1+1", "hi"):
        results = [await flow.run({"question": question}, max_concurrent=m) for m in (None, 1, 2)]
        summaries = [
            {n: (s.status, s.value, s.skip_reason) for n, s in r.steps.items()} for r in results
        ]
        assert summaries[0] == summaries[1] == summaries[2]
