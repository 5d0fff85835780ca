"""A fast slice of the fuzz suite (``fuzz/``): the engine's properties on a few
dozen random flows and schedules each, derandomized so the default test run
is stable. ``nox -s fuzz`` runs the same checks on thousands of examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trioflow.testing.strategies import FlowCase, flows, schedules, seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import engine_properties as props

SLICE = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
capacities = st.sampled_from([1, 2, 3, None])


@SLICE
@given(flows(), schedules(), capacities, st.booleans())
def test_matches_sequential(
    case: FlowCase, schedule: list[int], m: int | None, unlimited: bool
) -> None:
    props.check_matches_sequential(case, schedule, m, unlimited)


@SLICE
@given(flows(waits=False, timeouts=False), capacities)
def test_asyncio_matches_sequential(case: FlowCase, m: int | None) -> None:
    props.check_asyncio_matches_sequential(case, m)


@SLICE
@given(flows(max_steps=5), st.lists(seeds(), min_size=1, max_size=3, unique=True), capacities)
def test_same_under_seeds(case: FlowCase, seed_list: list[int], m: int | None) -> None:
    props.check_same_under_seeds(case, seed_list, m)


@settings(SLICE, max_examples=5)
@given(flows())
def test_hundred_schedules(case: FlowCase) -> None:
    props.check_hundred_schedules(case, runs=100)


@SLICE
@given(
    flows(max_steps=4, failures=False, mutations=False),
    st.integers(1, 4),
    st.integers(1, 2),
    schedules(),
)
def test_nested_runs_share_a_limiter(
    inner: FlowCase, width: int, size: int, schedule: list[int]
) -> None:
    props.check_nested_runs_share_a_limiter(inner, width, size, schedule)


@SLICE
@given(flows(), schedules(), capacities)
def test_timeline(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_timeline(case, schedule, m)


@SLICE
@given(flows(), schedules())
def test_critical_path(case: FlowCase, schedule: list[int]) -> None:
    props.check_critical_path(case, schedule)


@SLICE
@given(flows(map_limits=False), schedules(), st.integers(1, 3))
def test_graham_bound(case: FlowCase, schedule: list[int], m: int) -> None:
    props.check_graham_bound(case, schedule, m)


@SLICE
@given(flows(), schedules(), capacities)
def test_limits(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_limits(case, schedule, m)


@SLICE
@given(flows(min_failing=1), schedules())
def test_fail_fast(case: FlowCase, schedule: list[int]) -> None:
    props.check_fail_fast(case, schedule)


@SLICE
@given(flows(), schedules(), st.integers(0, 8).map(lambda k: k / 2 + 0.125))
def test_outside_cancellation(case: FlowCase, schedule: list[int], deadline: float) -> None:
    props.check_outside_cancellation(case, schedule, deadline)


@SLICE
@given(flows(), schedules(), capacities)
def test_continue_skips_descendants(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_continue_skips_descendants(case, schedule, m)


@SLICE
@given(flows(failures=False), schedules(), capacities)
def test_isolation(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_isolation(case, schedule, m)


# -- issue 13: rate limits, keyed limits, conditions, pipelining ----------------------------

gated = flows(max_steps=6, rate_limits=True, keyed=True, conditions=True)


@SLICE
@given(gated, schedules(), capacities)
def test_gated_matches_sequential(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_gated_matches_sequential(case, schedule, m)


@SLICE
@given(flows(max_steps=6, keyed=True), schedules(), capacities)
def test_keyed_limits(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_keyed_limits(case, schedule, m)


@SLICE
@given(flows(max_steps=6, rate_limits=True), schedules(), capacities)
def test_token_starts(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_token_starts(case, schedule, m)


@SLICE
@given(flows(conditions=True), schedules())
def test_conditional_critical_path(case: FlowCase, schedule: list[int]) -> None:
    props.check_conditional_critical_path(case, schedule)


@SLICE
@given(flows(conditions=True, rate_limits=True, keyed=True), schedules(), capacities)
def test_pipelined_details(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_pipelined_details(case, schedule, m)


@SLICE
@given(flows(min_failing=1, conditions=True), schedules())
def test_fail_fast_with_conditions(case: FlowCase, schedule: list[int]) -> None:
    assume(case.failing)  # (a condition may skip every step drawn to fail)
    props.check_fail_fast(case, schedule)


@SLICE
@given(flows(conditions=True, keyed=True), schedules(), capacities)
def test_timeline_with_conditions(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_timeline(case, schedule, m)
