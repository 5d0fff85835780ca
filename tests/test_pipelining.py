"""Item-level pipelining of a map step over another map step (issue 13 item 3).

Exact timings on trio in virtual time; results and statuses on both backends,
compared with the same flow run without pipelining (``max_concurrent=1`` gives
the unpipelined order, and the rules say results must not differ).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, StepStatus


def _two_stage(up_seconds: dict[int, float], down_seconds: float = 1.0, fail_up: tuple[int, ...] = (),
               fail_down: tuple[int, ...] = ()) -> tuple[Flow, list[tuple[str, int, float]]]:
    flow = Flow("pipe")
    log: list[tuple[str, int, float]] = []

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        log.append(("up", items, anyio.current_time()))
        await anyio.sleep(up_seconds[items])
        if items in fail_up:
            raise ValueError(f"up {items}")
        return items * 10

    @flow.step(map_over="up")
    async def down(up: int) -> int:
        log.append(("down", up // 10, anyio.current_time()))
        await anyio.sleep(down_seconds)
        if up // 10 in fail_down:
            raise ValueError(f"down {up // 10}")
        return up + 1

    return flow, log


@pytest.mark.trio
async def test_downstream_items_start_when_their_upstream_item_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0, 2: 1.0})
    result = await flow.run({"items": [0, 1, 2]})
    assert result["down"] == [1, 11, 21]
    starts = {(stage, i): t for stage, i, t in log}
    assert (starts[("down", 1)], starts[("down", 2)], starts[("down", 0)]) == (1.0, 1.0, 3.0)
    assert result.duration == 4.0
    assert result.steps["down"].started_at == 1.0
    assert result.steps["down"].finished_at == 4.0


@pytest.mark.trio
async def test_pipelining_waits_for_the_other_dependencies(autojump_clock: trio.testing.MockClock) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0, 2: 1.0})

    @flow.step
    async def config() -> str:
        await trio.sleep(2)
        return "cfg"

    @flow.step(map_over="up")
    async def tagged(up: int, config: str) -> str:
        log.append(("tagged", up // 10, trio.current_time()))
        await trio.sleep(1)
        return f"{config}{up}"

    result = await flow.run({"items": [0, 1, 2]})
    assert result["tagged"] == ["cfg0", "cfg10", "cfg20"]
    starts = {(stage, i): t for stage, i, t in log}
    # items 1 and 2 of `up` are done at 1.0, config at 2.0: they start then; item 0 at 3.0
    assert [starts[("tagged", i)] for i in range(3)] == [3.0, 2.0, 2.0]


@pytest.mark.trio
async def test_a_chain_of_three_map_steps_pipelines_through(autojump_clock: trio.testing.MockClock) -> None:
    flow, log = _two_stage({0: 3.0, 1: 1.0})

    @flow.step(map_over="down")
    async def third(down: int) -> int:
        log.append(("third", down // 10, trio.current_time()))
        await trio.sleep(1)
        return down

    result = await flow.run({"items": [0, 1]})
    assert result["third"] == [1, 11]
    starts = {(stage, i): t for stage, i, t in log}
    assert (starts[("third", 1)], starts[("third", 0)]) == (2.0, 4.0)
    assert result.duration == 5.0


@pytest.mark.anyio
async def test_outputs_and_statuses_equal_the_unpipelined_rules(anyio_backend: Any) -> None:
    for fail_up, fail_down in [((), ()), ((1,), ()), ((), (2,)), ((0,), (2,))]:
        seen = []
        for max_concurrent in (None, 1, 2):
            flow, log = _two_stage({0: 0.003, 1: 0.001, 2: 0.002}, 0.001, fail_up, fail_down)
            try:
                result = await flow.run({"items": [0, 1, 2]}, error_handling="continue",
                                        max_concurrent=max_concurrent)
            except FlowError as exc:
                result = exc.result
            ran_down = sorted(i for stage, i, _ in log if stage == "down")
            assert not set(ran_down) & set(fail_up)  # no item runs whose upstream item failed
            seen.append({n: (s.status, s.value) for n, s in result.steps.items()})
        assert seen[0] == seen[1] == seen[2]


@pytest.mark.trio
async def test_under_continue_started_items_finish_when_upstream_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 5.0, 1: 1.0, 2: 1.0}, down_seconds=2.0, fail_up=(0,))
    with pytest.raises(FlowError) as info:
        await flow.run({"items": [0, 1, 2]}, error_handling="continue")
    steps = info.value.result.steps
    assert steps["up"].status is StepStatus.FAILED
    assert steps["down"].status is StepStatus.SKIPPED
    assert steps["down"].skip_reason == "dependency"
    assert steps["down"].attempts == 1  # the largest over the items that ran
    # items 1 and 2 started at 1.0 and ran to completion (at 3.0), item 0 never ran
    assert sorted((s, i) for s, i, _ in log if s == "down") == [("down", 1), ("down", 2)]
    assert info.value.result.duration == 5.0


@pytest.mark.trio
async def test_under_fail_fast_an_upstream_failure_cancels_started_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flow, log = _two_stage({0: 2.0, 1: 1.0}, down_seconds=5.0, fail_up=(0,))
    with pytest.raises(FlowError) as info:
        await flow.run({"items": [0, 1]})
    steps = info.value.result.steps
    assert (steps["up"].status, steps["down"].status) == (StepStatus.FAILED, StepStatus.CANCELLED)
    assert info.value.result.duration == 2.0
    assert ("down", 1, 1.0) in log  # started early, then cancelled by the failure at 2.0


@pytest.mark.trio
async def test_pipelined_items_respect_the_map_steps_own_limit(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("lim")
    running = [0]
    peak = [0]

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        await trio.sleep(items)
        return items

    @flow.step(map_over="up", max_concurrent=1)
    async def down(up: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await trio.sleep(3)
        running[0] -= 1
        return up

    result = await flow.run({"items": [1, 1, 1]})
    assert result["down"] == [1, 1, 1]
    assert peak[0] == 1
    assert result.duration == 10.0


@pytest.mark.trio
async def test_pipelining_with_a_store_resumes_recorded_items(autojump_clock: trio.testing.MockClock) -> None:
    store = trioflow.MemoryStore()
    calls: list[tuple[str, int]] = []
    flaky = {"fail": True}
    flow = Flow("resume")

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        calls.append(("up", items))
        await trio.sleep(items)
        return items

    @flow.step(map_over="up")
    async def down(up: int) -> int:
        calls.append(("down", up))
        if up == 3 and flaky["fail"]:
            raise RuntimeError("once")
        return up * 2

    with pytest.raises(FlowError):
        await flow.run({"items": [1, 2, 3]}, store=store, run_id="r", error_handling="continue")
    flaky["fail"] = False
    calls.clear()
    result = await flow.run({"items": [1, 2, 3]}, store=store, run_id="r")
    assert result["down"] == [2, 4, 6]
    assert calls == [("down", 3)]


@pytest.mark.trio
@pytest.mark.parametrize("items", [[], [1, 2, 3]])
async def test_a_pipelined_map_step_announces_its_items(
    autojump_clock: trio.testing.MockClock, items: list[int]
) -> None:
    # a pipelined map step sends MapStarted too (with none it looked cancelled to
    # Timeline.from_events when it had no items, found by the fuzz suite)
    flow, _log = _two_stage({i: 1.0 for i in items})
    events: list[trioflow.Event] = []
    result = await flow.run({"items": items}, on_event=events.append)
    started = [(e.step, e.items) for e in events if isinstance(e, trioflow.MapStarted)]
    assert sorted(started) == [("down", len(items)), ("up", len(items))]
    assert trioflow.Timeline.from_events(events, flow=flow).statuses == result.timeline().statuses


# -- pipelining in flows with conditions (issue 13 items 3 and 4) ----------------------------


def _routed(log: list[tuple[str, int, float]], scale: float, *, gate: str, route_seconds: float = 0.5,
            fail_up: tuple[int, ...] = (), asked: list[float] | None = None, whole: bool = False) -> Flow:
    """`up` (items 0, 1, 2 take 3, 1, 1 units) -> `down` over `up`, and a `route` step
    (done at 0.5) that `down`'s condition reads, per ``gate``:

    * ``"own"``: ``down`` has ``when=lambda route: route == "go"``;
    * ``"own-no"``: the same with a route that says no;
    * ``"source"``: ``when=lambda up: len(up) == 3`` (reads the whole list);
    * ``"raises"``: the condition raises;
    * ``"optional"``: no condition on ``down``, but an optional dependency on
      ``maybe``, a step skipped by its own condition at 0.5;
    * ``"elsewhere"``: another step of the flow has a condition; ``down`` has none.

    ``asked``: the times ``down``'s condition is called are appended to it.
    ``whole``: ``down`` maps over a plain step ``whole`` that passes ``up``'s list
    on, so it gets the whole list (no pipelining), with the same priorities.
    """
    flow = Flow("routed")
    seconds = {0: 3.0, 1: 1.0, 2: 1.0}

    @flow.step
    async def route() -> str:
        await anyio.sleep(route_seconds * scale)
        return "no" if gate == "own-no" else "go"

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        log.append(("up", items, anyio.current_time()))
        await anyio.sleep(seconds[items] * scale)
        if items in fail_up:
            raise ValueError(f"up {items}")
        return items * 10

    def boom(route: str) -> bool:
        raise KeyError(route)

    def own(route: str) -> bool:
        if asked is not None:
            asked.append(anyio.current_time())
        return route == "go"

    when: Any = {
        "own": own,
        "own-no": own,
        "source": lambda up: len(up) == 3,
        "raises": boom,
    }.get(gate)

    @flow.step(when=lambda route: route != "go")
    async def maybe(route: str) -> str:
        return "never"

    if gate == "optional":

        async def down_fn(up: int, maybe: str | None = None) -> int:
            log.append(("down", up // 10, anyio.current_time()))
            await anyio.sleep(1 * scale)
            return up + 1 if maybe is None else -1

    else:

        async def down_fn(up: int) -> int:  # type: ignore[misc]
            log.append(("down", up // 10, anyio.current_time()))
            await anyio.sleep(1 * scale)
            return up + 1

    if whole:
        flow.add(_collect, name="whole", cost=0.0)
        flow.add(down_fn, name="down", map_over="whole", bind={"up": "whole"}, when=when)
    else:
        flow.add(down_fn, name="down", map_over="up", when=when)
    return flow


def _outcome(result: trioflow.RunResult) -> dict[str, Any]:
    return {
        name: (s.status, s.value, s.attempts, s.skip_reason,
               tuple((i.status, i.value, i.attempts) for i in s.items))
        for name, s in result.steps.items()
    }


async def _settled(flow: Flow, **options: Any) -> trioflow.RunResult:
    try:
        return await flow.run({"items": [0, 1, 2]}, **options)
    except FlowError as exc:
        return exc.result


async def _collect(up: list[int]) -> list[int]:
    return up


@pytest.mark.anyio
@pytest.mark.parametrize("gate", ["own", "optional", "elsewhere"])
async def test_a_condition_that_holds_keeps_the_pipe(anyio_backend: Any, gate: str) -> None:
    on_trio = anyio_backend[0] == "trio"
    log: list[tuple[str, int, float]] = []
    flow = _routed(log, 1.0 if on_trio else 0.001, gate=gate)
    result = await flow.run({"items": [0, 1, 2]})
    assert result["down"] == [1, 11, 21]
    assert result.steps["maybe"].skip_reason == "condition"
    assert [i.status for i in result.steps["down"].items] == [StepStatus.SUCCEEDED] * 3
    if on_trio:
        starts = {(stage, i): t for stage, i, t in log}
        # route is done at 0.5: items 1 and 2 of `down` start as their upstream items end
        assert [starts[("down", i)] for i in range(3)] == [3.0, 1.0, 1.0]
        assert result.duration == 4.0


@pytest.mark.trio
async def test_the_condition_is_asked_once_all_it_names_has_ended(autojump_clock: trio.testing.MockClock) -> None:
    # `route` ends at 2.0, after items 1 and 2 of `up` (at 1.0): they start at 2.0
    log: list[tuple[str, int, float]] = []
    asked: list[float] = []
    flow = _routed(log, 1.0, gate="own", route_seconds=2.0, asked=asked)
    result = await flow.run({"items": [0, 1, 2]})
    assert result["down"] == [1, 11, 21]
    assert asked == [2.0]  # once, when `route` ended (not again when `up` ended)
    starts = {(stage, i): t for stage, i, t in log}
    assert [starts[("down", i)] for i in range(3)] == [3.0, 2.0, 2.0]


@pytest.mark.anyio
@pytest.mark.parametrize("gate", ["own-no", "source", "raises"])
async def test_a_condition_that_does_not_hold_or_reads_the_whole_list_starts_no_item_early(
    anyio_backend: Any, gate: str
) -> None:
    on_trio = anyio_backend[0] == "trio"
    log: list[tuple[str, int, float]] = []
    flow = _routed(log, 1.0 if on_trio else 0.001, gate=gate)
    result = await _settled(flow)
    down = result.steps["down"]
    if gate == "own-no":
        assert (down.status, down.skip_reason, down.items) == (StepStatus.SKIPPED, "condition", ())
        assert not [entry for entry in log if entry[0] == "down"]
    elif gate == "raises":
        assert down.status is StepStatus.FAILED
        assert isinstance(down.error, KeyError)
        assert down.items == ()
        assert not [entry for entry in log if entry[0] == "down"]
        if on_trio:
            assert down.finished_at == 3.0  # when `down` was ready, as without pipelining
    else:  # the condition reads the whole list: `down` waits for it
        assert result["down"] == [1, 11, 21]
        if on_trio:
            assert [t for stage, _, t in log if stage == "down"] == [3.0, 3.0, 3.0]


@pytest.mark.anyio
@pytest.mark.parametrize("gate", ["own", "own-no", "source", "raises", "optional", "elsewhere"])
@pytest.mark.parametrize("fail_up", [(), (0,), (1,)])
@pytest.mark.parametrize("error_handling", ["continue", "fail_fast"])
@pytest.mark.parametrize("max_concurrent", [None, 1])
async def test_pipelined_results_equal_the_unpipelined_ones_in_flows_with_conditions(
    anyio_backend: Any, gate: str, fail_up: tuple[int, ...], error_handling: str, max_concurrent: int | None
) -> None:
    # outputs, statuses, attempts, skip reasons and per-item results equal those of
    # the same flow with `down` fed the whole list, but where the rules say
    # otherwise: items of `down` that ran early stay in its items
    scale = 1.0 if anyio_backend[0] == "trio" else 0.001
    log: list[tuple[str, int, float]] = []
    flow = _routed(log, scale, gate=gate, fail_up=fail_up)
    piped = _outcome(await _settled(flow, error_handling=error_handling, max_concurrent=max_concurrent))
    unpiped = _routed([], scale, gate=gate, fail_up=fail_up, whole=True)
    plain = _outcome(await _settled(unpiped, error_handling=error_handling, max_concurrent=max_concurrent))
    plain.pop("whole")
    ran_early = [i for stage, i, _ in log if stage == "down"]
    assert not set(ran_early) & set(fail_up)  # no item runs whose upstream item failed
    if fail_up and error_handling == "continue" and ran_early:
        # `up` failed as a whole: `down` is skipped, and keeps the items that ran
        status, value, attempts, reason, items = piped.pop("down")
        assert (status, value, attempts, reason) == (StepStatus.SKIPPED, None, 1, "dependency")
        assert [i for i, item in enumerate(items) if item[0] is StepStatus.SUCCEEDED] == sorted(ran_early)
        plain.pop("down")
    elif fail_up and error_handling == "fail_fast":
        # cancelled when `up` failed; items started early were cancelled (or had
        # succeeded), and count in its attempts
        status, value, _attempts, reason, _items = piped.pop("down")
        assert (status, value, reason) == (*plain.pop("down")[:2], None)
        assert status is StepStatus.CANCELLED
        if max_concurrent == 1 or anyio_backend == "asyncio":
            # fail-fast statuses depend on what had ended when the failure came: with
            # one slot, the items that ran early took it, so that differs legitimately;
            # on asyncio's real clock, when the cancellation lands is up to the machine
            assert piped["up"][0] is plain["up"][0] is StepStatus.FAILED
            return
    assert piped == plain


@pytest.mark.trio
async def test_a_skip_by_a_condition_releases_the_items_already_done_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # `maybe` (an optional dependency of `down`) is skipped at 2.0, after items 1
    # and 2 of `up` ended (at 1.0): they start at 2.0, item 0 when it ends at 3.0
    log: list[tuple[str, int, float]] = []
    flow = _routed(log, 1.0, gate="optional", route_seconds=2.0)
    result = await flow.run({"items": [0, 1, 2]})
    assert result["down"] == [1, 11, 21]
    starts = {(stage, i): t for stage, i, t in log}
    assert [starts[("down", i)] for i in range(3)] == [3.0, 2.0, 2.0]


@pytest.mark.anyio
async def test_a_step_whose_condition_reads_the_whole_list_is_not_pipelined_beside_one_that_is(
    anyio_backend: Any,
) -> None:
    # `up` pipes to `each` but not to `whole`, whose condition reads the whole list:
    # when `route` ends (at 2.0, after items 1 and 2 of `up`), `whole` is left
    # waiting for `up` alone, and must still wait for the whole list (it asked the
    # condition with no list, and failed, found by the timeline fuzz property)
    on_trio = anyio_backend[0] == "trio"
    scale = 1.0 if on_trio else 0.001
    log: list[tuple[str, int, float]] = []
    flow = Flow("two")

    @flow.step(map_over="items")
    async def up(items: int) -> int:
        await anyio.sleep({0: 3.0, 1: 1.0, 2: 1.0}[items] * scale)
        return items

    @flow.step
    async def route() -> str:
        await anyio.sleep(2.0 * scale)
        return "go"

    @flow.step(map_over="up")
    async def each(up: int) -> int:
        log.append(("each", up, anyio.current_time()))
        return up

    @flow.step(map_over="up", when=lambda up: len(up) == 3)
    async def whole(up: int, route: str) -> int:
        log.append(("whole", up, anyio.current_time()))
        return up

    result = await flow.run({"items": [0, 1, 2]})
    assert (result["each"], result["whole"]) == ([0, 1, 2], [0, 1, 2])
    if on_trio:
        assert sorted((s, i, t) for s, i, t in log) == [
            ("each", 0, 3.0), ("each", 1, 1.0), ("each", 2, 1.0),
            ("whole", 0, 3.0), ("whole", 1, 3.0), ("whole", 2, 3.0),
        ]
