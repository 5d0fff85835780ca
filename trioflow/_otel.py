"""OpenTelemetry spans for every run, when ``opentelemetry-api`` is installed (``trioflow[otel]``).

trioflow depends on the API only and takes its tracer from the global tracer
provider, which is a no-op until the application configures an SDK; it never
configures one. Without the package installed, :data:`tracer` is ``None`` and
runs pay one attribute test; with it installed but no provider set by the
application, a run pays one ``isinstance`` check (see :func:`active`).

The spans:

* ``trioflow.run <flow>``, one per :meth:`Flow.run <trioflow.Flow.run>`
  (``trioflow.flow``, ``trioflow.run_id``, ``trioflow.status``); each retry is a
  span event ``retry`` on it (``trioflow.step``, ``trioflow.item``,
  ``trioflow.attempt`` that failed, ``trioflow.wait_s``, ``exception.type``,
  ``exception.message``), added when the next attempt starts and dated at the
  failure;
* ``trioflow.step <step>``, one per attempt of a step or map item, a child of
  the run's span (``trioflow.flow``, ``trioflow.step``, ``trioflow.item``,
  ``trioflow.attempt``, ``trioflow.status``, ``trioflow.limiter_wait_s``), with
  the exception recorded on it when the attempt fails. It is the current span
  while the step's code runs, so spans that code makes (an HTTP client's or an
  LLM SDK's instrumentation) nest under it.

The step spans come from an attempt hook (see :mod:`trioflow._hooks`) that the
run's span installs for that run only, through a context variable its tasks
inherit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ._hooks import Attempt, context_hooks

try:
    from opentelemetry import trace as _trace
    from opentelemetry.context import attach as _attach
    from opentelemetry.context import detach as _detach
    from opentelemetry.trace import set_span_in_context as _set_span_in_context
except ImportError:  # the extra is not installed: no tracing, no cost
    _trace = None  # type: ignore[assignment]

T = TypeVar("T")

# the tracer of the global provider (a proxy: it follows a provider set later), or None
tracer: Any = None if _trace is None else _trace.get_tracer("trioflow")


def active() -> bool:
    """Whether runs make spans: the API is installed and the application set a tracer provider.

    Until then the global provider is a proxy (or an explicit no-op) whose
    spans go nowhere, and runs skip the spans and the hook altogether.
    """
    if tracer is None:
        return False
    provider = _trace.get_tracer_provider()
    return not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)


def _cancelled(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)


class _RunSpan:
    """The run's span and what its attempt hook remembers between attempts."""

    __slots__ = ("context", "failed", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.context = _set_span_in_context(span)  # the step spans' parent
        # (step, item) -> (clock reading at the failure, wall time in ns, the exception)
        self.failed: dict[tuple[str, int | None], tuple[float, int, BaseException]] = {}


class _StepSpans:
    """The attempt hook of one traced run: a ``trioflow.step`` span around each attempt."""

    def __init__(self, run: _RunSpan) -> None:
        self.run = run

    async def around_attempt(self, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]) -> Any:
        key = (attempt.step, attempt.item)
        failed = self.run.failed.pop(key, None)
        if failed is not None:
            at, wall_ns, error = failed
            wait = max(attempt.started_at - at, 0.0)
            self.run.span.add_event(
                "retry",
                attributes={
                    "trioflow.step": attempt.step,
                    "trioflow.item": -1 if attempt.item is None else attempt.item,
                    "trioflow.attempt": attempt.attempt - 1,
                    "trioflow.wait_s": wait,
                    "exception.type": type(error).__qualname__,
                    "exception.message": str(error),
                },
                timestamp=wall_ns,
            )
        attributes: dict[str, Any] = {
            "trioflow.flow": attempt.flow,
            "trioflow.step": attempt.step,
            "trioflow.attempt": attempt.attempt,
            "trioflow.limiter_wait_s": attempt.waited,
        }
        if attempt.item is not None:
            attributes["trioflow.item"] = attempt.item
        if attempt.run_id is not None:
            attributes["trioflow.run_id"] = attempt.run_id
        # (by hand rather than start_as_current_span: a generator-based context manager per step costs)
        span = tracer.start_span(f"trioflow.step {attempt.step}", context=self.run.context, attributes=attributes)
        token = _attach(_set_span_in_context(span))
        try:
            value = await proceed()
        except BaseException as exc:
            if _cancelled(exc):
                span.set_attribute("trioflow.status", "cancelled")
            else:
                span.set_attribute("trioflow.status", "failed")
                span.record_exception(exc)
                span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
                self.run.failed[key] = (anyio.current_time(), time.time_ns(), exc)
            raise
        else:
            span.set_attribute("trioflow.status", "succeeded")
            return value
        finally:
            _detach(token)
            span.end()


async def traced_run(flow: str, run_id: str | None, run: Callable[[], Awaitable[T]]) -> T:
    """Await ``run()`` inside a ``trioflow.run <flow>`` span, with a step span around each attempt."""
    attributes: dict[str, Any] = {"trioflow.flow": flow}
    if run_id is not None:
        attributes["trioflow.run_id"] = run_id
    with tracer.start_as_current_span(
        f"trioflow.run {flow}", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        record = _RunSpan(span)
        token = context_hooks.set((*context_hooks.get(), _StepSpans(record)))
        try:
            result = await run()
        except BaseException as exc:
            if _cancelled(exc):
                span.set_attribute("trioflow.status", "cancelled")
            else:
                span.set_attribute("trioflow.status", "failed")
                span.record_exception(exc)
                span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            raise
        finally:
            context_hooks.reset(token)
        span.set_attribute("trioflow.status", "succeeded")
        found = getattr(result, "run_id", None)
        if run_id is None and found is not None:
            span.set_attribute("trioflow.run_id", found)
        return result
