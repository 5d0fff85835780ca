"""The engine's properties, as plain functions over a drawn flow and schedule.

``fuzz/test_engine_properties.py`` runs them with many examples (``nox -s
fuzz``) and ``tests/test_testing_fuzz_slice.py`` with few (``nox -s tests``).
Each check runs the flow under :func:`trioflow.testing.run_deterministic`, so a
deadlock is a :class:`~trioflow.testing.DeadlockError`, not a hang.

A failing check saves the example, with its schedule, as JSON in
``fuzz/failures/<check>.json``; ``python fuzz/replay.py fuzz/failures/<check>.json``
runs it again. Hypothesis replays the shrunk example last, so the file ends
up holding the shrunk one.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import math
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import trio
import trio.lowlevel

import trioflow
from trioflow.testing import DeterministicRun, check_deterministic, run_deterministic
from trioflow.testing.strategies import FlowCase

FAILURES = Path(__file__).parent / "failures"

# A run gets at most this many task steps: generated flows need a few thousand.
MAX_STEPS = 200_000


@contextlib.contextmanager
def saved_on_failure(check: str, case: FlowCase, **params: Any) -> Iterator[None]:
    """Save the example as replayable JSON if the block raises."""
    try:
        yield
    except BaseException as exc:
        FAILURES.mkdir(exist_ok=True)
        record = {
            "check": check,
            "case": case.to_json(),
            "params": params,
            "error": "".join(traceback.format_exception_only(exc)).strip(),
        }
        (FAILURES / f"{check}.json").write_text(json.dumps(record, indent=1) + "\n")
        raise


def run(
    case: FlowCase, schedule: Sequence[int] = (), **options: Any
) -> DeterministicRun[trioflow.RunResult]:
    """Run *case* (settled: a ``FlowError`` gives its partial result) under *schedule*."""
    fn = functools.partial(case.run_settled, **options)
    return run_deterministic(fn, schedule=list(schedule), max_steps=MAX_STEPS)


# -- 1. determinism -------------------------------------------------------------------


def check_matches_sequential(
    case: FlowCase, schedule: Sequence[int], max_concurrent: int | None, unlimited: bool
) -> None:
    """Outputs, statuses, attempts and usage equal running the steps one by one.

    Under ``continue``, whatever the schedule, ``max_concurrent`` and limiter sizes.
    """
    limiters = case.unlimited_limiters() if unlimited else case.limiter_sizes
    with saved_on_failure(
        "matches_sequential",
        case,
        schedule=list(schedule),
        max_concurrent=max_concurrent,
        limiters=limiters,
        error_handling="continue",
    ):
        result = run(
            case,
            schedule,
            error_handling="continue",
            max_concurrent=max_concurrent,
            limiters=limiters,
        ).value
        assert case.summary(result) == case.sequential()


def check_same_under_seeds(
    case: FlowCase, seeds: Sequence[int], max_concurrent: int | None
) -> None:
    """The same run under several seeded schedules gives identical results, and the
    same timeline (every step's start and finish), also under limits: the harness's
    quiescent mode hands a slot freed at an instant where other units end too over
    to the most urgent unit, whichever ends first (docs/testing.rst, "Several steps
    ending at the same instant")."""
    unlimited = max_concurrent is None
    limiters = case.unlimited_limiters() if unlimited else case.limiter_sizes
    fn = functools.partial(
        case.run_settled,
        error_handling="continue",
        max_concurrent=max_concurrent,
        limiters=limiters,
    )
    first = run_deterministic(fn, schedule=[], max_steps=MAX_STEPS)
    for seed in seeds:
        with saved_on_failure(
            "same_under_seeds",
            case,
            schedule=[],
            seed=seed,
            max_concurrent=max_concurrent,
            limiters=limiters,
            error_handling="continue",
        ):
            other = run_deterministic(fn, seed=seed, max_steps=MAX_STEPS)
            assert case.summary(other.value) == case.summary(first.value)
            assert other.virtual_time == first.virtual_time
            assert _times(other.value) == _times(first.value)


def check_hundred_schedules(case: FlowCase, runs: int) -> None:
    """``check_deterministic`` over FIFO and ``runs - 1`` seeded schedules, unlimited capacity:
    identical outputs, statuses, attempts, usage and virtual end time, equal to one by one."""

    async def summary() -> dict[str, Any]:
        result = await case.run_settled(
            error_handling="continue", limiters=case.unlimited_limiters()
        )
        return case.summary(result)

    with saved_on_failure("hundred_schedules", case, runs=runs):
        common = check_deterministic(summary, runs=runs, max_steps=MAX_STEPS)
        assert common == case.sequential()


def _times(result: trioflow.RunResult) -> dict[str, tuple[float | None, float | None]]:
    return {n: (s.started_at, s.finished_at) for n, s in result.steps.items()}


def check_asyncio_matches_sequential(case: FlowCase, max_concurrent: int | None) -> None:
    """On asyncio (through anyio, real clock, sleeps scaled to zero) the results are the same.

    Interleavings on asyncio are not controlled: this checks the engine's
    backend-independent bookkeeping, not schedules. Draw *case* with
    ``waits=False, timeouts=False``: on a real clock a short timeout may fire
    at any await, which makes usage and timing legitimately vary.
    """
    case.time_scale = 0.0
    case.anyio_only = True
    run_it = functools.partial(
        case.run_settled, error_handling="continue", max_concurrent=max_concurrent
    )
    with saved_on_failure("asyncio_matches_sequential", case, max_concurrent=max_concurrent):
        result = anyio.run(run_it, backend="asyncio")
        assert case.summary(result) == case.sequential()


# -- 2. no deadlocks ---------------------------------------------------------------------


def check_nested_runs_share_a_limiter(
    inner: FlowCase, width: int, size: int, schedule: Sequence[int]
) -> None:
    """Steps that each run a nested flow, all on one shared limiter of *size*, never deadlock."""
    expected = {n: r[1] for n, r in inner.sequential().items() if r[0] == "succeeded"}

    async def main() -> list[dict[str, Any]]:
        shared = trio.CapacityLimiter(size)
        outer = trioflow.Flow("outer")
        for i in range(width):

            async def nested() -> dict[str, Any]:
                result = await inner.flow.run(
                    inner.inputs,
                    limiter=shared,
                    limiters=inner.unlimited_limiters(),
                    error_handling="continue",
                )
                return dict(result.outputs)

            outer.add(nested, name=f"n{i}")
        result = await outer.run(limiter=shared)
        return [result[f"n{i}"] for i in range(width)]

    with saved_on_failure(
        "nested_runs_share_a_limiter", inner, width=width, size=size, schedule=list(schedule)
    ):
        try:
            outputs = run_deterministic(main, schedule=list(schedule), max_steps=MAX_STEPS).value
        except trioflow.FlowError:
            assert inner.failing, "a nested run failed though no step of it fails"
            return
        assert outputs == [expected] * width


# -- 3. virtual time and limits ----------------------------------------------------------


def check_critical_path(case: FlowCase, schedule: Sequence[int]) -> None:
    """With unlimited capacity the run takes exactly the critical path; a step starts when
    its last dependency finishes."""
    with saved_on_failure("critical_path", case, schedule=list(schedule)):
        result = run(
            case, schedule, error_handling="continue", limiters=case.unlimited_limiters()
        ).value
        assert result.duration == case.critical_path
        finish = case.finish_times()
        assert {n: s.finished_at for n, s in result.steps.items() if n in finish} == finish


def check_timeline(case: FlowCase, schedule: Sequence[int], max_concurrent: int | None) -> None:
    """A run's timeline is the same drawn from its result or from its events (issue 12).

    Every attempt, retry wait and item bar at the same virtual times, the same
    statuses and critical path; a limiter's track never exceeds its size; the
    critical path ends when the run's last step ends, and each of its steps
    ends no later than the next one starts.
    """
    with saved_on_failure("timeline", case, schedule=list(schedule), max_concurrent=max_concurrent):
        events: list[Any] = []
        result = run(
            case, schedule, error_handling="continue", max_concurrent=max_concurrent, on_event=events.append
        ).value
        drawn = result.timeline()
        replayed = trioflow.Timeline.from_events(events, flow=case.flow)

        def bars(timeline: trioflow.Timeline) -> list[tuple[Any, ...]]:
            return sorted(
                (u.step, -1 if u.item is None else u.item, b.status, b.attempt, b.start, b.end)
                for u in timeline._units
                for b in u.bars
            )

        assert bars(drawn) == bars(replayed)
        assert drawn.statuses == replayed.statuses
        assert drawn.critical_path == replayed.critical_path
        assert drawn.duration == replayed.duration == result.duration
        for track in drawn._tracks:
            if track.capacity is not None:
                assert track.peak <= track.capacity, track.name
        path = drawn.critical_path
        if path:
            assert drawn._ends[path[-1]] == max(drawn._ends.values())
            nodes = case.flow.plan().nodes
            piped = {(up.spec.name, nodes[d].spec.name) for up in nodes for d in up.pipes}
            for before, after in itertools.pairwise(path):
                if (before, after) in piped:  # item-level pipelining: its items start early
                    assert drawn._ends[before] <= drawn._ends[after]
                else:
                    assert drawn._ends[before] <= drawn._starts[after]


def check_graham_bound(case: FlowCase, schedule: Sequence[int], m: int) -> None:
    """With capacity *m*: duration <= work/m + critical path, and at most *m* in flight."""
    with saved_on_failure("graham_bound", case, schedule=list(schedule), max_concurrent=m):
        result = run(
            case,
            schedule,
            error_handling="continue",
            max_concurrent=m,
            limiters=case.unlimited_limiters(),
        ).value
        assert result.duration <= case.total_work / m + case.critical_path
        assert case.observations.max_in_flight.get("*", 0) <= m


def check_limits(case: FlowCase, schedule: Sequence[int], max_concurrent: int | None) -> None:
    """In-flight counts never exceed max_concurrent, a named limiter, or a map step's limit."""
    with saved_on_failure("limits", case, schedule=list(schedule), max_concurrent=max_concurrent):
        run(case, schedule, error_handling="continue", max_concurrent=max_concurrent)
        seen = collections.Counter(case.observations.max_in_flight)
        if max_concurrent is not None:
            assert seen["*"] <= max_concurrent
        for name, size in case.limiter_sizes.items():
            assert seen[f"limiter:{name}"] <= size, name
        for model in case.models:
            if model.max_concurrent is not None:
                assert seen[model.name] <= model.max_concurrent, model.name


# -- 4. failures -----------------------------------------------------------------------------


def check_fail_fast(case: FlowCase, schedule: Sequence[int]) -> None:
    """fail_fast: run raises FlowError; no step body is left running; statuses follow the timeline.

    With unlimited capacity, the first failure happens at ``t`` = the earliest
    finish time of a failing step (the strategy gives failing steps durations
    that coincide with no other event). Steps that finished before ``t``
    succeeded, that step failed, every other one is ``cancelled``, and each
    step body running at ``t`` saw the cancellation.
    """
    failing = case.failing
    finish = case.finish_times()
    skipped_at = case.skip_times()  # (steps skipped by a condition: flows(conditions=True))
    t = min(finish[name] for name in failing)
    starts = {m.name: finish[m.name] - m.unit_time(None) for m in case.models if m.name in finish}

    async def main() -> trioflow.RunResult:
        nurseries = trio.lowlevel.current_task().child_nurseries
        try:
            await case.run(limiters=case.unlimited_limiters())
        except trioflow.FlowError as exc:
            # run() closed every nursery it opened, so no task it started is alive
            assert trio.lowlevel.current_task().child_nurseries == nurseries
            return exc.result
        raise AssertionError("the run did not raise FlowError though a step fails")

    with saved_on_failure("fail_fast", case, schedule=list(schedule), error_handling="fail_fast"):
        result = run_deterministic(main, schedule=list(schedule), max_steps=MAX_STEPS).value
        obs = case.observations
        assert obs.entered == obs.exited, "a step body was still running after run() raised"
        expected = {}
        for model in case.models:
            f = finish.get(model.name)
            if f is not None and f < t:
                expected[model.name] = "succeeded"
            elif skipped_at.get(model.name, math.inf) < t:
                expected[model.name] = "skipped"
            elif f == t and model.name in failing:
                expected[model.name] = "failed"
            else:
                expected[model.name] = "cancelled"
        assert {n: str(s.status) for n, s in result.steps.items()} == expected
        running_at_failure = [
            m.name
            for m in case.models
            if m.map_over is None
            and m.max_attempts == 1
            and m.name in finish
            and starts[m.name] < t < finish[m.name]
        ]
        for name in running_at_failure:
            assert (name, None) in obs.cancelled, name


def check_outside_cancellation(case: FlowCase, schedule: Sequence[int], deadline: float) -> None:
    """``move_on_after`` around a run cancels every step and leaves no task behind.

    *deadline* falls on an instant where nothing else happens (an eighth past
    a half second), unlimited capacity, ``continue``: if the critical path is
    shorter the run completes; otherwise cancellation propagates out of
    ``run`` as cancellation (no ``FlowError``), and no step body is left running.
    """

    async def main() -> str:
        nurseries = trio.lowlevel.current_task().child_nurseries
        with trio.move_on_after(deadline) as scope:
            try:
                await case.run(error_handling="continue", limiters=case.unlimited_limiters())
            except trioflow.FlowError:
                pass
        assert trio.lowlevel.current_task().child_nurseries == nurseries
        return "cancelled" if scope.cancelled_caught else "completed"

    with saved_on_failure("outside_cancellation", case, schedule=list(schedule), deadline=deadline):
        outcome = run_deterministic(main, schedule=list(schedule), max_steps=MAX_STEPS)
        expected = "cancelled" if case.critical_path > deadline else "completed"
        assert outcome.value == expected
        obs = case.observations
        assert obs.entered == obs.exited, "a step body was still running after run() returned"
        if expected == "cancelled":
            assert outcome.virtual_time == deadline
            running = {k for k, v in obs.in_flight.items() if v}
            assert not running


def check_continue_skips_descendants(
    case: FlowCase, schedule: Sequence[int], m: int | None
) -> None:
    """continue: skipped == descendants of failed steps, exactly."""
    with saved_on_failure(
        "continue_skips_descendants", case, schedule=list(schedule), max_concurrent=m
    ):
        result = run(case, schedule, error_handling="continue", max_concurrent=m).value
        failed = set(result.failed)
        assert failed == set(case.failing)
        descendants: set[str] = set()
        for name in failed:
            descendants |= case.descendants(name)
        assert set(result.skipped) == descendants


# -- 5. isolation -------------------------------------------------------------------------------


def check_isolation(case: FlowCase, schedule: Sequence[int], m: int | None) -> None:
    """A step that mutates its inputs never changes a sibling's inputs or the recorded outputs."""
    with saved_on_failure("isolation", case, schedule=list(schedule), max_concurrent=m):
        result = run(case, schedule, error_handling="continue", max_concurrent=m).value
        expected = case.sequential()
        values = {n: r[1] for n, r in expected.items()}
        values["items"] = case.inputs.get("items", [])
        for (name, item, _attempt), seen in case.observations.inputs_seen.items():
            model = next(m for m in case.models if m.name == name)
            want = {d: values[d] for d in model.deps}
            if model.map_over is not None:
                assert item is not None
                want[model.map_over] = values[model.map_over][item]
            assert seen == want, (name, item)
        assert case.summary(result) == expected


CHECKS: dict[str, Callable[..., None]] = {
    name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")
}


# -- 6. rate limits, keyed limits, conditions, pipelining (issue 13) ---------------------


def check_gated_matches_sequential(
    case: FlowCase, schedule: Sequence[int], max_concurrent: int | None
) -> None:
    """With rate limits, keyed limits, conditions and pipelined map steps, outputs,
    statuses, attempts and usage still equal running the steps one by one."""
    with saved_on_failure(
        "gated_matches_sequential", case, schedule=list(schedule), max_concurrent=max_concurrent
    ):
        result = run(case, schedule, error_handling="continue", max_concurrent=max_concurrent).value
        assert case.summary(result) == case.sequential()


def check_keyed_limits(case: FlowCase, schedule: Sequence[int], max_concurrent: int | None) -> None:
    """At most ``per_key`` attempts with one key run at once."""
    with saved_on_failure(
        "keyed_limits", case, schedule=list(schedule), max_concurrent=max_concurrent
    ):
        run(case, schedule, error_handling="continue", max_concurrent=max_concurrent)
        for key, peak in case.observations.max_in_flight.items():
            if key.startswith("key:"):
                assert peak <= case.per_key, (key, peak, case.per_key)


def check_token_starts(case: FlowCase, schedule: Sequence[int], max_concurrent: int | None) -> None:
    """No attempt that takes a token starts earlier than the bucket allows: over any
    window ``[a, b]`` of attempt starts, at most ``burst + (b - a) * calls / per`` start,
    and by time ``t`` after the run's start at most ``burst + t * calls / per``."""
    if case.rate is None:  # no step drew a rate limit
        return
    calls, per, burst = case.rate
    rated = {m.name for m in case.models if m.rate}
    with saved_on_failure(
        "token_starts", case, schedule=list(schedule), max_concurrent=max_concurrent
    ):
        result = run(case, schedule, error_handling="continue", max_concurrent=max_concurrent).value
        starts = sorted(t for name, _, _, t in case.observations.starts if name in rated)
        eps = 1e-9
        for k, b in enumerate(starts):
            assert k + 1 <= burst + (b - result.started_at) * calls / per + eps, (k, b)
            for j in range(k):
                a = starts[j]
                assert k - j + 1 <= burst + (b - a) * calls / per + eps, (j, k, a, b)


def check_conditional_critical_path(case: FlowCase, schedule: Sequence[int]) -> None:
    """With conditions (and pipelined map steps), unlimited capacity: the run takes
    exactly the model's critical path and each step finishes when the model says."""
    check_critical_path(case, schedule)


def check_pipelined_details(case: FlowCase, schedule: Sequence[int], max_concurrent: int | None) -> None:
    """Pipelined map steps in flows with conditions: outputs, statuses, attempts,
    usage, ``skip_reason`` and ``StepResult.items`` are those of the rules without
    pipelining (a map step over a map step is pipelined unless its ``when`` reads
    the whole upstream list; its own condition is asked as soon as all it names
    has ended)."""
    with saved_on_failure(
        "pipelined_details", case, schedule=list(schedule), max_concurrent=max_concurrent
    ):
        result = run(case, schedule, error_handling="continue", max_concurrent=max_concurrent).value
        assert case.summary(result) == case.sequential()
        assert case.details(result) == case.expected_details()
