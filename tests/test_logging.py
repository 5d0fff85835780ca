"""``logging.getLogger("trioflow")`` (issue 12 item 6)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import trioflow
from trioflow import Flow, FlowError, Retry

ROOT = Path(__file__).resolve().parent.parent


def _flow() -> Flow:
    flow = Flow("logged")

    @flow.step(retry=Retry(max_attempts=2, wait=0.01))
    async def flaky() -> int:
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("503")
        return 1

    @flow.step(map_over="xs")
    async def each(xs: int, flaky: int) -> int:
        if xs == 2:
            raise ValueError(f"bad item {xs}")
        return xs

    @flow.step
    async def fine() -> None:
        await anyio.sleep(0.01)

    return flow


@pytest.mark.anyio
async def test_issue_12_item_6_levels_and_messages(anyio_backend: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioflow")
    with pytest.raises(FlowError):
        await _flow().run({"xs": [1, 2]}, error_handling="continue", run_id="r7")
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records[0] == ("trioflow", logging.INFO, "flow 'logged' (run 'r7') started: 3 steps")
    assert (
        "trioflow", logging.WARNING,
        "step 'flaky' of flow 'logged' (run 'r7') failed on attempt 1 (ConnectionError('503')); retrying in 0.010s",
    ) in records
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "step 'each' of flow 'logged' (run 'r7') failed after 1 attempt: ValueError('bad item 2')"
    ]
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[1] is not None
    assert str(errors[0].exc_info[1]) == "bad item 2"
    assert errors[0].trioflow_step == "each"  # type: ignore[attr-defined]
    assert errors[0].trioflow_flow == "logged"  # type: ignore[attr-defined]
    assert records[-1][:2] == ("trioflow", logging.INFO)
    assert records[-1][2].startswith("flow 'logged' (run 'r7') failed in ")
    assert records[-1][2].endswith("s; failed: each")


@pytest.mark.anyio
async def test_issue_12_item_6_a_cancelled_run_logs_its_end(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioflow")
    flow = Flow("slow")

    @flow.step
    async def forever() -> None:
        await anyio.sleep(100)

    with anyio.move_on_after(0.02):
        await flow.run()
    assert caplog.records[-1].getMessage().startswith("flow 'slow' cancelled in ")


@pytest.mark.anyio
async def test_issue_12_item_6_quiet_below_the_level(anyio_backend: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trioflow")
    await _ok_flow().run()
    assert caplog.records == []


def _ok_flow() -> Flow:
    flow = Flow("ok")

    @flow.step
    async def a() -> int:
        return 1

    return flow


def test_issue_12_item_6_only_a_null_handler() -> None:
    handlers = logging.getLogger("trioflow").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_issue_12_item_6_an_unconfigured_application_prints_nothing() -> None:
    # Without the NullHandler, logging's last-resort handler would print the
    # WARNING and ERROR records to standard error.
    script = textwrap.dedent(
        """
        import trio, trioflow
        flow = trioflow.Flow("f")

        @flow.step(retry=trioflow.Retry(max_attempts=2))
        async def bad() -> None:
            raise ValueError("bad")

        try:
            trio.run(flow.run)
        except trioflow.FlowError:
            print("failed as expected")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "failed as expected\n"
    assert proc.stderr == ""


@pytest.mark.anyio
async def test_issue_12_item_6_a_dropped_map_item_is_a_warning(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioflow")
    flow = Flow("lenient")

    @flow.step(map_over="xs", on_item_error="none")
    async def each(xs: int) -> int:
        if xs == 1:
            raise ValueError("one")
        return xs

    assert (await flow.run({"xs": [0, 1]}))["each"] == [0, None]
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno > logging.INFO] == [
        (
            logging.WARNING,
            "item 1 of map step 'each' of flow 'lenient' failed after 1 attempt (ValueError('one')); "
            "its value is None (on_item_error='none')",
        )
    ]
