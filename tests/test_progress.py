"""``trioflow.ProgressDisplay`` (issue 12 item 2): a live panel on a terminal, lines elsewhere."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, ProgressDisplay, Retry

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _flow(width: int = 50) -> Flow:
    flow = Flow("progress")

    @flow.step(limiter="llm")
    async def plan() -> list[int]:
        await anyio.sleep(0.01)
        return list(range(width))

    @flow.step(map_over="plan", limiter="llm")
    async def work(plan: int) -> int:
        await anyio.sleep(0.01)
        return plan

    @flow.step(retry=Retry(max_attempts=2, wait=0.01))
    async def flaky() -> None:
        await anyio.sleep(0.01)
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("503")

    @flow.step
    async def bad() -> None:
        await anyio.sleep(0.02)
        raise ValueError("bad")

    @flow.step
    async def child(bad: None) -> None:
        pass

    @flow.step
    async def total(work: list[int], flaky: None) -> int:
        return sum(work)

    return flow


@contextmanager
def terminal() -> Iterator[tuple[TextIO, list[bytes]]]:
    """A real pseudo-terminal: the display writes to its slave side, a thread drains the master."""
    master, slave = os.openpty()
    out = os.fdopen(slave, "w", encoding="utf-8", errors="replace")
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield out, chunks
    finally:
        out.close()
        reader.join(timeout=5)
        os.close(master)


def _text(chunks: list[bytes]) -> str:
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def _refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if type(t).__name__ == "_RefreshThread"]


@pytest.mark.anyio
async def test_issue_12_item_2_plain_lines_when_not_a_terminal(anyio_backend: Any) -> None:
    file = io.StringIO()
    events: list[Any] = []
    display = ProgressDisplay(file)

    def both(event: Any) -> None:
        events.append(event)
        display(event)

    with pytest.raises(FlowError):
        await _flow(3).run(limiters={"llm": 2}, error_handling="continue", on_event=both)
    assert file.getvalue().splitlines() == [str(ev) for ev in events]
    assert display.frames == 0
    assert repr(display) == "<trioflow.ProgressDisplay idle>"


@pytest.mark.trio
async def test_issue_12_item_2_live_panel_on_a_terminal(autojump_clock: trio.testing.MockClock) -> None:
    events: list[Any] = []
    with terminal() as (tty, chunks):
        display = ProgressDisplay(tty)

        def both(event: Any) -> None:
            events.append(event)
            display(event)

        with pytest.raises(FlowError):
            await _flow(50).run(limiters={"llm": 4}, error_handling="continue", on_event=both)
        # it stopped by itself at RunFinished: no refresh thread left, one final frame drawn
        assert display._live is None
        assert _refresh_threads() == []
        frames = display.frames
    # redrawn on its own timer, not per event: a handful of frames for ~110 events
    assert len(events) > 100
    assert 2 <= frames < 20
    text = _text(chunks)
    final = text[text.rindex("trioflow progress") :]
    assert "50/50 items" in final
    assert "limiter llm" in final
    assert "0/4 held" in final
    assert "failed" in final
    assert "1 skipped" in final
    assert "5/6 done" not in final  # bad failed, child skipped: 4 of 6 done
    assert "4/6 done" in final
    assert final.rstrip().splitlines()[0].rstrip().endswith("failed")


@pytest.mark.anyio
async def test_issue_12_item_2_redraws_on_its_own_schedule(anyio_backend: Any) -> None:
    flow = Flow("slow")

    @flow.step(limiter="api")
    async def wait() -> None:
        await anyio.sleep(0.8)  # real time on asyncio; virtual on trio (no frames in between)

    with terminal() as (tty, chunks):
        display = ProgressDisplay(tty, refresh_per_second=20)
        await flow.run(limiters={"api": 1}, on_event=display)
        frames = display.frames
    assert _refresh_threads() == []
    if anyio_backend == "asyncio":
        assert frames >= 4  # the timer redrew while nothing happened (4 events in all)
    assert "1/1 done" in _text(chunks)
    assert "succeeded" in _text(chunks)


@pytest.mark.trio
async def test_issue_12_item_2_stops_at_outside_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("forever")

    @flow.step
    async def forever() -> None:
        await trio.sleep(100)

    with terminal() as (tty, chunks):
        display = ProgressDisplay(tty)
        with trio.move_on_after(5):
            await flow.run(on_event=display)
        assert display._live is None
        assert _refresh_threads() == []
    assert "cancelled" in _text(chunks)


def test_issue_12_item_2_plain_without_rich() -> None:
    # rich not installed: even on a terminal, one line per event
    script = textwrap.dedent(
        """
        import os, sys
        sys.modules["rich"] = None  # import rich now raises ImportError
        import trio, trio.testing, trioflow
        master, slave = os.openpty()
        tty = os.fdopen(slave, "w")
        assert tty.isatty()
        flow = trioflow.Flow("norich")

        @flow.step
        async def a() -> int:
            return 1

        display = trioflow.ProgressDisplay(tty)
        trio.run(lambda: flow.run(on_event=display), clock=trio.testing.MockClock(autojump_threshold=0))
        tty.close()
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
        print(out.decode().replace("\\r", ""), end="")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[+   0.000s] started  norich: 1 steps",
        "[+   0.000s] start    a (attempt 1)",
        "[+   0.000s] done     a in 0.000s (attempt 1)",
        "[+   0.000s] finished norich in 0.000s (ok)",
    ]


def test_issue_12_item_2_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"^ProgressDisplay\(file=...\) takes a text file such as sys.stderr \(got 3\)$"):
        ProgressDisplay(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^ProgressDisplay\(refresh_per_second=...\) must be a number in \(0, 60\] \(got 0\)$"):
        ProgressDisplay(refresh_per_second=0)


@pytest.mark.trio
async def test_issue_12_item_2_failed_items_of_a_step_that_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("lenient")

    @flow.step(map_over="xs", on_item_error="none")
    async def each(xs: int) -> int:
        await trio.sleep(1)
        if xs % 2:
            raise ValueError(xs)
        return xs

    with terminal() as (tty, chunks):
        display = ProgressDisplay(tty)
        result = await flow.run({"xs": [0, 1, 2, 3]}, on_event=display)
    assert result["each"] == [0, None, 2, None]
    final = _text(chunks)
    final = final[final.rindex("trioflow lenient") :]
    assert "4/4 items, 2 failed" in final
    assert "1/1 done" in final  # the step itself succeeded
    assert " failed" not in final.splitlines()[0]
