"""What watching a run costs: W1 (a 2000-step fan-out and a join) with each observer.

Each figure is a ratio to the same flow with no observer, measured in the same
process, interleaved, median of the repeats:

* ``ProgressDisplay`` drawing its live rich panel on a real pseudo-terminal
  (the display the user sees; a thread drains the terminal);
* OpenTelemetry with the SDK and a no-op exporter behind a
  ``BatchSpanProcessor`` (a run span and a span per step);
* ``flow.open_run`` with a consumer that reads every event.

Run by ``python bench/run.py`` when rich and the OpenTelemetry SDK are
installed (``nox -s bench`` installs them).
"""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trioflow
from trioflow import _otel


@contextmanager
def _terminal() -> Iterator[Any]:
    master, slave = os.openpty()
    out = os.fdopen(slave, "w", encoding="utf-8")

    def drain() -> None:
        while True:
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield out
    finally:
        out.close()
        reader.join(timeout=5)
        os.close(master)


@contextmanager
def _tracing() -> Iterator[None]:
    """The OpenTelemetry SDK with a no-op exporter, as the global provider (set once per process)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Nowhere(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nowhere()))
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def _ratio(
    base: Callable[[], Awaitable[Any]], watched: Callable[[], Awaitable[Any]], n: int, repeats: int
) -> tuple[float, float]:
    await base()
    await watched()
    t_base: list[float] = []
    t_watched: list[float] = []
    for _ in range(repeats):
        t_base.append(await _timed(base))
        t_watched.append(await _timed(watched))
    return statistics.median(t_base) / n * 1e6, statistics.median(t_watched) / n * 1e6


async def bench_observers(flow: trioflow.Flow, n: int, repeats: int) -> list[tuple[str, str, str, str, str]]:
    """Rows for bench/run.py's table: W1 per step with each observer against none."""
    rows: list[tuple[str, str, str, str, str]] = []
    steps = n + 1

    def row(what: str, base: float, watched: float) -> None:
        rows.append((f"OBS W1 + {what}", f"{watched:.2f} µs", f"{base:.2f} µs (none)", f"{watched / base:.2f}x", "none set"))

    with _terminal() as tty:
        async def with_display() -> None:
            await flow.run(on_event=trioflow.ProgressDisplay(tty))

        base, watched = await _ratio(flow.run, with_display, steps, repeats)
        row("ProgressDisplay (live, on a pty)", base, watched)

    async def with_stream() -> None:
        async with flow.open_run() as run:
            async for _ in run.events():
                pass

    base, watched = await _ratio(flow.run, with_stream, steps, repeats)
    row("open_run, every event read", base, watched)

    with _tracing():
        tracer = _otel.tracer

        async def untraced() -> None:
            _otel.tracer = None  # the same process without tracing
            try:
                await flow.run()
            finally:
                _otel.tracer = tracer

        base, watched = await _ratio(untraced, flow.run, steps, repeats)
        row("OpenTelemetry SDK, no-op exporter", base, watched)
    return rows
