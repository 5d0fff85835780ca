"""OpenTelemetry spans (issue 12 item 5), checked with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

import trioflow
from trioflow import Flow, FlowError, Retry

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = InMemorySpanExporter()
_provider: list[TracerProvider] = []


class _WhileTesting(Sampler):
    """Records spans only during these tests: the other tests' runs get no-op spans."""

    active = False

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None,
        links: Any = None, trace_state: Any = None,
    ) -> SamplingResult:
        if not self.active:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "while testing"


SAMPLER = _WhileTesting()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not _provider:  # the global provider can be set once per process
        provider = TracerProvider(sampler=SAMPLER)
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
        _provider.append(provider)
    EXPORTER.clear()
    SAMPLER.active = True
    try:
        yield EXPORTER
    finally:
        SAMPLER.active = False
        EXPORTER.clear()


def _flow() -> Flow:
    flow = Flow("traced")
    inner = trace.get_tracer("the step's own code")

    @flow.step
    async def a() -> list[int]:
        await anyio.sleep(1)
        return [1, 2, 3]

    @flow.step(map_over="a", limiter="llm")
    async def m(a: int) -> int:
        await anyio.sleep(1)
        return a

    @flow.step(retry=Retry(max_attempts=2, wait=0.5))
    async def c(m: list[int]) -> int:
        with inner.start_as_current_span("http GET"):  # e.g. an httpx instrumentation
            await anyio.sleep(1)
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("flaky")
        return sum(m)

    return flow


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        out.setdefault(span.name, []).append(span)
    return out


@pytest.mark.anyio
async def test_issue_12_item_5_span_tree(anyio_backend: Any, spans: InMemorySpanExporter) -> None:
    result = await _flow().run(limiters={"llm": 2}, run_id="r-5")
    assert result["c"] == 6
    by = _by_name(spans.get_finished_spans())
    assert sorted(by) == ["http GET", "trioflow.run traced", "trioflow.step a", "trioflow.step c", "trioflow.step m"]
    (run,) = by["trioflow.run traced"]
    assert run.parent is None
    assert dict(run.attributes or {}) == {
        "trioflow.flow": "traced", "trioflow.run_id": "r-5", "trioflow.status": "succeeded",
    }
    steps = by["trioflow.step a"] + by["trioflow.step m"] + by["trioflow.step c"]
    assert len(steps) == 1 + 3 + 2  # one span per attempt
    for span in steps:
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
    items = sorted(by["trioflow.step m"], key=lambda s: (s.attributes or {})["trioflow.item"])
    assert [(s.attributes or {})["trioflow.item"] for s in items] == [0, 1, 2]
    assert all((s.attributes or {})["trioflow.status"] == "succeeded" for s in items)
    first, second = sorted(by["trioflow.step c"], key=lambda s: (s.attributes or {})["trioflow.attempt"])
    assert (first.attributes or {})["trioflow.status"] == "failed"
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert (first.events[0].attributes or {})["exception.type"] == "ConnectionError"
    assert (second.attributes or {})["trioflow.status"] == "succeeded"
    assert (second.attributes or {})["trioflow.attempt"] == 2
    # the step's own spans nest under the attempt's span
    http = by["http GET"]
    assert len(http) == 2
    assert {h.parent.span_id for h in http if h.parent} == {first.context.span_id, second.context.span_id}
    # the retry is an event on the run's span, with the wait
    (retry,) = [e for e in run.events if e.name == "retry"]
    attrs = dict(retry.attributes or {})
    assert (attrs["trioflow.step"], attrs["trioflow.attempt"], attrs["exception.type"]) == ("c", 1, "ConnectionError")
    if anyio_backend == "trio":  # virtual time: exact
        assert attrs["trioflow.wait_s"] == 0.5
        waits = {(s.attributes or {}).get("trioflow.item"): (s.attributes or {})["trioflow.limiter_wait_s"] for s in items}
        assert waits == {0: 0.0, 1: 0.0, 2: 1.0}  # m[2] waited for a slot of 'llm'
    else:
        assert attrs["trioflow.wait_s"] >= 0.5


@pytest.mark.trio
async def test_issue_12_item_5_failed_and_cancelled_runs(
    autojump_clock: trio.testing.MockClock, spans: InMemorySpanExporter
) -> None:
    flow = Flow("bad")

    @flow.step
    async def boom() -> None:
        await trio.sleep(1)
        raise ValueError("boom")

    @flow.step
    async def slow() -> None:
        await trio.sleep(10)

    with pytest.raises(FlowError):
        await flow.run()
    by = _by_name(spans.get_finished_spans())
    (run,) = by["trioflow.run bad"]
    assert (run.attributes or {})["trioflow.status"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert [(s.attributes or {})["trioflow.status"] for s in by["trioflow.step boom"]] == ["failed"]
    assert [(s.attributes or {})["trioflow.status"] for s in by["trioflow.step slow"]] == ["cancelled"]
    spans.clear()
    with trio.move_on_after(0.5):  # before boom fails
        await flow.run()
    by = _by_name(spans.get_finished_spans())
    (run,) = by["trioflow.run bad"]
    assert (run.attributes or {})["trioflow.status"] == "cancelled"
    assert run.status.status_code is not StatusCode.ERROR


@pytest.mark.trio
async def test_issue_12_item_5_concurrent_runs_have_their_own_trees(
    autojump_clock: trio.testing.MockClock, spans: InMemorySpanExporter
) -> None:
    flow = _flow()
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(lambda i=i: flow.run(limiters={"llm": 2}, run_id=f"r{i}"))
    by = _by_name(spans.get_finished_spans())
    runs = {(r.attributes or {})["trioflow.run_id"]: r for r in by["trioflow.run traced"]}
    assert sorted(runs) == ["r0", "r1", "r2"]
    for run_id, run in runs.items():
        children = [
            s for name, group in by.items() if name.startswith("trioflow.step") for s in group
            if s.parent and s.parent.span_id == run.context.span_id
        ]
        assert len(children) == 6, run_id
        assert all((s.attributes or {})["trioflow.run_id"] == run_id for s in children)
        assert len([e for e in run.events if e.name == "retry"]) == 1
    assert trioflow._hooks.installed_hooks() == ()  # the step spans' hook was for those runs only


def test_issue_12_item_5_without_opentelemetry_no_tracing() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # not installed
        import trio, trioflow
        from trioflow import _otel, _hooks
        assert _otel.tracer is None
        flow = trioflow.Flow("plain")

        @flow.step
        async def a() -> int:
            assert _hooks.installed_hooks() == ()  # no hook around the attempt
            return 1

        print(trio.run(flow.run)["a"])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"


def test_issue_12_item_5_installed_but_no_provider_set_no_spans() -> None:
    # the API alone (no SDK configured by the application): runs skip the spans and the hook
    script = textwrap.dedent(
        """
        import trio, trioflow
        from trioflow import _otel, _hooks
        assert _otel.tracer is not None
        assert not _otel.active()
        flow = trioflow.Flow("plain")

        @flow.step
        async def a() -> int:
            assert _hooks.installed_hooks() == ()
            return 1

        print(trio.run(flow.run)["a"])
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"


@pytest.mark.trio
async def test_issue_12_item_5_thread_step_spans_nest_too(spans: InMemorySpanExporter) -> None:
    flow = Flow("threads")
    inner = trace.get_tracer("the step's own code")

    @flow.step(runner="thread")
    def blocking() -> int:  # runs in a worker thread
        with inner.start_as_current_span("blocking call"):
            return 1

    assert (await flow.run())["blocking"] == 1
    by = _by_name(spans.get_finished_spans())
    (step,) = by["trioflow.step blocking"]
    (call,) = by["blocking call"]
    assert call.parent is not None
    assert call.parent.span_id == step.context.span_id
