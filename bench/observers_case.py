"""What watching a run costs: W1 (a 2000-step fan-out and a join) with each observer.

Each figure is a ratio to the same flow with no observer, measured in the same
process, interleaved, min/median/max over the repeats (wall clock, and the
process's CPU time, which counts the observers' own threads too):

* ``ProgressDisplay`` drawing its live rich panel on a real pseudo-terminal
  (the display the user sees; a thread drains the terminal);
* OpenTelemetry with the SDK and a no-op exporter behind a
  ``BatchSpanProcessor`` (a run span and a span per step);
* ``flow.open_run`` with a consumer that reads every event.

Run by ``python bench/run.py`` when rich and the OpenTelemetry SDK are
installed (``nox -s bench`` installs them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from measure import Row, alternate, compared

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


async def bench_observers(flow: trioflow.Flow, n: int, repeats: int) -> list[Row]:
    """Rows for bench/run.py's table: W1 per step with each observer against none."""
    rows: list[Row] = []
    scale = 1e6 / (n + 1)

    cpu: dict[str, list[float]] = {}

    def row(what: str, base: list[float], watched: list[float]) -> None:
        rows.append(compared(f"OBS W1 + {what}", watched, base, scale=scale, base_note=" (none)",
                             cpu=(cpu["watched"], cpu["base"])))

    with _terminal() as tty:
        async def with_display() -> None:
            await flow.run(on_event=trioflow.ProgressDisplay(tty))

        t = await alternate({"base": flow.run, "watched": with_display}, repeats, cpu=cpu)
        row("ProgressDisplay (live, on a pty)", t["base"], t["watched"])

    async def with_stream() -> None:
        async with flow.open_run() as run:
            async for _ in run.events():
                pass

    t = await alternate({"base": flow.run, "watched": with_stream}, repeats, cpu=cpu)
    row("open_run, every event read", t["base"], t["watched"])

    with _tracing():
        tracer = _otel.tracer

        async def untraced() -> None:
            _otel.tracer = None  # the same process without tracing
            try:
                await flow.run()
            finally:
                _otel.tracer = tracer

        t = await alternate({"base": untraced, "watched": flow.run}, repeats, cpu=cpu)
        row("OpenTelemetry SDK, no-op exporter", t["base"], t["watched"])
    return rows
