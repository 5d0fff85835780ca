"""trioflow.testing.strategies: schedules, seeds, and random flows with their expectations."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import trioflow
from trioflow.testing import run_deterministic
from trioflow.testing._model import _list_schedule
from trioflow.testing.strategies import FlowCase, StepModel, flows, schedules, seeds

FEW = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_schedules_shrink_toward_fifo() -> None:
    assert find(schedules(), lambda s: True, settings=settings(database=None)) == []
    smallest = find(schedules(), lambda s: sum(s) >= 5, settings=settings(database=None))
    assert sum(smallest) == 5
    assert len(smallest) == 1


@FEW
@given(schedules(max_size=5, max_value=3), seeds())
def test_schedules_and_seeds_are_in_range(schedule: list[int], seed: int) -> None:
    assert len(schedule) <= 5
    assert all(0 <= d <= 3 for d in schedule)
    assert 0 <= seed < 2**32


@FEW
@given(flows())
def test_a_case_survives_a_json_round_trip(case: FlowCase) -> None:
    again = FlowCase.from_json(json.loads(json.dumps(case.to_json())))
    assert again.models == case.models
    assert again.inputs == case.inputs
    assert again.sequential() == case.sequential()
    assert again.critical_path == case.critical_path


@FEW
@given(flows(min_failing=2, max_steps=4))
def test_min_failing_forces_failing_plain_steps(case: FlowCase) -> None:
    failing = [m for m in case.models if m.fails]
    assert len(failing) >= 2
    assert all(m.map_over is None for m in failing)


def test_min_failing_above_max_steps_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"flows\(min_failing=9\) must be between 0 and max_steps=8"
    ):
        find(flows(min_failing=9), lambda case: True, settings=settings(database=None))


@FEW
@given(flows(failures=False, retries=False))
def test_without_failures_every_step_succeeds_once(case: FlowCase) -> None:
    expected = case.sequential()
    assert all(r[0] == "succeeded" for r in expected.values())
    result = run_deterministic(case.run).value
    assert case.summary(result) == expected


def test_expectations_of_a_hand_written_case() -> None:
    models = [
        StepModel(name="s0", durations=(1.0,), length=2),
        StepModel(name="s1", deps=("s0",), map_over="s0", durations=(2.0, 0.5), max_concurrent=1),
        StepModel(
            name="s2",
            after=("s0",),
            durations=(1.5,),
            fail_times=1,
            max_attempts=2,
            wait=0.5,
            tokens=3,
        ),
        StepModel(name="s3", deps=("s2",), durations=(0.0,), fail_times=5, max_attempts=1),
        StepModel(name="s4", deps=("s3", "items"), durations=(0.0,)),
    ]
    case = FlowCase.build(models, [1, 2], {})
    expected = case.sequential()
    assert expected["s1"][0] == "succeeded"
    assert expected["s2"][:3] == ("succeeded", expected["s2"][1], 2)
    assert expected["s2"][3] == {"calls": 2, "tokens": 6}
    assert expected["s3"][0] == "failed"
    assert expected["s4"] == ("skipped", None, 0, {})
    assert case.failing == {"s3"}
    assert case.descendants("s0") == {"s1", "s2", "s3", "s4"}
    # s1: two items one at a time, 2.0 + 0.5; s2: 1.5, wait 0.5, 1.5
    assert case.finish_times() == {"s0": 1.0, "s1": 3.5, "s2": 4.5, "s3": 4.5}
    assert case.critical_path == 4.5
    assert case.total_work == 1.0 + 2.5 + 3.5 + 0.0

    async def main() -> trioflow.RunResult:
        return await case.run_settled(error_handling="continue")

    result = run_deterministic(main).value
    assert case.summary(result) == expected
    assert result.duration == 4.5
    assert {n: s.finished_at for n, s in result.steps.items() if s.finished_at is not None} == {
        "s0": 1.0,
        "s1": 3.5,
        "s2": 4.5,
        "s3": 4.5,
    }


def test_list_schedule() -> None:
    assert _list_schedule([], 2) == 0.0
    assert _list_schedule([1, 2, 3], None) == 3
    assert _list_schedule([2, 1, 1, 1], 2) == 3
    assert _list_schedule([1, 1, 1], 1) == 3


def test_steps_sleep_through_trio_or_anyio_in_virtual_time() -> None:
    for use_anyio in (False, True):
        case = FlowCase.build(
            [StepModel(name="s0", durations=(2.5,), use_anyio=use_anyio, checkpoints=2)], [], {}
        )
        assert run_deterministic(case.run).virtual_time == 2.5


def test_observations_count_in_flight_and_cancellations() -> None:
    case = FlowCase.build(
        [
            StepModel(name="s0", durations=(1.0,), fail_times=1),
            StepModel(name="s1", durations=(3.0,)),
        ],
        [],
        {},
    )

    async def main() -> None:
        with pytest.raises(trioflow.FlowError):
            await case.run()

    run_deterministic(main)
    obs = case.observations
    assert obs.max_in_flight["*"] == 2
    assert obs.entered == obs.exited == 2
    assert obs.cancelled == {("s1", None)}


@FEW
@given(st.data())
def test_generated_functions_have_real_signatures(data: st.DataObject) -> None:
    import inspect

    case = data.draw(flows())
    for model, name in zip(case.models, case.flow.steps, strict=True):
        assert model.name == name
    fn_params = [list(inspect.signature(s.spec.fn).parameters) for s in case.flow.plan().nodes]
    assert fn_params == [list(m.deps) for m in case.models]
