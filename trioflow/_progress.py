"""``trioflow.ProgressDisplay``: a live view of a run, as an ``on_event`` observer.

The observer only counts: each event updates a few integers and sets, in the
scheduler's thread, in constant time. Drawing is someone else's job:

* on a terminal, with `rich <https://rich.readthedocs.io>`_ installed (the
  ``trioflow[rich]`` extra), a :class:`rich.live.Live` display redraws on its
  own timer (rich's refresh thread, a few times a second), never per event,
  and stops by itself at :class:`~trioflow.RunFinished` with a final frame;
* otherwise (a file, a pipe, a CI log, or no rich), one line per event is
  written to ``file``: the event's ``str()``.

The refresh thread only reads the counts. Every container it reads is made at
:class:`~trioflow.RunStarted` with its final set of keys, so it never sees a
dict change size; a value it reads may be one event old, which a display
redrawn four times a second does not mind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ._events import (
    Event,
    MapStarted,
    RunFinished,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from ._public import public_home

# at most this many running steps are listed by name; the rest are counted
_SHOWN = 8


class _State:
    """What the display shows, kept up to date by events (the scheduler's thread only writes)."""

    def __init__(self, event: RunStarted) -> None:
        self.flow = event.flow
        self.run_id = event.run_id
        self.began = time.monotonic()
        self.elapsed = 0.0
        self.steps = event.steps
        self.total = len(event.steps)
        # per step: units running now, and the step's state
        self.running: dict[str, int] = dict.fromkeys(event.steps, 0)
        self.status: dict[str, str] = dict.fromkeys(event.steps, "waiting")
        for name in event.restored:
            self.status[name] = "restored"
        # map steps: [items done, items in all, items failed] (made for every step: no key is ever added)
        self.items: dict[str, list[int]] = {name: [0, -1, 0] for name in event.steps}
        self.limiters = {name: (cap, frozenset(users)) for name, (cap, users) in event.limiters.items()}
        self.held: dict[str, int] = dict.fromkeys(event.limiters, 0)
        self.uses: dict[str, tuple[str, ...]] = {
            name: tuple(lim for lim, (_, users) in self.limiters.items() if name in users) for name in event.steps
        }
        self.retrying: dict[str, int] = dict.fromkeys(event.steps, 0)
        # units of each step holding their limiters (from a first attempt's start to the last one's end)
        self.holding: dict[str, int] = dict.fromkeys(event.steps, 0)
        self.outcome: str | None = None
        self.live_clock = True  # the header's clock runs between events


class ProgressDisplay:
    """Show a run's progress live while it goes on: pass it as ``on_event=``.

    Example::

        await flow.run(inputs, on_event=trioflow.ProgressDisplay())

    On a terminal, with ``rich`` installed (``pip install trioflow[rich]``),
    it draws a live panel: steps running, done, failed, retrying and skipped;
    ``n/N`` items per map step; how many slots of each limiter are held. The
    panel redraws on its own timer (a few times a second), never per event,
    and stops by itself when the run finishes. When ``file`` is not a
    terminal, or rich is not installed, it writes one line per event to
    ``file`` instead.

    One display shows one run at a time; use one per run.

    Args:
        file: where to draw (default: standard error, looked up when the run
            starts).
    """

    def __init__(self, file: TextIO | None = None, *, refresh_per_second: float = 4.0) -> None:
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(f"ProgressDisplay(file=...) takes a text file such as sys.stderr (got {file!r})")
        if isinstance(refresh_per_second, bool) or not isinstance(refresh_per_second, int | float) or not (
            0 < refresh_per_second <= 60
        ):
            raise ValueError(
                f"ProgressDisplay(refresh_per_second=...) must be a number in (0, 60] (got {refresh_per_second!r})"
            )
        self._file = file
        self._refresh = float(refresh_per_second)
        self._state: _State | None = None
        self._live: Any = None
        self._plain: TextIO | None = None
        self.frames: int = 0  # how many times the live panel was drawn (for the curious, and the tests)

    def __repr__(self) -> str:
        mode = "live" if self._live is not None else "plain" if self._plain is not None else "idle"
        return f"<trioflow.ProgressDisplay {mode}>"

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
            return
        plain = self._plain
        if plain is not None:
            plain.write(f"{event}\n")
            if isinstance(event, RunFinished):
                plain.flush()
                self._plain = None
            return
        state = self._state
        if state is None:
            return  # not started (a display passed half-way through a run): nothing to show
        _update(state, event)
        if isinstance(event, RunFinished):
            self._stop()

    def _replay(self, events: list[Event]) -> Any:
        """The panel as it looks after ``events`` (a run's first events), drawn once (for the docs)."""
        assert isinstance(events[0], RunStarted)
        self._state = _State(events[0])
        self._state.live_clock = False
        for event in events[1:]:
            _update(self._state, event)
        return self._render()

    # -- live display ----------------------------------------------------------------

    def _start(self, event: RunStarted) -> None:
        self._stop()
        file = self._file if self._file is not None else sys.stderr
        live = None
        if _isatty(file):
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                pass
            else:
                self._state = _State(event)
                console = Console(file=file)
                live = Live(
                    _Panel(self), console=console, auto_refresh=True,
                    refresh_per_second=self._refresh, transient=False, redirect_stdout=False,
                    redirect_stderr=False,
                )
        if live is None:
            self._state = None
            self._plain = file
            file.write(f"{event}\n")
            return
        self._live = live
        live.start(refresh=True)

    def _stop(self) -> None:
        live = self._live
        if live is not None:
            self._live = None
            thread = getattr(live, "_refresh_thread", None)
            live.stop()  # draws the final frame and tells the refresh thread to end
            if thread is not None:
                # it wakes at once; at worst this waits for one frame being drawn
                thread.join()

    def _render(self) -> Any:
        """The panel, made by rich's refresh thread from the counts."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        self.frames += 1
        state = self._state
        if state is None:  # pragma: no cover - stopped between frames
            return Text("")
        status = dict(state.status)
        counts = {s: sum(1 for v in status.values() if v == s) for s in set(status.values())}
        live = state.outcome is None and state.live_clock
        elapsed = time.monotonic() - state.began if live else state.elapsed
        head = Text.assemble(
            ("trioflow ", "bold"), (state.flow, "bold cyan"), f" {elapsed:.2f}s ",
            (f" {counts.get('running', 0)} running", "yellow"),
            (f" {counts.get('done', 0) + counts.get('restored', 0)}/{state.total} done", "green"),
        )
        for key, style in (("failed", "red"), ("retrying", "dark_orange"), ("skipped", "magenta")):
            if counts.get(key):
                head.append(f" {counts[key]} {key}", style=style)
        if state.outcome is not None:
            style = {"succeeded": "bold green", "failed": "bold red"}.get(state.outcome, "bold yellow")
            head.append(f"  {state.outcome}", style=style)
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        running = [n for n in state.steps if status[n] in ("running", "retrying") and state.items[n][1] < 0]
        for name in running[:_SHOWN]:
            mark = ("retrying", "dark_orange") if status[name] == "retrying" else ("running", "yellow")
            table.add_row(Text(name), Text(mark[0], style=mark[1]), Text(""))
        if len(running) > _SHOWN:
            table.add_row(Text(f"... and {len(running) - _SHOWN} more running", style="dim"), Text(""), Text(""))
        for name in state.steps:
            done, total, failed = state.items[name]
            if total >= 0:
                colour = {"failed": "red", "done": "green"}.get(status[name], "yellow")
                bar = ProgressBar(total=max(total, 1), completed=done, width=24, complete_style=colour)
                label = f"{done}/{total} items" + (f", {failed} failed" if failed else "")
                table.add_row(Text(name), Text(label, style=colour), bar)
        for name in state.steps:
            if status[name] == "failed" and state.items[name][1] < 0:
                table.add_row(Text(name), Text("failed", style="bold red"), Text(""))
        for lim, (cap, _) in state.limiters.items():
            held = state.held[lim]
            shown = "∞" if cap == float("inf") else f"{cap:g}"
            bar = ProgressBar(total=max(cap if cap != float("inf") else held, 1), completed=held, width=24)
            table.add_row(Text(f"limiter {lim}", style="cyan"), Text(f"{held}/{shown} held"), bar)
        return Group(head, table)


def _update(state: _State, event: Event) -> None:
    """Count one event (in the scheduler's thread): a dict lookup and a few integer updates."""
    state.elapsed = event.elapsed
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)


def _started(state: _State, event: Any) -> None:
    name = event.step
    state.running[name] += 1
    state.status[name] = "running"
    if event.attempt > 1:
        state.retrying[name] = max(state.retrying[name] - 1, 0)
    else:
        state.holding[name] += 1
        for lim in state.uses[name]:
            state.held[lim] += 1


def _ended(state: _State, event: Any, failed: bool) -> None:
    name = event.step
    state.running[name] = max(state.running[name] - 1, 0)
    state.holding[name] = max(state.holding[name] - 1, 0)
    for lim in state.uses[name]:
        state.held[lim] = max(state.held[lim] - 1, 0)
    if event.item is None:
        state.status[name] = "failed" if failed else "done"
        return
    # a map item: whether the step fails with it is known at the end (on_item_error=)
    counts = state.items[name]
    counts[0] += 1
    if failed:
        counts[2] += 1
    state.status[name] = "done" if counts[0] >= counts[1] >= 0 else "running"


def _succeeded(state: _State, event: Any) -> None:
    _ended(state, event, False)


def _failed(state: _State, event: Any) -> None:
    _ended(state, event, True)


def _retrying(state: _State, event: Any) -> None:
    name = event.step  # (a unit waiting to retry keeps its slots)
    state.running[name] = max(state.running[name] - 1, 0)
    state.retrying[name] += 1
    state.status[name] = "retrying"


def _mapped(state: _State, event: Any) -> None:
    state.items[event.step][:] = [event.restored, event.items, 0]
    if event.items == event.restored:
        state.status[event.step] = "done"


def _skipped(state: _State, event: Any) -> None:
    state.status[event.step] = "skipped"


def _cancelled(state: _State, event: Any) -> None:
    name = event.step
    state.status[name] = "cancelled"
    state.running[name] = 0
    for lim in state.uses[name]:
        state.held[lim] = max(state.held[lim] - state.holding[name], 0)
    state.holding[name] = 0


def _finished(state: _State, event: Any) -> None:
    state.outcome = event.status
    for name in event.failed:
        state.status[name] = "failed"


_HANDLERS: dict[type, Callable[[_State, Any], None]] = {
    StepStarted: _started,
    StepSucceeded: _succeeded,
    StepFailed: _failed,
    StepRetrying: _retrying,
    MapStarted: _mapped,
    StepSkipped: _skipped,
    StepCancelled: _cancelled,
    RunFinished: _finished,
}


class _Panel:
    """What rich's Live draws: asks the display for a fresh picture at each refresh."""

    def __init__(self, display: ProgressDisplay) -> None:
        self._display = display

    def __rich__(self) -> Any:
        return self._display._render()


def _isatty(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):
        return False


public_home(ProgressDisplay)  # trioflow imports it when first used
