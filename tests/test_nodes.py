"""trioflow.nodes (issue 3): the node executor on the engine, on trio and asyncio."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
import trio
from _backends import on_trio

from trioflow import TrioflowError
from trioflow.nodes import (
    BaseNode,
    End,
    MergeError,
    MergeStrategy,
    NodeResult,
    ParallelExecutionError,
    ParallelExecutor,
    RunContext,
    canonical,
    merge_states,
    run_graph,
)

pytestmark = pytest.mark.anyio


async def nap(seconds: float) -> None:
    """Sleep in virtual time on trio; a few checkpoints on asyncio (never the wall clock)."""
    if on_trio():
        await trio.sleep(seconds)
    else:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()


class Sleep:
    def __init__(self, name: str, seconds: float = 0.1) -> None:
        self.name = name
        self.seconds = seconds

    async def run(self, ctx: RunContext[dict[str, Any]]) -> End:
        await nap(self.seconds)
        ctx.state[self.name] = True
        ctx.provenance.append(self.name)
        return End()


class Increment:
    async def run(self, ctx: RunContext[dict[str, int]]) -> End:
        value = ctx.state["counter"]
        await anyio.lowlevel.checkpoint()  # a read-modify-write across an await
        ctx.state["counter"] = value + 1
        return End()


class Fail:
    async def run(self, ctx: RunContext[Any]) -> End:
        await anyio.lowlevel.checkpoint()
        raise ValueError("node failed")


class SetState:
    def __init__(self, state: Any) -> None:
        self.state = state

    async def run(self, ctx: RunContext[Any]) -> End:
        await anyio.lowlevel.checkpoint()
        ctx.state = self.state
        return End()


def ctx_of(state: Any, provenance: list[Any] | None = None) -> RunContext[Any]:
    return RunContext(state, execution_id="exec-1", provenance=list(provenance or []))


# -- the acceptance scenarios ----------------------------------------------------------


@pytest.mark.trio_only
async def test_four_independent_100ms_nodes_take_100ms_not_400() -> None:
    nodes = [Sleep(f"n{i}") for i in range(4)]
    start = trio.current_time()
    results = await ParallelExecutor(max_concurrent=4).execute_parallel(nodes, ctx_of({}))
    parallel = trio.current_time() - start
    start = trio.current_time()
    await ParallelExecutor(max_concurrent=1).execute_parallel(nodes, ctx_of({}))
    sequential = trio.current_time() - start
    assert parallel == pytest.approx(0.1)
    assert sequential == pytest.approx(0.4)
    assert sequential / parallel == pytest.approx(4.0)  # >= 2x required; exactly 4x here
    assert [r.execution_time_ms for r in results] == pytest.approx([100.0] * 4)


async def test_hundred_runs_of_the_same_node_give_the_identical_state() -> None:
    @attrs.define
    class State:
        items: list[str] = attrs.Factory(list)
        scores: dict[str, float] = attrs.Factory(dict)

    class Analyze:
        async def run(self, ctx: RunContext[State]) -> End:
            for word in ("b", "a", "c"):
                await anyio.lowlevel.checkpoint()
                ctx.state.items.append(word)
                ctx.state.scores[word] = len(ctx.state.items) / 3
            return End()

    forms = set()
    for _ in range(100):
        (result,) = await ParallelExecutor().execute_parallel([Analyze()], ctx_of(State()))
        forms.add(canonical(result.context.state))
    assert len(forms) == 1


async def test_ten_increment_nodes_each_see_counter_zero() -> None:
    ctx = ctx_of({"counter": 0})
    results = await ParallelExecutor(max_concurrent=4).execute_parallel([Increment() for _ in range(10)], ctx)
    assert [r.context.state["counter"] for r in results] == [1] * 10
    assert ctx.state == {"counter": 0}  # the caller's context is never changed


async def test_hundred_quick_nodes_under_max_concurrent_four_complete() -> None:
    in_flight = peak = 0

    class Quick:
        async def run(self, ctx: RunContext[Any]) -> End:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.lowlevel.checkpoint()
            in_flight -= 1
            return End()

    with anyio.fail_after(60):
        results = await ParallelExecutor(max_concurrent=4).execute_parallel([Quick() for _ in range(100)], ctx_of({}))
    assert len(results) == 100
    assert all(r.ok for r in results)
    assert peak == 4


async def test_a_failing_node_has_its_error_in_its_result_and_nothing_is_raised() -> None:
    nodes: list[BaseNode] = [Sleep("a"), Fail(), Sleep("c")]
    results = await ParallelExecutor().execute_parallel(nodes, ctx_of({}))
    assert len(results) == 3
    assert [r.node for r in results] == nodes
    assert results[0].error is None
    assert results[2].error is None
    assert isinstance(results[1].error, ValueError)
    assert str(results[1].error) == "node failed"
    assert results[1].next_node is None
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[0].next_node, End)


# -- state types -----------------------------------------------------------------------


@dataclasses.dataclass
class DataState:
    counter: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.define
class AttrsState:
    counter: int = 0
    tags: list[str] = attrs.Factory(list)


def pydantic_state() -> Any:
    import pydantic  # installed by the nox tests session

    class PydanticState(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        counter: int = 0
        tags: list[str] = []  # pydantic copies field defaults

    return PydanticState()


class TagAndCount:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def run(self, ctx: RunContext[Any]) -> End:
        state = ctx.state
        await anyio.lowlevel.checkpoint()
        if isinstance(state, dict):
            state["counter"] += 1
            state["tags"].append(self.tag)
        else:
            state.counter += 1
            state.tags.append(self.tag)
        return End()


@pytest.mark.parametrize(
    "make_state",
    [
        lambda: {"counter": 0, "tags": []},
        DataState,
        AttrsState,
        pydantic_state,
    ],
    ids=["dict", "dataclass", "attrs", "pydantic"],
)
async def test_every_state_type_is_copied_per_node_and_merged(make_state: Any) -> None:
    state = make_state()
    ctx = ctx_of(state)
    results = await ParallelExecutor().execute_parallel([TagAndCount("x"), TagAndCount("y"), TagAndCount("x")], ctx)
    forms = [canonical(r.context.state) for r in results]
    assert forms[0] == forms[2] != forms[1]
    assert canonical(ctx.state) == canonical(make_state())  # untouched
    merged = merge_states(results, MergeStrategy.MAJORITY)
    assert canonical(merged.state) == forms[0]
    assert merged.state is results[0].context.state


# -- canonical serialization ---------------------------------------------------------------


def test_canonical_ignores_dict_and_set_order_but_not_types() -> None:
    assert canonical({"a": 1, "b": {2, 1}}) == canonical({"b": {1, 2}, "a": 1})
    assert canonical({1: "x", "1": "y"}) == canonical({"1": "y", 1: "x"})
    assert canonical([1, 2]) != canonical((1, 2))
    assert canonical(1) != canonical(1.0)
    assert canonical(DataState(1)) != canonical(AttrsState(1))
    assert canonical(DataState(1, ["a"])) == canonical(DataState(1, ["a"]))
    assert canonical(float("nan")) == canonical(float("nan"))


def test_canonical_handles_plain_objects_and_nesting() -> None:
    class Plain:
        def __init__(self) -> None:
            self.x = [DataState(2)]

    assert canonical(Plain()) == canonical(Plain())
    assert "DataState" in canonical(Plain())


# -- merging -----------------------------------------------------------------------------


def result(state: Any, *, error: Exception | None = None, prov: Sequence[Any] = (), inherited: int = 0,
           meta: dict[str, Any] | None = None) -> NodeResult[Any]:
    ctx = RunContext(state, "e", metadata=dict(meta or {}), provenance=list(prov))
    return NodeResult(Fail(), None if error else End(), ctx, 1.0, error, inherited_provenance=inherited)


def test_first_success_is_the_first_success_in_node_order() -> None:
    results = [result("a", error=ValueError()), result("b"), result("c")]
    assert merge_states(results, MergeStrategy.FIRST_SUCCESS).state == "b"
    assert ParallelExecutor().merge_states(results, "first_success").state == "b"


def test_all_success_merges_provenance_and_metadata_in_node_order() -> None:
    results = [
        result("s1", prov=["start", "n1"], inherited=1, meta={"a": 1, "b": 1}),
        result("s2", prov=["start", "n2", "n2b"], inherited=1, meta={"b": 2}),
        result("s3", prov=["start"], inherited=1),
    ]
    merged = merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert merged.state == "s1"
    assert merged.provenance == ["start", "n1", "n2", "n2b"]
    assert merged.metadata == {"a": 1, "b": 2}
    assert merged.execution_id == "e"


def test_all_success_with_a_failure_raises_parallel_execution_error() -> None:
    bad1, bad2 = ValueError("one"), KeyError("two")
    results = [result("a"), result("b", error=bad1), result("c"), result("d", error=bad2)]
    with pytest.raises(ParallelExecutionError) as info:
        merge_states(results, MergeStrategy.ALL_SUCCESS)
    err = info.value
    assert isinstance(err, TrioflowError)
    assert isinstance(err, ExceptionGroup)
    assert [r.error for r in err.failed_nodes] == [bad1, bad2]
    assert [r.context.state for r in err.partial_results] == ["a", "c"]
    assert list(err.exceptions) == [bad1, bad2]
    assert str(err) == "2 of 4 nodes failed (Fail: ValueError('one'), Fail: KeyError('two')) (2 sub-exceptions)"
    # except* and split() keep the type and the attributes
    caught: dict[str, BaseException] = {}
    try:
        raise err
    except* KeyError as group:
        caught["key"] = group
    except* ValueError as rest:
        caught["value"] = rest
    key, value = caught["key"], caught["value"]
    assert isinstance(key, ParallelExecutionError)
    assert isinstance(value, ParallelExecutionError)
    assert [r.error for r in key.failed_nodes] == [bad2]
    assert len(key.partial_results) == 2
    assert [r.error for r in value.failed_nodes] == [bad1]
    copy = pickle.loads(pickle.dumps(ParallelExecutionError([result(1, error=ValueError("x"))], [])))
    assert isinstance(copy, ParallelExecutionError)


def test_majority_picks_the_most_common_state_with_ties_to_node_order() -> None:
    results = [result({"v": 1}, prov=["p", "n0"], inherited=1), result({"v": 2}, prov=["p", "n1"], inherited=1),
               result({"v": 2}, prov=["p", "n2"], inherited=1), result({"v": 1}, error=ValueError())]
    merged = merge_states(results, MergeStrategy.MAJORITY)
    assert merged.state == {"v": 2}
    assert merged.provenance == ["p", "n1", "n2"]
    tie = [result({"v": 3}), result({"v": 4}), result({"v": 4}), result({"v": 3})]
    assert merge_states(tie, MergeStrategy.MAJORITY).state == {"v": 3}


@pytest.mark.parametrize("strategy", list(MergeStrategy))
def test_nothing_succeeded_is_a_merge_error(strategy: MergeStrategy) -> None:
    results = [result("a", error=ValueError("x")), result("b", error=ValueError("y"))]
    expected = ParallelExecutionError if strategy is MergeStrategy.ALL_SUCCESS else MergeError
    with pytest.raises(expected):
        merge_states(results, strategy)
    with pytest.raises(MergeError, match="there are no results"):
        merge_states([], strategy)


def test_merge_error_carries_the_node_errors() -> None:
    with pytest.raises(MergeError) as info:
        merge_states([result("a", error=ValueError("x"))], MergeStrategy.MAJORITY)
    assert str(info.value) == "cannot merge states with MAJORITY: all 1 nodes failed"
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert isinstance(info.value, TrioflowError)


def test_unknown_strategy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"merge strategy 'best' is not one of MergeStrategy.FIRST_SUCCESS"):
        merge_states([result("a")], "best")  # type: ignore[arg-type]


# -- run_graph ----------------------------------------------------------------------------


@dataclasses.dataclass
class Doc:
    text: str
    words: int = 0
    sentiment: str = ""
    summary: str = ""


class Load:
    async def run(self, ctx: RunContext[Doc]) -> list[BaseNode]:
        ctx.provenance.append("load")
        return [CountWords(), Sentiment()]


class CountWords:
    async def run(self, ctx: RunContext[Doc]) -> Summarize:
        await nap(0.2)
        ctx.state.words = len(ctx.state.text.split())
        ctx.provenance.append("count")
        return Summarize()


class Sentiment:
    async def run(self, ctx: RunContext[Doc]) -> Summarize:
        await nap(0.1)
        ctx.state.sentiment = "positive"
        ctx.provenance.append("sentiment")
        return Summarize()


class Summarize:
    async def run(self, ctx: RunContext[Doc]) -> End:
        ctx.state.summary = f"{ctx.state.words} words"
        ctx.provenance.append("summarize")
        return End()


async def test_run_graph_runs_until_end_and_fans_out_lists() -> None:
    ctx = RunContext(Doc("trio makes async code structured"), execution_id="x1")
    start = anyio.current_time()
    final = await run_graph(Load(), ctx)
    elapsed = anyio.current_time() - start
    # ALL_SUCCESS keeps the first branch's state
    assert final.state == Doc("trio makes async code structured", words=5, summary="5 words")
    assert final.provenance == ["load", "count", "sentiment", "summarize"]
    assert ctx.state.words == 0  # the caller's context is not changed
    assert ctx.provenance == []
    if on_trio():
        assert elapsed == pytest.approx(0.2)  # the branches ran in parallel


async def test_run_graph_uses_the_fanning_out_nodes_merge_strategy() -> None:
    class Vote:
        merge_strategy = MergeStrategy.MAJORITY

        async def run(self, ctx: RunContext[Any]) -> list[BaseNode]:
            return [SetState("yes"), SetState("no"), SetState("yes"), Fail()]

    final = await run_graph(Vote(), ctx_of("?"))
    assert final.state == "yes"


async def test_run_graph_all_success_fan_out_with_a_failure_raises() -> None:
    class Split:
        async def run(self, ctx: RunContext[Any]) -> list[BaseNode]:
            return [SetState(1), Fail()]

    with pytest.raises(ParallelExecutionError) as info:
        await run_graph(Split(), ctx_of(0))
    assert len(info.value.failed_nodes) == 1
    assert len(info.value.partial_results) == 1


async def test_run_graph_branches_that_do_not_rejoin_are_a_merge_error() -> None:
    class Other:
        async def run(self, ctx: RunContext[Any]) -> End:
            return End()  # pragma: no cover

    class GoOther:
        async def run(self, ctx: RunContext[Any]) -> Other:
            return Other()

    class Split:
        async def run(self, ctx: RunContext[Any]) -> list[BaseNode]:
            return [SetState(1), GoOther()]

    with pytest.raises(MergeError, match=r"do not rejoin: they return next nodes of different types \(End, Other\)"):
        await run_graph(Split(), ctx_of(0))


async def test_run_graph_node_errors_propagate_with_a_note() -> None:
    class Start:
        async def run(self, ctx: RunContext[Any]) -> Fail:
            return Fail()

    with pytest.raises(ValueError, match="node failed") as info:
        await run_graph(Start(), ctx_of(0))
    assert info.value.__notes__ == ["trioflow.nodes.run_graph: node Fail (node 2) raised"]


async def test_run_graph_accepts_the_end_class_itself() -> None:
    class Stop:
        async def run(self, ctx: RunContext[Any]) -> type[End]:
            ctx.state += 1
            return End

    assert (await run_graph(Stop(), ctx_of(1))).state == 2


async def test_a_node_returning_nonsense_is_a_type_error() -> None:
    class Bad:
        async def run(self, ctx: RunContext[Any]) -> Any:
            return 42

    (res,) = await ParallelExecutor().execute_parallel([Bad()], ctx_of(0))
    assert isinstance(res.error, TypeError)
    assert "node Bad's next node is 42, which has no run method" in str(res.error)
    with pytest.raises(TypeError, match="which has no run method"):
        await run_graph(Bad(), ctx_of(0))


# -- validation, cancellation ------------------------------------------------------------


async def test_nodes_and_contexts_are_validated_eagerly() -> None:
    ex = ParallelExecutor()
    with pytest.raises(TypeError, match=r"execute_parallel\(\): node 1 is the class Sleep, not a node; pass an instance: Sleep\(\)"):
        await ex.execute_parallel([Sleep("a"), Sleep], ctx_of({}))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"node 0 is 3, which has no run method"):
        await ex.execute_parallel([3], ctx_of({}))  # type: ignore[list-item]

    class SyncRun:
        def run(self, ctx: RunContext[Any]) -> End:
            return End()

    with pytest.raises(TypeError, match=r"SyncRun.run\) expects an async function"):
        await ex.execute_parallel([SyncRun()], ctx_of({}))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"takes a trioflow.nodes.RunContext as ctx \(got \{\}\)"):
        await ex.execute_parallel([Sleep("a")], {})  # type: ignore[arg-type]


def test_max_concurrent_is_validated() -> None:
    with pytest.raises(ValueError, match=r"ParallelExecutor\(max_concurrent=0\) must be at least 1"):
        ParallelExecutor(max_concurrent=0)
    with pytest.raises(TypeError, match=r"must be an int >= 1 \(got '4' that is a str\)"):
        ParallelExecutor(max_concurrent="4")  # type: ignore[arg-type]
    assert ParallelExecutor().max_concurrent == 4


async def test_empty_node_list() -> None:
    assert await ParallelExecutor().execute_parallel([], ctx_of({})) == []


async def test_outside_cancellation_stops_every_node() -> None:
    cancelled = 0

    class Forever:
        async def run(self, ctx: RunContext[Any]) -> End:
            nonlocal cancelled
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled += 1
                raise
            return End()  # pragma: no cover

    class Canceller:
        def __init__(self, scope: anyio.CancelScope) -> None:
            self.scope = scope

        async def run(self, ctx: RunContext[Any]) -> End:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            self.scope.cancel()
            return End()

    with anyio.CancelScope() as scope:
        await ParallelExecutor().execute_parallel([Forever(), Forever(), Canceller(scope)], ctx_of({}))
    assert scope.cancelled_caught
    assert cancelled == 2


async def test_current_step_inside_a_node_names_the_node_class() -> None:
    import trioflow

    class Who:
        async def run(self, ctx: RunContext[Any]) -> End:
            step = trioflow.current_step()
            ctx.state = (step.name, step.item)
            return End()

    results = await ParallelExecutor().execute_parallel([Who(), Who()], ctx_of(None))
    assert [r.context.state for r in results] == [("Who", 0), ("Who", 1)]


def test_base_node_is_a_runtime_checkable_protocol() -> None:
    assert isinstance(Sleep("a"), BaseNode)
    assert not isinstance(object(), BaseNode)


def test_run_context_defaults_are_not_shared() -> None:
    a = RunContext({}, "1")
    b = RunContext({}, "2")
    a.metadata["k"] = 1
    a.provenance.append("x")
    assert b.metadata == {}
    assert b.provenance == []
    assert a.user_id is None


# -- issue 9 items 16 and 17 ----------------------------------------------------------------


class Leaf:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    async def run(self, ctx: RunContext[dict[str, Any]]) -> type[End]:
        await nap(0.1)
        if self.fail:
            raise ValueError(f"leaf {self.name} failed")
        ctx.state[self.name] = True
        ctx.provenance.append(self.name)
        return End


class Inner:
    def __init__(self, n: int, strategy: MergeStrategy | None = None, fail_one: bool = False) -> None:
        self.n = n
        self.fail_one = fail_one
        if strategy is not None:
            self.merge_strategy = strategy

    async def run(self, ctx: RunContext[dict[str, Any]]) -> list[BaseNode]:
        await nap(0.1)
        ctx.provenance.append(f"inner{self.n}")
        return [Leaf(f"{self.n}a", fail=self.fail_one), Leaf(f"{self.n}b")]


class Outer:
    def __init__(self, *inners: Inner) -> None:
        self.inners = inners

    async def run(self, ctx: RunContext[dict[str, Any]]) -> list[BaseNode]:
        ctx.provenance.append("outer")
        return list(self.inners)


async def test_issue_9_item_16_run_graph_runs_every_branch_of_nested_fan_outs() -> None:
    start = anyio.current_time()
    final = await run_graph(Outer(Inner(1), Inner(2)), ctx_of({}))
    assert final.state == {"1a": True}  # ALL_SUCCESS: the first branch's state, at each level
    assert final.provenance == ["outer", "inner1", "1a", "1b", "inner2", "2a", "2b"]  # all four ran
    if on_trio():
        assert anyio.current_time() - start == pytest.approx(0.2)  # both levels in parallel


async def test_issue_9_item_16_a_nested_fan_out_merges_with_its_own_strategy() -> None:
    # the inner fan-outs keep their first success, so a failing leaf does not fail the
    # outer ALL_SUCCESS merge (it would if the outer strategy were used for them)
    final = await run_graph(
        Outer(
            Inner(1, MergeStrategy.FIRST_SUCCESS, fail_one=True),
            Inner(2, MergeStrategy.FIRST_SUCCESS, fail_one=True),
        ),
        ctx_of({}),
    )
    assert final.provenance == ["outer", "inner1", "1b", "inner2", "2b"]
    with pytest.raises(ParallelExecutionError) as info:  # an inner ALL_SUCCESS fails its branch
        await run_graph(Outer(Inner(1), Inner(2, fail_one=True)), ctx_of({}))
    assert len(info.value.failed_nodes) == 1
    assert isinstance(info.value.failed_nodes[0].error, ParallelExecutionError)


async def test_issue_9_item_17_execute_single_with_isolation() -> None:
    ctx = ctx_of({"counter": 0}, provenance=["before"])
    executor = ParallelExecutor()
    result = await executor.execute_single_with_isolation(Increment(), ctx)
    assert isinstance(result, NodeResult)
    assert result.ok
    assert result.context.state == {"counter": 1}
    assert ctx.state == {"counter": 0}  # the caller's context is untouched
    assert result.context is not ctx
    assert result.inherited_provenance == 1
    failed = await executor.execute_single_with_isolation(Fail(), ctx)
    assert isinstance(failed.error, ValueError)
    assert failed.next_node is None
    with pytest.raises(TypeError, match="execute_single_with_isolation\\(\\): node is the class Fail"):
        await executor.execute_single_with_isolation(Fail, ctx)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes a trioflow\.nodes\.RunContext as ctx"):
        await executor.execute_single_with_isolation(Fail(), {"counter": 0})  # type: ignore[arg-type]
