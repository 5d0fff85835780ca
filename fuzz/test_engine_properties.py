"""The engine's properties over random flows and random schedules (``nox -s fuzz``).

The number of examples comes from the Hypothesis profile that
``fuzz/conftest.py`` loads. The checks live in ``engine_properties.py``.
"""

from __future__ import annotations

import engine_properties as props
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trioflow.testing.strategies import FlowCase, flows, schedules, seeds

capacities = st.sampled_from([1, 2, 3, None])


@given(flows(), schedules(), capacities, st.booleans())
def test_matches_sequential(
    case: FlowCase, schedule: list[int], m: int | None, unlimited: bool
) -> None:
    props.check_matches_sequential(case, schedule, m, unlimited)


@given(flows(waits=False, timeouts=False), capacities)
def test_asyncio_matches_sequential(case: FlowCase, m: int | None) -> None:
    props.check_asyncio_matches_sequential(case, m)


@given(flows(max_steps=5), st.lists(seeds(), min_size=1, max_size=4, unique=True), capacities)
def test_same_under_seeds(case: FlowCase, seed_list: list[int], m: int | None) -> None:
    props.check_same_under_seeds(case, seed_list, m)


@settings(max_examples=max(5, settings.default.max_examples // 15))
@given(flows())
def test_hundred_schedules(case: FlowCase) -> None:
    props.check_hundred_schedules(case, runs=100)


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


@given(flows(), schedules(), capacities)
def test_timeline(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_timeline(case, schedule, m)


@given(flows(), schedules())
def test_critical_path(case: FlowCase, schedule: list[int]) -> None:
    props.check_critical_path(case, schedule)


@given(flows(map_limits=False), schedules(), st.integers(1, 3))
def test_graham_bound(case: FlowCase, schedule: list[int], m: int) -> None:
    props.check_graham_bound(case, schedule, m)


@given(flows(), schedules(), capacities)
def test_limits(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_limits(case, schedule, m)


@given(flows(min_failing=1), schedules())
def test_fail_fast(case: FlowCase, schedule: list[int]) -> None:
    props.check_fail_fast(case, schedule)


@given(flows(), schedules(), st.integers(0, 8).map(lambda k: k / 2 + 0.125))
def test_outside_cancellation(case: FlowCase, schedule: list[int], deadline: float) -> None:
    props.check_outside_cancellation(case, schedule, deadline)


@given(flows(), schedules(), capacities)
def test_continue_skips_descendants(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_continue_skips_descendants(case, schedule, m)


@given(flows(failures=False), schedules(), capacities)
def test_isolation(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_isolation(case, schedule, m)


# -- issue 13: rate limits, keyed limits, conditions, pipelining ----------------------------


@given(flows(rate_limits=True, keyed=True, conditions=True), schedules(), capacities)
def test_gated_matches_sequential(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_gated_matches_sequential(case, schedule, m)


@given(flows(keyed=True), schedules(), capacities)
def test_keyed_limits(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_keyed_limits(case, schedule, m)


@given(flows(rate_limits=True), schedules(), capacities)
def test_token_starts(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_token_starts(case, schedule, m)


@given(flows(conditions=True), schedules())
def test_conditional_critical_path(case: FlowCase, schedule: list[int]) -> None:
    props.check_conditional_critical_path(case, schedule)


@given(flows(conditions=True, rate_limits=True, keyed=True), schedules(), capacities)
def test_pipelined_details(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_pipelined_details(case, schedule, m)


@given(flows(min_failing=1, conditions=True), schedules())
def test_fail_fast_with_conditions(case: FlowCase, schedule: list[int]) -> None:
    assume(case.failing)  # (a condition may skip every step drawn to fail)
    props.check_fail_fast(case, schedule)


@given(flows(conditions=True, keyed=True), schedules(), capacities)
def test_timeline_with_conditions(case: FlowCase, schedule: list[int], m: int | None) -> None:
    props.check_timeline(case, schedule, m)
