"""Hypothesis strategies for schedules, seeds and random flows.

This module imports Hypothesis (``pip install trioflow[testing]``); the rest
of :mod:`trioflow.testing` does not.

Example::

    from functools import partial

    from hypothesis import given
    from trioflow.testing import run_deterministic
    from trioflow.testing.strategies import flows, schedules

    @given(flows(), schedules())
    def test_schedule_does_not_matter(case, schedule):
        run = partial(case.run_settled, error_handling="continue")
        result = run_deterministic(run, schedule=schedule).value
        assert case.summary(result) == case.sequential()
"""

from __future__ import annotations

import sys
from typing import Any

from trio._core import _run as _trio_run

# trio registers a Hypothesis plugin (its "hypothesis" entry point) that, when
# Hypothesis is first imported, switches trio's run loop into its deterministic
# scheduling mode for the whole process (each batch sorted, then shuffled by a
# random.Random that Hypothesis reseeds for every example) and registers that
# Random with Hypothesis. Importing this module must not change how plain
# trio.run schedules elsewhere, so if the import of Hypothesis below is the
# first one, the mode and the registration are undone. (The harness turns the
# mode on for the length of each of its own runs, whatever it was.)
_first_import = "hypothesis" not in sys.modules
_allow_before = _trio_run._ALLOW_DETERMINISTIC_SCHEDULING

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as _missing:
    if _missing.name != "hypothesis":
        raise
    raise ModuleNotFoundError(
        "trioflow.testing.strategies needs Hypothesis, which is not installed; install it "
        "with: python -m pip install 'trioflow[testing]' (the rest of trioflow.testing "
        "works without it)",
        name="hypothesis",
    ) from None

if _first_import:
    setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", _allow_before)  # noqa: B010 (Final)
    try:
        from hypothesis.internal import entropy as _entropy

        for _key, _value in list(_entropy.RANDOMS_TO_MANAGE.items()):
            if _value is _trio_run._r:
                del _entropy.RANDOMS_TO_MANAGE[_key]
    except (ImportError, AttributeError):  # a Hypothesis that keeps them elsewhere
        pass

from ._model import ITEMS, FlowCase, Observations, StepFailure, StepModel  # noqa: E402

__all__ = ["FlowCase", "Observations", "StepFailure", "StepModel", "flows", "schedules", "seeds"]

#: Durations of steps that succeed are multiples of 1/2. The k-th step drawn
#: to fail gets an extra 4**-(k + 3) seconds per attempt, so the end of each of
#: its (at most 3) attempts falls on a virtual instant of its own: no failure
#: coincides with any other event. Under ``fail_fast``, which steps end up
#: ``cancelled`` rather than ``succeeded`` (or ``failed``) when a failure and
#: another completion happen at the same instant is an inherent race that may
#: legitimately differ across schedules; this keeps the fuzzed statuses exact.
_DURATIONS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def schedules(*, max_size: int = 64, max_value: int = 2**16) -> st.SearchStrategy[list[int]]:
    """Schedules for :func:`~trioflow.testing.run_deterministic`: lists of ints.

    Each decision is ``0`` (FIFO) or a value ``k`` that the harness wraps to
    the decision point's ``n`` choices, taking choice ``(k - 1) % n``; values
    are drawn up to ``max_value``, so every task of a batch of up to
    ``max_value`` tasks can be chosen. Shrinks toward ``[]`` (FIFO) and toward
    small values: a failing example ends up as the shortest list of the
    smallest decisions that still exposes the bug (each value at most the
    number of choices where it was taken).

    Args:
        max_size: Most decisions drawn; a run that needs more continues FIFO.
        max_value: Largest decision drawn (at least 1); batches larger than this
            have tasks no drawn value reaches.
    """
    if not isinstance(max_value, int) or max_value < 1:
        raise ValueError(f"schedules(max_value={max_value!r}) must be an int >= 1")
    # half the draws as before (0 to 8), half over the whole range
    decision = st.one_of(st.integers(0, min(8, max_value)), st.integers(0, max_value))
    return st.lists(decision, max_size=max_size)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for :func:`~trioflow.testing.run_deterministic` (``seed=``)."""
    return st.integers(0, 2**32 - 1)


@st.composite
def _step(
    draw: st.DrawFn,
    index: int,
    earlier: list[StepModel],
    *,
    failures: bool,
    force_failure: bool,
    failure_number: int,
    retries: bool,
    waits: bool,
    timeouts: bool,
    maps: bool,
    map_limits: bool,
    limiters: tuple[str, ...],
    mutations: bool,
    rate_limits: bool = False,
    keyed: bool = False,
    conditions: bool = False,
) -> StepModel:
    names = [m.name for m in earlier]
    deps = draw(st.lists(st.sampled_from([ITEMS, *names]), unique=True, max_size=3))
    after = draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if names else []
    after = [a for a in after if a not in deps]
    map_over = None
    if maps and deps and not force_failure and draw(st.booleans()):
        map_over = draw(st.sampled_from(deps))
    fail = force_failure or (failures and map_over is None and draw(st.integers(0, 5)) == 0)
    max_attempts = draw(st.integers(1, 3)) if retries else 1
    fail_times = max_attempts if fail else draw(st.integers(0, max_attempts - 1))
    durations = tuple(
        draw(st.lists(st.sampled_from(_DURATIONS), min_size=1, max_size=3 if map_over else 1))
    )
    offset = 4.0 ** -(failure_number + 3)
    timeout = None
    if timeouts and fail and draw(st.booleans()):
        # every attempt times out: the timeout carries the offset instead
        timeout = durations[0] + offset
        durations = (durations[0] + 10.0,)
    elif fail:
        durations = tuple(d + offset for d in durations)
    if timeouts and timeout is None and draw(st.booleans()):
        timeout = max(durations) + 0.25  # generous: never fires
    return StepModel(
        name=f"s{index}",
        deps=tuple(deps),
        after=tuple(after),
        map_over=map_over,
        durations=durations,
        checkpoints=draw(st.integers(0, 2)),
        use_anyio=draw(st.booleans()),
        length=draw(st.integers(0, 3)),
        fail_times=fail_times,
        max_attempts=max_attempts,
        wait=draw(st.sampled_from((0.0, 0.5, 1.0))) if max_attempts > 1 and waits else 0.0,
        backoff=draw(st.sampled_from((1.0, 2.0))),
        cost=draw(st.sampled_from((0.5, 1.0, 2.0))),
        limiter=draw(st.sampled_from((None, *limiters))) if limiters else None,
        max_concurrent=draw(st.sampled_from((None, 1, 2, 3))) if map_over and map_limits else None,
        timeout=timeout,
        mutate=mutations and draw(st.booleans()),
        tokens=draw(st.integers(0, 5)),
        **_gated(draw, deps, map_over, rate_limits=rate_limits, keyed=keyed, conditions=conditions),
    )


def _gated(
    draw: st.DrawFn,
    deps: list[str],
    map_over: str | None,
    *,
    rate_limits: bool,
    keyed: bool,
    conditions: bool,
) -> dict[str, Any]:
    """A step's rate limit, keyed limit, condition and optional dependencies (issue 13)."""
    fields: dict[str, Any] = {}
    if rate_limits:
        fields["rate"] = draw(st.booleans())
    if keyed:
        fields["key_mod"] = draw(st.sampled_from((0, 1, 2)))
    steps = [d for d in deps if d not in (ITEMS, map_over)]
    # a condition may read a map step's whole source list (that step is then not pipelined)
    readable = [d for d in deps if d != ITEMS]
    if conditions and readable:
        fields["when"] = draw(st.sampled_from((None, *readable)))
    if conditions and steps:
        fields["optional"] = tuple(draw(st.lists(st.sampled_from(steps), unique=True, max_size=2)))
    return fields


@st.composite
def flows(
    draw: st.DrawFn,
    *,
    max_steps: int = 8,
    failures: bool = True,
    retries: bool = True,
    waits: bool = True,
    timeouts: bool = True,
    maps: bool = True,
    map_limits: bool = True,
    limiters: bool = True,
    mutations: bool = True,
    min_failing: int = 0,
    rate_limits: bool = False,
    keyed: bool = False,
    conditions: bool = False,
) -> FlowCase:
    """Random DAG flows, as :class:`FlowCase` objects.

    Each step is an async function whose parameters name upstream steps (or
    the flow input ``"items"``, a list of ints); it sleeps a drawn virtual
    duration (through trio or anyio), reports usage, may fail a drawn number
    of attempts (retried or not), may be a map step, may use a named limiter,
    may mutate its inputs, and returns a list of ints computed from its inputs.
    The case knows what a run must give (:meth:`FlowCase.sequential`,
    :attr:`FlowCase.critical_path`, :attr:`FlowCase.total_work`,
    :meth:`FlowCase.descendants`) and what the bodies saw
    (:attr:`FlowCase.observations`). Shrinks toward fewer, simpler steps.

    Args:
        max_steps: Most steps in a flow.
        failures: Allow steps that fail on every attempt.
        retries: Allow retry policies (and attempts that fail, then succeed).
        waits: Allow retry waits (else every retry is immediate, for runs on a
            real clock).
        timeouts: Allow per-attempt timeouts: generous ones that never fire,
            and, on failing steps, ones that every attempt runs into.
        maps: Allow map steps.
        map_limits: Allow a map step's own ``max_concurrent``.
        limiters: Allow named limiters (``"x"`` and ``"y"``, of drawn sizes).
        mutations: Allow steps that mutate their inputs.
        min_failing: At least this many steps fail on every attempt (at most
            ``max_steps``); their descendants may still be drawn.
        rate_limits: Steps may take a token per attempt from a rate limit
            ``"rate"`` (a :class:`trioflow.RateLimit` of drawn calls, period
            and burst, new for each run).
        keyed: Steps may use a :class:`trioflow.KeyedLimiter` ``"keyed"`` of a
            drawn ``per_key``, keyed by item value modulo 1 or 2.
        conditions: Steps may have a ``when=`` condition on an upstream step
            (a map step's condition may read its whole source list, which
            turns its item-level pipelining off) and take upstream steps as
            optional dependencies (default ``None``).
    """
    if not 0 <= min_failing <= max_steps:
        raise ValueError(
            f"flows(min_failing={min_failing!r}) must be between 0 and max_steps={max_steps!r}"
        )
    n = draw(st.integers(max(1, min_failing), max_steps))
    forced = set(draw(st.permutations(range(n)))[:min_failing]) if min_failing else set()
    sizes: dict[str, int] = {}
    if limiters:
        sizes = {name: draw(st.integers(1, 3)) for name in ("x", "y")}
    models: list[StepModel] = []
    failing = 0
    for index in range(n):
        model = draw(
            _step(
                index,
                models,
                failures=failures,
                force_failure=index in forced,
                failure_number=failing,
                retries=retries,
                waits=waits,
                timeouts=timeouts,
                maps=maps,
                map_limits=map_limits,
                limiters=tuple(sizes),
                mutations=mutations,
                rate_limits=rate_limits,
                keyed=keyed,
                conditions=conditions,
            )
        )
        failing += model.fails
        models.append(model)
    items = draw(st.lists(st.integers(0, 99), max_size=4))
    used = {m.limiter for m in models}
    sizes = {name: size for name, size in sizes.items() if name in used}  # run() refuses unused ones
    rate = None
    if rate_limits and any(m.rate for m in models):
        rate = (float(draw(st.sampled_from((1, 2, 4)))), draw(st.sampled_from((0.5, 1.0, 2.0))),
                draw(st.integers(1, 3)))
    per_key = draw(st.integers(1, 2)) if keyed and any(m.key_mod for m in models) else 0
    return FlowCase.build(models, items, sizes, rate=rate, per_key=per_key)
