"""trioflow's log records: ``logging.getLogger("trioflow")``.

A run logs its start and end at ``INFO``, each retry at ``WARNING``, each
failed step at ``ERROR`` (with the exception), and each failed map item that
its step lets go (``on_item_error="none"``) at ``WARNING``, naming the flow,
the run id and the step. As a library should, trioflow adds only a
:class:`logging.NullHandler`: the application decides where records go
(``logging.basicConfig(level=logging.INFO)`` shows them all).

Every record has ``extra`` fields for structured logging: ``trioflow_flow``,
``trioflow_run_id``, and ``trioflow_step`` where a step is concerned. The
scheduler calls these helpers only when the logger is enabled for the level,
so a run with logging off pays one cached level check per run (and per retry
or failure).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("trioflow")
logger.addHandler(logging.NullHandler())

INFO = logging.INFO
WARNING = logging.WARNING
ERROR = logging.ERROR


def _extra(flow: str, run_id: str | None, step: str | None = None) -> dict[str, object]:
    extra: dict[str, object] = {"trioflow_flow": flow, "trioflow_run_id": run_id}
    if step is not None:
        extra["trioflow_step"] = step
    return extra


def _run(flow: str, run_id: str | None) -> str:
    return f"flow {flow!r}" if run_id is None else f"flow {flow!r} (run {run_id!r})"


def run_started(flow: str, run_id: str | None, steps: int, restored: int) -> None:
    more = f", {restored} restored from the store" if restored else ""
    logger.info("%s started: %d steps%s", _run(flow, run_id), steps, more, extra=_extra(flow, run_id))


def run_finished(flow: str, run_id: str | None, status: str, duration: float, failed: tuple[str, ...]) -> None:
    more = f"; failed: {', '.join(failed)}" if failed else ""
    logger.info(
        "%s %s in %.3fs%s", _run(flow, run_id), status, duration, more, extra=_extra(flow, run_id)
    )


def retrying(flow: str, run_id: str | None, label: str, attempt: int, error: BaseException, wait: float) -> None:
    logger.warning(
        "step %r of %s failed on attempt %d (%r); retrying in %.3fs",
        label, _run(flow, run_id), attempt, error, wait, extra=_extra(flow, run_id, label),
    )


def step_failed(flow: str, run_id: str | None, step: str, attempts: int, error: BaseException) -> None:
    logger.error(
        "step %r of %s failed after %d attempt%s: %r",
        step, _run(flow, run_id), attempts, "" if attempts == 1 else "s", error,
        exc_info=error, extra=_extra(flow, run_id, step),
    )


def item_dropped(flow: str, run_id: str | None, step: str, item: int, attempts: int, error: BaseException) -> None:
    logger.warning(
        "item %d of map step %r of %s failed after %d attempt%s (%r); its value is None "
        "(on_item_error='none')",
        item, step, _run(flow, run_id), attempts, "" if attempts == 1 else "s", error,
        extra=_extra(flow, run_id, step),
    )
