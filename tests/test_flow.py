"""Flow definition (``Flow``, ``flow.step``, ``flow.add``) and every validation message."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
import trio

import trioflow
from trioflow import Flow, GraphError, Retry


async def fetch() -> str:
    return "page"


def plain(x: int) -> int:
    return x


def raises(exc: type[BaseException], message: str) -> Any:
    """``pytest.raises`` that matches the whole message exactly."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def run(flow: Flow, inputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``flow.run`` under ``trio.run``, with keyword options."""
    return trio.run(functools.partial(flow.run, inputs, **kwargs))


# -- definition --------------------------------------------------------------------


def test_step_decorator_bare_and_with_options_returns_the_function() -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> int:
        return 1

    @flow.step(name="renamed", after="a", cost=2)
    async def b() -> int:
        return 2

    assert callable(a)
    assert a.__name__ == "a"
    assert b.__name__ == "b"
    assert flow.steps == ("a", "renamed")


def test_add_is_the_non_decorator_form() -> None:
    flow = Flow("f")
    flow.add(fetch)
    flow.add(fetch, name="again")
    assert flow.steps == ("fetch", "again")


def test_flow_name_and_repr() -> None:
    assert Flow().name == "flow"
    flow = Flow("jokes")
    flow.add(fetch)
    assert repr(flow) == "<trioflow.Flow 'jokes' with 1 steps>"


def test_parameters_naming_steps_are_data_dependencies_others_are_inputs() -> None:
    flow = Flow("f")

    @flow.step
    async def joke(topic: str) -> str:
        return f"joke about {topic}"

    @flow.step
    async def french(joke: str, style: str = "polite") -> str:
        return f"{style} french {joke}"

    @flow.step(after=["joke"])
    async def notify() -> None:
        return None

    plan = flow.plan()
    j, fr, n = plan.nodes
    assert [p for p, _ in fr.data_deps] == ["joke"]
    assert [p.name for p in j.inputs] == ["topic"]
    assert [p.name for p in fr.inputs] == ["style"]
    assert n.data_deps == ()
    assert n.deps == (0,)
    assert dict(plan.required_inputs) == {"topic": ("joke",)}
    assert plan.optional_inputs == frozenset({"style"})

    result = trio.run(flow.run, {"topic": "cats"})
    assert result["french"] == "polite french joke about cats"
    assert result["notify"] is None
    result = trio.run(flow.run, {"topic": "cats", "style": "rude"})
    assert result["french"] == "rude french joke about cats"


def test_var_args_and_kwargs_take_nothing() -> None:
    flow = Flow("f")
    seen = []

    @flow.step
    async def a(*args: Any, **kwargs: Any) -> int:
        seen.append((args, kwargs))
        return 1

    assert trio.run(flow.run)["a"] == 1
    assert seen == [((), {})]


def test_async_callable_instance_and_partial_are_steps() -> None:
    import functools

    class Caller:
        __name__ = "caller"

        async def __call__(self) -> str:
            return "called"

    async def add(x: int, y: int) -> int:
        return x + y

    flow = Flow("f")
    flow.add(Caller())
    flow.add(functools.partial(add, y=1), name="inc")
    assert trio.run(flow.run, {"x": 1}).outputs == {"caller": "called", "inc": 2}


def test_flow_is_reusable_and_can_run_concurrently() -> None:
    flow = Flow("f")

    @flow.step
    async def double(x: int) -> int:
        await trio.sleep(1)
        return 2 * x

    results: dict[int, int] = {}

    async def main() -> None:
        async def one(x: int) -> None:
            results[x] = (await flow.run({"x": x}))["double"]

        async with trio.open_nursery() as nursery:
            for x in range(5):
                nursery.start_soon(one, x)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert results == {x: 2 * x for x in range(5)}


def test_adding_a_step_invalidates_the_cached_plan() -> None:
    flow = Flow("f")
    flow.add(fetch)
    first = flow.plan()
    assert flow.plan() is first

    @flow.step
    async def parse(fetch: str) -> str:
        return fetch

    assert flow.plan() is not first
    assert len(flow.plan().nodes) == 2


# -- validation: the graph -------------------------------------------------------------


def test_cycle_message_shows_the_path_in_execution_order() -> None:
    # a feeds b, b feeds c, c feeds a: execution order a -> b -> c -> a
    flow = Flow("f")

    @flow.step
    async def a(c: int) -> int:
        return c

    @flow.step
    async def b(a: int) -> int:
        return a

    @flow.step
    async def c(b: int) -> int:
        return b

    with raises(GraphError, "cycle: a -> b -> c -> a"):
        flow.plan()


def test_cycle_message_when_declared_in_execution_order_reversed() -> None:
    flow = Flow("f")

    @flow.step
    async def c(b: int) -> int:
        return b

    @flow.step
    async def b(a: int) -> int:
        return a

    @flow.step
    async def a(c: int) -> int:
        return c

    # the path starts at the earliest-declared step of the cycle
    with raises(GraphError, "cycle: c -> a -> b -> c"):
        flow.plan()


def test_cycle_through_after_edges_is_reported() -> None:
    flow = Flow("f")

    @flow.step(after="y")
    async def x() -> None: ...

    @flow.step(after="x")
    async def y() -> None: ...

    with raises(GraphError, "cycle: x -> y -> x"):
        flow.plan()


def test_cycle_is_checked_before_any_step_runs() -> None:
    ran = []
    flow = Flow("f")

    @flow.step
    async def free() -> None:
        ran.append("free")

    @flow.step(after="y")
    async def x() -> None: ...

    @flow.step(after="x")
    async def y() -> None: ...

    with pytest.raises(GraphError):
        trio.run(flow.run)
    assert ran == []


def test_self_dependency_is_a_cycle() -> None:
    flow = Flow("f")

    @flow.step(after="a")
    async def a() -> None: ...

    with raises(GraphError, "cycle: a -> a (step 'a' depends on itself)"):
        flow.plan()


def test_unknown_after_name_with_did_you_mean() -> None:
    flow = Flow("f")
    flow.add(fetch)

    @flow.step(after=["fetc"])
    async def parse() -> None: ...

    with raises(GraphError, "step 'parse' runs after 'fetc', but no step is named 'fetc'; did you mean 'fetch'?"):
        flow.plan()


def test_unknown_after_name_without_a_close_match() -> None:
    flow = Flow("f")
    flow.add(fetch)

    @flow.step(after="zzz")
    async def parse() -> None: ...

    with raises(GraphError, "step 'parse' runs after 'zzz', but no step is named 'zzz'"):
        trio.run(flow.run)


def test_duplicate_step_name() -> None:
    flow = Flow("f")
    flow.add(fetch)
    with raises(GraphError, "flow 'f' already has a step named 'fetch'; give this one another name with name='...'"):
        flow.add(fetch)
    assert flow.steps == ("fetch",)


def test_graph_error_is_a_value_error_and_a_trioflow_error() -> None:
    assert issubclass(GraphError, ValueError)
    assert issubclass(GraphError, trioflow.TrioflowError)


def test_empty_flow() -> None:
    with raises(GraphError, "flow 'f' has no steps; add one with @flow.step"):
        trio.run(Flow("f").run)


# -- validation: the step function -----------------------------------------------------


def test_coroutine_object_instead_of_function() -> None:
    flow = Flow("f")
    with raises(
        TypeError,
        "flow.step got a coroutine object (fetch(...) was already called); "
        "pass the async function itself: fetch, not fetch()",
    ):
        flow.add(fetch())
    with raises(
        TypeError,
        "step 'x' got a coroutine object (fetch(...) was already called); "
        "pass the async function itself: fetch, not fetch()",
    ):
        flow.step(name="x")(fetch())
    assert flow.steps == ()


def test_plain_function_instead_of_async_function() -> None:
    flow = Flow("f")
    with raises(
        TypeError,
        "flow.step expects an async function, but 'plain' is a plain function; define it "
        "with 'async def', or run it in a worker: @flow.step(runner=\"thread\") for "
        "blocking code, @flow.step(runner=\"process\") for CPU-bound code",
    ):
        flow.step(plain)
    with raises(TypeError, "flow.step expects an async function (got 3 that is a int)"):
        flow.add(3)  # type: ignore[arg-type]


def test_positional_only_parameter() -> None:
    async def f(x: int, /) -> int:
        return x

    with raises(
        GraphError,
        "step 'f': parameter 'x' is positional-only; steps receive their inputs by name, "
        "so remove the '/' from the signature",
    ):
        Flow("f").add(f)


def test_unknown_step_option_with_did_you_mean() -> None:
    with raises(TypeError, "flow.step() got an unknown option 'retries'; did you mean 'retry'?"):
        Flow("f").add(fetch, retries=3)


def test_empty_step_name() -> None:
    with raises(TypeError, "a step name must be a non-empty string (got '')"):
        Flow("f").add(fetch, name="")


# -- validation: step options -----------------------------------------------------------


def test_negative_timeout() -> None:
    with raises(GraphError, "step 'fetch': timeout= must be > 0 seconds (got -1)"):
        Flow("f").add(fetch, timeout=-1)
    with raises(GraphError, "step 'fetch': timeout= must be > 0 seconds (got 0)"):
        Flow("f").add(fetch, timeout=0)
    with raises(TypeError, "step 'fetch': timeout= must be a number of seconds (got '1')"):
        Flow("f").add(fetch, timeout="1")


def test_step_max_concurrent_zero() -> None:
    async def summary(docs: str) -> str:
        return docs

    with raises(GraphError, "step 'summary': max_concurrent must be at least 1 (got 0); use None for no limit"):
        Flow("f").add(summary, map_over="docs", max_concurrent=0)


def test_step_max_concurrent_without_map_over() -> None:
    with raises(
        GraphError,
        "step 'fetch': max_concurrent= limits the items of a map step, but this step has no "
        "map_over=; use a named limiter (limiter=...) to limit plain steps",
    ):
        Flow("f").add(fetch, max_concurrent=2)


def test_map_over_without_matching_parameter() -> None:
    async def summary(doc: str) -> str:
        return doc

    with raises(
        GraphError,
        "step 'summary' maps over 'docs' but has no parameter named 'docs' to receive each "
        "item; add one: async def summary(docs): ...",
    ):
        Flow("f").add(summary, map_over="docs")


def test_bad_cost_and_isolation() -> None:
    with raises(GraphError, "step 'fetch': cost= must be a finite number >= 0 (got -1)"):
        Flow("f").add(fetch, cost=-1)
    with raises(GraphError, "step 'fetch': isolation= must be 'copy' or 'share' (got 'deep')"):
        Flow("f").add(fetch, isolation="deep")


def test_retry_option_must_be_a_retry() -> None:
    with raises(
        TypeError,
        "step 'fetch': retry= takes a trioflow.Retry (got 3); for example "
        "retry=trioflow.Retry(max_attempts=3)",
    ):
        Flow("f").add(fetch, retry=3)


def test_retry_max_attempts_zero() -> None:
    with raises(GraphError, "Retry(max_attempts=0) must be at least 1 (1 means a single attempt, no retry)"):
        Retry(max_attempts=0)


# -- validation: run arguments -----------------------------------------------------------


def _joke_flow() -> Flow:
    flow = Flow("jokes")

    @flow.step
    async def joke(topic: str) -> str:
        return topic

    @flow.step
    async def french(joke: str, jok: str) -> str:
        return joke

    return flow


def test_missing_input_names_the_steps_that_need_it() -> None:
    flow = Flow("f")

    @flow.step
    async def joke(topic: str) -> str:
        return topic

    with raises(GraphError, "flow 'f' is missing input 'topic' (needed by 'joke'); pass it in flow.run(inputs)"):
        trio.run(flow.run)


def test_missing_input_that_looks_like_a_step_gets_did_you_mean() -> None:
    with raises(
        GraphError,
        "flow 'jokes' is missing input 'jok' (needed by 'french'); did you mean 'joke'?; "
        "pass it in flow.run(inputs)",
    ):
        trio.run(_joke_flow().run, {"topic": "cats"})


def test_several_missing_inputs() -> None:
    with raises(
        GraphError,
        "flow 'jokes' is missing inputs 'topic' (needed by 'joke'); 'jok' (needed by "
        "'french'); pass them in flow.run(inputs)",
    ):
        trio.run(_joke_flow().run)


def test_unknown_input_with_did_you_mean() -> None:
    with raises(GraphError, "input 'topik' is not used by any step of flow 'jokes'; did you mean 'topic'?"):
        trio.run(_joke_flow().run, {"topic": "x", "jok": "y", "topik": "z"})


def test_input_naming_a_step() -> None:
    with raises(
        GraphError,
        "input 'joke' names a step of flow 'jokes'; a step's output comes from running it, "
        "so remove 'joke' from the inputs",
    ):
        trio.run(_joke_flow().run, {"topic": "x", "jok": "y", "joke": "z"})


def test_inputs_must_be_a_mapping() -> None:
    with raises(TypeError, "flow.run(inputs=...) takes a mapping of input names to values (got [1])"):
        trio.run(_joke_flow().run, [1])


@pytest.mark.parametrize("value", [0, -3])
def test_run_max_concurrent_below_one(value: int) -> None:
    with raises(
        GraphError, f"flow.run(max_concurrent=...) must be at least 1 (got {value}); use None for no limit"
    ):
        run(_joke_flow(), {"topic": "x", "jok": "y"}, max_concurrent=value)  # type: ignore[arg-type]


def test_run_max_concurrent_wrong_type() -> None:
    with raises(
        TypeError, "flow.run(max_concurrent=...) must be an int >= 1 or None (got 1.5 that is a float)"
    ):
        run(_joke_flow(), {"topic": "x", "jok": "y"}, max_concurrent=1.5)  # type: ignore[arg-type]


def test_unknown_limiter_name() -> None:
    flow = Flow("f")
    flow.add(fetch, limiter="llm")
    with raises(
        GraphError,
        "step 'fetch' uses limiter 'llm', but flow.run() got no limiter by that name; "
        "pass limiters={'llm': 2} (or a CapacityLimiter)",
    ):
        trio.run(flow.run)
    with raises(
        GraphError,
        "step 'fetch' uses limiter 'llm', but flow.run() got no limiter by that name; "
        "pass limiters={'llm': 2} (or a CapacityLimiter); did you mean 'llms'?",
    ):
        run(flow, None, limiters={"llms": 2})  # type: ignore[arg-type]


def test_bad_limiter_values() -> None:
    flow = Flow("f")
    flow.add(fetch, limiter="llm")
    with raises(GraphError, "flow.run(limiters={'llm': ...}) must be at least 1 (got 0); use None for no limit"):
        run(flow, None, limiters={"llm": 0})  # type: ignore[arg-type]
    with raises(
        TypeError,
        "flow.run(limiter=...) takes a CapacityLimiter (trio.CapacityLimiter or "
        "anyio.CapacityLimiter), got 'x' that is a str",
    ):
        run(flow, None, limiter="x", limiters={"llm": 1})  # type: ignore[arg-type]


def test_bad_error_handling() -> None:
    with raises(GraphError, "flow.run(error_handling='stop') must be 'fail_fast' or 'continue'"):
        flow = Flow("f")
        flow.add(fetch)
        run(flow, None, error_handling="stop")  # type: ignore[arg-type]


def test_validation_happens_before_any_step_runs() -> None:
    ran = []
    flow = Flow("f")

    @flow.step
    async def first() -> None:
        ran.append("first")

    @flow.step(limiter="llm")
    async def second(x: int) -> None:
        ran.append("second")

    with pytest.raises(GraphError):
        trio.run(flow.run, {"x": 1})
    assert ran == []


def test_each_step_gets_its_own_default_for_an_optional_input() -> None:
    flow = Flow("f")

    @flow.step
    async def polite(style: str = "polite") -> str:
        return style

    @flow.step
    async def rude(style: str = "rude") -> str:
        return style

    assert dict(trio.run(flow.run).outputs) == {"polite": "polite", "rude": "rude"}
    assert dict(trio.run(flow.run, {"style": "dry"}).outputs) == {"polite": "dry", "rude": "dry"}


def test_optional_input_default_is_not_shared_with_a_required_use() -> None:
    flow = Flow("f")

    @flow.step
    async def a(x: int = 1) -> int:
        return x

    @flow.step
    async def b(x: int) -> int:
        return x

    with raises(GraphError, "flow 'f' is missing input 'x' (needed by 'b'); pass it in flow.run(inputs)"):
        trio.run(flow.run)
    assert dict(trio.run(flow.run, {"x": 5}).outputs) == {"a": 5, "b": 5}
