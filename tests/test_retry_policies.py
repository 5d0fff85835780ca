"""Retries that read the error: ``Retry(retry_on=predicate)`` and ``Retry(wait_from=...)``
(issue 13 item 7). Timings on trio in virtual time; results on both backends."""

from __future__ import annotations

import re
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, GraphError, Retry, StepStatus


class HTTPError(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _flow(errors: list[Exception], retry: Retry) -> tuple[Flow, list[float]]:
    """A step that raises ``errors`` one per attempt, then returns "ok"."""
    flow = Flow("f")
    starts: list[float] = []

    @flow.step(retry=retry)
    async def call() -> str:
        starts.append(anyio.current_time())
        await anyio.lowlevel.checkpoint()
        if len(starts) <= len(errors):
            raise errors[len(starts) - 1]
        return "ok"

    return flow, starts


def transient(exc: Exception) -> bool:
    return isinstance(exc, HTTPError) and exc.status in (429, 503)


@pytest.mark.anyio
async def test_a_predicate_decides_from_the_error_itself(anyio_backend: Any) -> None:
    flow, starts = _flow([HTTPError(503), HTTPError(429)], Retry(max_attempts=5, retry_on=transient))
    result = await flow.run()
    assert result["call"] == "ok"
    assert result.steps["call"].attempts == 3

    flow, starts = _flow([HTTPError(503), HTTPError(404)], Retry(max_attempts=5, retry_on=transient))
    with pytest.raises(FlowError) as info:
        await flow.run()
    assert len(starts) == 2
    (error,) = info.value.exceptions
    assert isinstance(error, HTTPError)
    assert error.status == 404
    assert info.value.result.steps["call"].attempts == 2


@pytest.mark.anyio
async def test_a_predicate_is_not_asked_once_attempts_are_used_up(anyio_backend: Any) -> None:
    asked: list[Exception] = []

    def predicate(exc: Exception) -> bool:
        asked.append(exc)
        return True

    flow, starts = _flow([ValueError("a"), ValueError("b"), ValueError("c")], Retry(max_attempts=2, retry_on=predicate))
    with pytest.raises(FlowError):
        await flow.run()
    assert len(starts) == 2
    assert [str(e) for e in asked] == ["a"]


@pytest.mark.anyio
async def test_a_predicate_that_raises_fails_the_step_with_its_error_chained(anyio_backend: Any) -> None:
    def broken(exc: Exception) -> bool:
        raise LookupError("no status")

    flow, starts = _flow([ValueError("original")], Retry(max_attempts=3, retry_on=broken))
    with pytest.raises(FlowError) as info:
        await flow.run()
    assert len(starts) == 1
    (error,) = info.value.exceptions
    assert isinstance(error, LookupError)
    assert str(error.__cause__) == "original"
    assert info.value.result.steps["call"].status is StepStatus.FAILED


@pytest.mark.anyio
async def test_a_predicate_must_return_a_bool(anyio_backend: Any) -> None:
    flow, _ = _flow([ValueError("x")], Retry(max_attempts=3, retry_on=lambda exc: "yes"))  # type: ignore[arg-type,return-value]
    with pytest.raises(FlowError) as info:
        await flow.run()
    (error,) = info.value.exceptions
    assert isinstance(error, TypeError)
    assert "must return True or False (got 'yes'" in str(error)


@pytest.mark.trio
async def test_wait_from_sets_the_wait_and_none_falls_back_on_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(
        max_attempts=5, wait=1.0, backoff=2.0, jitter=0.5, max_wait=30.0,
        wait_from=lambda exc: getattr(exc, "retry_after", None),
    )
    errors: list[Exception] = [HTTPError(429, 7.0), HTTPError(503), HTTPError(429, 100.0), HTTPError(429, 0)]
    flow, starts = _flow(errors, retry)
    events: list[Any] = []
    result = await flow.run(seed=3, on_event=events.append)
    assert result["call"] == "ok"
    # attempt 2 waits Retry-After 7 (no jitter); attempt 3 the backoff rule
    # (2.0 plus the seeded jitter draw); attempt 4 Retry-After capped at 30; then 0
    jittered = retry.delay_for(2, seed=3, step="call", item=None)
    assert 2.0 <= jittered < 2.5
    assert starts == pytest.approx([0.0, 7.0, 7.0 + jittered, 37.0 + jittered, 37.0 + jittered], abs=1e-9)
    waits = [ev.wait for ev in events if isinstance(ev, trioflow.StepRetrying)]
    assert waits == [7.0, jittered, 30.0, 0.0]


@pytest.mark.trio
async def test_wait_from_in_trioflow_map(autojump_clock: trio.testing.MockClock) -> None:
    starts: dict[int, list[float]] = {0: [], 1: []}

    async def fetch(i: int) -> int:
        starts[i].append(trio.current_time())
        if len(starts[i]) == 1:
            raise HTTPError(429, 2.5 * (i + 1))
        return i

    retry = Retry(max_attempts=2, retry_on=transient, wait_from=lambda exc: getattr(exc, "retry_after", None))
    assert await trioflow.map(fetch, [0, 1], retry=retry) == [0, 1]
    assert starts == {0: [0.0, 2.5], 1: [0.0, 5.0]}


@pytest.mark.anyio
async def test_wait_from_returning_a_bad_value_fails_the_step(anyio_backend: Any) -> None:
    for bad, kind, text in [
        ("soon", TypeError, "must return a number of seconds or None (got 'soon'"),
        (-1.0, ValueError, "returned -1.0 for ValueError('x'); a wait must be >= 0 seconds"),
    ]:
        flow, starts = _flow([ValueError("x")], Retry(max_attempts=3, wait_from=lambda exc, bad=bad: bad))
        with pytest.raises(FlowError) as info:
            await flow.run()
        assert len(starts) == 1
        (error,) = info.value.exceptions
        assert isinstance(error, kind)
        assert text in str(error)
        assert str(error.__cause__) == "x"


def test_bad_policies_are_rejected_when_made() -> None:
    with pytest.raises(TypeError, match=re.escape("or a predicate callable(exception) -> bool (got 3)")):
        Retry(retry_on=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("Retry(wait_from=...) takes a callable(exception) -> float | None (got 2.0)")):
        Retry(wait_from=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Retry(retry_on=(ValueError, transient))  # type: ignore[arg-type]
    with pytest.raises(GraphError):
        Retry(max_attempts=0, retry_on=transient)


def test_predicates_keep_the_policy_a_value() -> None:
    assert Retry(retry_on=transient) == Retry(retry_on=transient)
    assert Retry(retry_on=transient).should_retry(HTTPError(503), 0)
    assert not Retry(max_attempts=2, retry_on=transient).should_retry(HTTPError(404), 1)
    assert not Retry(max_attempts=2, retry_on=transient).should_retry(HTTPError(503), 2)
    assert Retry(wait=1.0, wait_from=lambda e: None).wait_after(ValueError(), 1, seed=0, step="s", item=None) == 1.0
