"""RunResult, StepResult and StepStatus."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, RunResult, StepResult, StepStatus


def test_step_status_values_are_the_strings() -> None:
    assert [s.value for s in StepStatus] == ["succeeded", "failed", "skipped", "cancelled"]
    assert StepStatus.SUCCEEDED == "succeeded"
    assert StepStatus("skipped") is StepStatus.SKIPPED
    assert str(StepStatus.FAILED) == "failed"
    assert f"{StepStatus.CANCELLED}" == "cancelled"
    assert isinstance(StepStatus.FAILED, str)


def _flow() -> Flow:
    flow = Flow("f")

    @flow.step
    async def slow() -> str:
        await trio.sleep(3)
        trioflow.current_step().add_usage(tokens=5)
        return "slow"

    @flow.step
    async def fast() -> str:
        await trio.sleep(1)
        trioflow.current_step().add_usage(tokens=2, calls=1)
        return "fast"

    @flow.step
    async def bad(fast: str) -> str:
        await trio.sleep(1)
        raise ValueError("bad")

    @flow.step
    async def child(bad: str) -> str:
        return "never"

    @flow.step
    async def join(slow: str, fast: str) -> str:
        return slow + fast

    return flow


@pytest.mark.trio
async def test_steps_and_outputs_are_in_declaration_order(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("f")

    def make(name: str, seconds: float) -> Any:
        async def step() -> str:
            await trio.sleep(seconds)
            return name

        return step

    for name, seconds in [("c", 3), ("a", 1), ("b", 2)]:
        flow.add(make(name, seconds), name=name)

    result = await flow.run()
    assert list(result.steps) == ["c", "a", "b"]
    assert list(result.outputs) == ["c", "a", "b"]
    assert list(result) == ["c", "a", "b"]
    assert [result.steps[n].finished_at for n in result.steps] == [3.0, 1.0, 2.0]


@pytest.mark.trio
async def test_completion_order_does_not_change_the_order(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(FlowError) as info:
        await _flow().run(error_handling="continue")
    result = info.value.result
    # fast finishes before slow, but steps keep declaration order
    assert list(result.steps) == ["slow", "fast", "bad", "child", "join"]
    assert list(result.outputs) == ["slow", "fast", "join"]
    assert dict(result.outputs) == {"slow": "slow", "fast": "fast", "join": "slowfast"}


@pytest.mark.trio
async def test_run_result_summary(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(FlowError) as info:
        await _flow().run(error_handling="continue", run_id="r1")
    result = info.value.result
    assert isinstance(result, RunResult)
    assert result.flow == "f"
    assert result.run_id == "r1"
    assert not result.ok
    assert result.failed == ["bad"]
    assert result.skipped == ["child"]
    assert result.cancelled == []
    assert (result.started_at, result.finished_at, result.duration) == (0.0, 3.0, 3.0)
    assert dict(result.usage) == {"tokens": 7, "calls": 1}
    assert len(result) == 3
    assert "join" in result
    assert "bad" not in result
    assert "nope" not in result
    assert 3 not in result


@pytest.mark.trio
async def test_step_results(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(FlowError) as info:
        await _flow().run(error_handling="continue")
    steps = info.value.result.steps
    assert steps["fast"] == StepResult(
        name="fast",
        status=StepStatus.SUCCEEDED,
        value="fast",
        error=None,
        attempts=1,
        started_at=0.0,
        finished_at=1.0,
        usage={"tokens": 2, "calls": 1},
    )
    assert steps["fast"].duration == 1.0
    assert steps["fast"].ok
    bad = steps["bad"]
    assert (bad.status, bad.value, bad.attempts, bad.started_at, bad.finished_at, bad.duration) == (
        StepStatus.FAILED,
        None,
        1,
        1.0,
        2.0,
        1.0,
    )
    assert isinstance(bad.error, ValueError)
    assert not bad.ok
    child = steps["child"]
    assert (child.status, child.value, child.error, child.attempts) == (StepStatus.SKIPPED, None, None, 0)
    assert (child.started_at, child.finished_at, child.duration) == (None, None, None)
    assert dict(child.usage) == {}


@pytest.mark.trio
async def test_getitem_raises_key_error_naming_the_status(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(FlowError) as info:
        await _flow().run(error_handling="continue")
    result = info.value.result
    assert result["join"] == "slowfast"
    with pytest.raises(KeyError) as exc:
        result["bad"]
    assert exc.value.args == ("step 'bad' has no output: its status is 'failed'",)
    with pytest.raises(KeyError) as exc:
        result["child"]
    assert exc.value.args == ("step 'child' has no output: its status is 'skipped'",)
    with pytest.raises(KeyError) as exc:
        result["nope"]
    assert exc.value.args == ("flow 'f' has no step named 'nope'",)


@pytest.mark.trio
async def test_getitem_on_a_cancelled_step(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(FlowError) as info:
        await _flow().run()
    result = info.value.result
    assert result.cancelled == ["slow", "child", "join"]
    with pytest.raises(KeyError) as exc:
        result["slow"]
    assert exc.value.args == ("step 'slow' has no output: its status is 'cancelled'",)
    assert result.steps["slow"].finished_at is None
    assert result.steps["slow"].duration is None
    assert result.steps["slow"].started_at == 0.0


def test_results_are_read_only() -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> int:
        trioflow.current_step().add_usage(n=1)
        return 1

    result = trio.run(flow.run)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.flow = "g"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.steps["a"].value = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.steps["b"] = result.steps["a"]  # type: ignore[index]
    with pytest.raises(TypeError):
        result.outputs["a"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        result.steps["a"].usage["n"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        result.usage["n"] = 2  # type: ignore[index]


def test_step_results_are_made_once_and_kept() -> None:
    flow = Flow("f")
    kept: list[trioflow.StepContext] = []

    @flow.step
    async def a() -> int:
        kept.append(trioflow.current_step())
        trioflow.current_step().add_usage(n=1)
        return 1

    @flow.step
    async def b(a: int) -> int:
        return a + 1

    result = trio.run(flow.run)
    kept[0].add_usage(n=5)  # after the run: changes nothing in its result
    assert result.steps["a"] is result.steps["a"]
    assert dict(result.steps["a"].usage) == {"n": 1}
    assert dict(result.usage) == {"n": 1}
    assert list(result.steps) == ["a", "b"]
    assert len(result.steps) == 2
    assert "b" in result.steps
    assert "c" not in result.steps
    assert 1 not in result.steps
    assert result.steps.get("c") is None
    assert dict(result.steps) == {"a": result.steps["a"], "b": result.steps["b"]}
    assert repr(result.steps) == repr(dict(result.steps))
    with pytest.raises(KeyError, match="'c'") as info:
        result.steps["c"]
    assert info.value.__context__ is None  # one plain KeyError, as from a dict
    assert result == attrs.evolve(result)


def test_a_result_does_not_keep_a_map_steps_items_alive() -> None:
    class Item:
        pass

    items = [Item() for _ in range(3)]
    refs = [weakref.ref(item) for item in items]
    flow = Flow("f")

    @flow.step(map_over="items")
    async def size(items: Item) -> int:
        return 1

    result = trio.run(flow.run, {"items": iter(items)})
    del items
    gc.collect()
    assert result["size"] == [1, 1, 1]
    assert [ref() for ref in refs] == [None, None, None]


def test_ok_run() -> None:
    flow = Flow("f")

    @flow.step
    async def a() -> int:
        return 1

    result: Any = trio.run(flow.run)
    assert result.ok
    assert result.failed == result.skipped == result.cancelled == []
    assert dict(result) == {"a": 1}
    assert result.run_id is None
    assert dict(result.usage) == {}


def test_the_repr_of_a_big_result_counts_its_steps() -> None:
    # issue 16: asyncio.run() makes a repr of the value it returns (restoring the
    # SIGINT handler), so listing 100k steps cost more than running them
    flow = trioflow.Flow("wide")

    async def noop() -> None:
        return None

    for i in range(500):
        flow.add(noop, name=f"s{i}")
    result = trio.run(flow.run)
    assert repr(result) == (
        f"RunResult(flow='wide', steps=<500 steps>, started_at={result.started_at!r}, "
        f"finished_at={result.finished_at!r}, run_id=None)"
    )
    one = trioflow.Flow("one")
    one.add(noop, name="a")
    small = trio.run(one.run)
    assert repr(small) == (
        f"RunResult(flow='one', steps={dict(small.steps)!r}, started_at={small.started_at!r}, "
        f"finished_at={small.finished_at!r}, run_id=None)"
    )


def _compared_flow(bad_item: int) -> Flow:
    """Succeeded, failed, skipped and mapped steps, with usage: every field of a step result."""
    flow = Flow("compared")

    @flow.step
    async def load() -> list[int]:
        trioflow.current_step().add_usage(tokens=3)
        await trio.sleep(1)
        return [1, 2, 3]

    @flow.step(map_over="load")
    async def square(load: int) -> int:
        await trio.sleep(load)
        if load == bad_item:
            raise ValueError(load)
        return load * load

    @flow.step
    async def total(square: list[int]) -> int:
        return sum(square)

    @flow.step
    async def side() -> str:
        await trio.sleep(0.5)
        return "side"

    return flow


def _run(flow: Flow) -> RunResult:
    async def main() -> RunResult:
        try:
            return await flow.run(error_handling="continue")
        except FlowError as err:
            return err.result

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("bad_item", [1, 3, 5])
def test_the_fields_runs_compare_by_are_their_step_results_fields(bad_item: int) -> None:
    # a succeeded plain step's fields are read in one call (_step_fields_at): they are
    # its result's fields, in order, as every other step's are
    steps = _run(_compared_flow(bad_item)).steps
    for name, i in steps._index.items():
        made = steps[name]
        fields = steps._fields(i)  # type: ignore[misc]
        assert fields[:9] == attrs.astuple(made, recurse=False)[:9], name
        assert len(fields[9]) == len(made.items)


@pytest.mark.parametrize("bad_item", [1, 3])
def test_two_runs_compare_as_their_step_results_do(bad_item: int) -> None:
    # two runs' steps compare without making their results (check_deterministic
    # compares each run with the first): the answer is the one their results give
    a, b = _run(_compared_flow(bad_item)), _run(_compared_flow(bad_item))
    same = _run(_compared_flow(5))
    assert (same == _run(_compared_flow(5))) is True
    assert (a == b) is (dict(a.steps) == dict(b.steps))  # (errors differ: distinct exceptions)
    assert (a.steps == same.steps) is False
    assert (dict(a.steps) == dict(same.steps)) is False
    loaded = trioflow._results.LazySteps.of(dict(same.steps))
    assert same.steps == loaded  # (a mapping without fields: compared through its results)
    assert loaded == _run(_compared_flow(5)).steps
    with pytest.raises(TypeError, match="unhashable"):
        hash(same.steps)
