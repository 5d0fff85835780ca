"""``trioflow.Timeline``: a picture of what a run did, when, side by side.

A timeline is made from a run's result (:meth:`RunResult.timeline
<trioflow.RunResult.timeline>`) or from its events (:meth:`Timeline.from_events`)
and drawn as text, SVG or a self-contained HTML page. The model is small:

* a *unit* is a plain step or one map item; its *bars* are its attempts and
  the waits before its retries, in seconds since the run started;
* each step's *ready* time is when its last dependency finished: the gap up to
  its first start is time spent waiting for capacity (a limiter, the run's
  ``max_concurrent``), drawn as a thin line;
* the *critical path* is the chain of steps that decided the run's length:
  from the step that finished last, back through the dependency that finished
  last, to a step with none;
* a *track* per limiter shows how many units held it over time, against its
  capacity.

Drawing is pure and synchronous; nothing here runs a flow.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

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
from ._results import RunResult, StepResult, StepStatus

if TYPE_CHECKING:
    from ._flow import Flow

# a map step with more items than fit collapses into one row (see Timeline.to_svg)
MAX_ROWS = 300

_COLORS = {
    "succeeded": "#43a047",
    "failed": "#e53935",
    "retried": "#fb8c00",
    "backoff": "#ffe0b2",
    "cancelled": "#9e9e9e",
}
_MARKS = {"succeeded": "#", "failed": "x", "retried": "x", "backoff": ".", "cancelled": "!"}
# which status wins a text cell that several bars share
_PRECEDENCE = ("backoff", "cancelled", "succeeded", "retried", "failed")


@attrs.frozen
class _Bar:
    start: float
    end: float
    status: str  # succeeded | failed | retried | backoff | cancelled
    attempt: int


@attrs.frozen
class _Unit:
    step: str
    item: int | None
    bars: tuple[_Bar, ...]


@attrs.frozen
class _Row:
    step: str
    item: int | None  # None: a plain step, or a collapsed map step
    units: tuple[_Unit, ...]
    label: str
    count: int = 0  # items in a collapsed row


@attrs.frozen
class _Track:
    name: str
    capacity: float | None
    levels: tuple[tuple[float, int], ...]  # (time, units holding it from then on)

    @property
    def peak(self) -> int:
        return max((n for _, n in self.levels), default=0)


class Timeline:
    """What a run did over time: one row per step or map item.

    Make one with :meth:`RunResult.timeline <trioflow.RunResult.timeline>` or
    :meth:`from_events`, then draw it with :meth:`to_text`, :meth:`to_svg`,
    :meth:`to_html` or :meth:`save`. Times are seconds since the run started.

    Attributes:
        flow: the flow's name.
        duration: the run's length in seconds.
        critical_path: the steps that decided the run's length, first to last
            (empty when the dependencies are not known: a result loaded from a
            store, or events without ``flow=``).
        statuses: each step's final status, in declaration order
            (``"restored"`` for a step a store had already recorded).
    """

    def __init__(
        self,
        flow: str,
        duration: float,
        statuses: Mapping[str, str],
        units: Sequence[_Unit],
        deps: Mapping[str, tuple[str, ...]] | None,
        limiters: Mapping[str, tuple[float | None, tuple[str, ...] | None]],
    ) -> None:
        self.flow: str = flow
        self.duration: float = max(duration, 0.0)
        self.statuses: Mapping[str, str] = dict(statuses)
        self._units = tuple(units)
        self._deps = deps
        ends: dict[str, float] = {}
        starts: dict[str, float] = {}
        for unit in self._units:
            for bar in unit.bars:
                ends[unit.step] = max(ends.get(unit.step, bar.end), bar.end)
                starts[unit.step] = min(starts.get(unit.step, bar.start), bar.start)
        self._ends = ends
        self._starts = starts
        self.critical_path: tuple[str, ...] = self._critical_path()
        # the units on the critical path: of a map step, the items that finished last
        self._critical = {
            (u.step, u.item)
            for u in self._units
            if u.step in self.critical_path and u.bars and max(b.end for b in u.bars) == ends[u.step]
        }
        self._tracks = tuple(self._track(name, cap, steps) for name, (cap, steps) in limiters.items())

    def __repr__(self) -> str:
        return (
            f"<trioflow.Timeline of flow {self.flow!r}: {len(self.statuses)} steps, "
            f"{len(self._units)} rows before collapsing, {self.duration:.3f}s>"
        )

    # -- making one -------------------------------------------------------------------

    @classmethod
    def from_result(cls, result: RunResult) -> Timeline:
        """The timeline of a run's result (what :meth:`RunResult.timeline` returns)."""
        if not isinstance(result, RunResult):
            raise TypeError(f"Timeline.from_result() takes a trioflow.RunResult (got {result!r})")
        origin = result.started_at
        end = result.finished_at - origin
        trace = result._trace
        retries: dict[tuple[str, int | None], list[list[Any]]] = {}
        restored: frozenset[str] = frozenset()
        deps: dict[str, tuple[str, ...]] | None = None
        limiters: dict[str, tuple[float | None, tuple[str, ...] | None]] = {}
        mapped: set[str] = set()
        if trace is not None:
            for entry in trace.retries:
                retries.setdefault((entry[0], entry[1]), []).append(entry)
            restored = trace.restored
            nodes = trace.plan.nodes
            deps = {n.spec.name: tuple(nodes[d].spec.name for d in n.deps) for n in nodes}
            mapped = {n.spec.name for n in nodes if n.spec.map_over is not None}
            for name, cap in trace.limiters.items():
                users = None if name == "max_concurrent (run)" else tuple(
                    n.spec.name for n in nodes if name in n.spec.limiters
                )
                limiters[name] = (cap, users)
        statuses: dict[str, str] = {}
        units: list[_Unit] = []
        for name, step in result.steps.items():
            was_restored = name in restored or (
                trace is None and step.finished_at is not None and step.finished_at < origin
            )
            statuses[name] = "restored" if was_restored else step.status.value
            if was_restored:
                units.append(_Unit(name, None, ()))
                continue
            # each item's times (and, for a run's own result, its retries)
            items: Sequence[StepResult] | None = getattr(step, "items", None)
            if items:
                for i, item in enumerate(items):
                    units.append(_unit_of_result(name, i, item, origin, end, retries.get((name, i), [])))
            elif name in mapped:  # a map step with no items (or that never took them): nothing ran
                units.append(_Unit(name, None, ()))
            else:
                units.append(_unit_of_result(name, None, step, origin, end, retries.get((name, None), [])))
        return cls(result.flow, end, statuses, units, deps, limiters)

    @classmethod
    def from_events(cls, events: Iterable[Event], *, flow: Flow | None = None) -> Timeline:
        """The timeline of a run's events, from :class:`~trioflow.RunStarted` to :class:`~trioflow.RunFinished`.

        Events draw every attempt of every map item. Pass the run's ``flow``
        to also draw the critical path and the limiter tracks (capacities are
        not in the events: a track is scaled to its peak).

        Raises:
            ValueError: the events do not start with a ``RunStarted``.
        """
        events = list(events)
        if not events or not isinstance(events[0], RunStarted):
            first = events[0] if events else None
            raise ValueError(
                f"Timeline.from_events() needs a run's events from its RunStarted on "
                f"(got {len(events)} events, the first {first!r}); collect them with "
                f"on_event=events.append"
            )
        start = events[0]
        origin = start.time
        end = origin
        order = list(start.steps)
        statuses: dict[str, str] = {name: "cancelled" for name in order}
        for name in start.restored:
            statuses[name] = "restored"
        open_at: dict[tuple[str, int | None], tuple[float, int]] = {}
        bars: dict[tuple[str, int | None], list[_Bar]] = {}
        failed: set[str] = set()
        succeeded: set[str] = set()
        for ev in events[1:]:
            end = max(end, ev.time)
            t = ev.time - origin
            if isinstance(ev, StepStarted):
                key = (ev.step, ev.item)
                open_at[key] = (t, ev.attempt)
                unit_bars = bars.setdefault(key, [])
                if unit_bars and unit_bars[-1].status == "backoff" and unit_bars[-1].end > t:
                    unit_bars[-1] = attrs.evolve(unit_bars[-1], end=t)
            elif isinstance(ev, StepSucceeded | StepFailed | StepRetrying):
                key = (ev.step, ev.item)
                began, attempt = open_at.pop(key, (t, ev.attempt))
                if isinstance(ev, StepSucceeded):
                    bars.setdefault(key, []).append(_Bar(began, t, "succeeded", attempt))
                    succeeded.add(ev.step)
                elif isinstance(ev, StepFailed):
                    bars.setdefault(key, []).append(_Bar(began, t, "failed", attempt))
                    if ev.item is None:  # (a map step fails with its items or not: see RunFinished)
                        failed.add(ev.step)
                    else:
                        succeeded.add(ev.step)
                else:
                    bars.setdefault(key, []).append(_Bar(began, t, "retried", attempt))
                    bars[key].append(_Bar(t, t + ev.wait, "backoff", attempt))
            elif isinstance(ev, MapStarted):
                if ev.items == ev.restored:  # nothing left to run: the step succeeds at once
                    succeeded.add(ev.step)
            elif isinstance(ev, StepSkipped):
                statuses[ev.step] = "skipped"
            elif isinstance(ev, StepCancelled):
                statuses[ev.step] = "cancelled"
                for key in [k for k in open_at if k[0] == ev.step]:
                    began, attempt = open_at.pop(key)
                    bars.setdefault(key, []).append(_Bar(began, t, "cancelled", attempt))
                for key, unit_bars in bars.items():  # a retry wait cut short
                    if key[0] == ev.step and unit_bars[-1].status == "backoff" and unit_bars[-1].end > t:
                        unit_bars[-1] = attrs.evolve(unit_bars[-1], end=t)
            elif isinstance(ev, RunFinished):
                failed.update(ev.failed)
                break
        duration = end - origin
        for key, (began, attempt) in open_at.items():  # no end seen: cut at the run's end
            bars.setdefault(key, []).append(_Bar(began, duration, "cancelled", attempt))
        for name in order:
            if name in failed:
                statuses[name] = "failed"
            elif statuses[name] == "cancelled" and name in succeeded:
                statuses[name] = "succeeded"
        units: list[_Unit] = []
        for name in order:
            keys = sorted((k for k in bars if k[0] == name), key=lambda k: -1 if k[1] is None else k[1])
            if not keys:
                units.append(_Unit(name, None, ()))
            for key in keys:
                units.append(_Unit(name, key[1], tuple(bars[key])))
        deps = None
        limiters: dict[str, tuple[float | None, tuple[str, ...] | None]] = {}
        if flow is not None:
            nodes = flow.plan().nodes
            deps = {n.spec.name: tuple(nodes[d].spec.name for d in n.deps) for n in nodes}
            for n in nodes:
                for lname in n.spec.limiters:
                    limiters.setdefault(lname, (None, tuple(m.spec.name for m in nodes if lname in m.spec.limiters)))
        return cls(start.flow, duration, statuses, units, deps, limiters)

    # -- analysis -----------------------------------------------------------------------

    def _critical_path(self) -> tuple[str, ...]:
        if self._deps is None or not self._ends:
            return ()
        order = list(self.statuses)
        last = max(self._ends, key=lambda s: (self._ends[s], -order.index(s)))
        path = [last]
        while True:
            ran = [d for d in self._deps.get(path[-1], ()) if d in self._ends]
            if not ran:
                break
            path.append(max(ran, key=lambda s: (self._ends[s], -order.index(s))))
        return tuple(reversed(path))

    def _is_critical(self, row: _Row) -> bool:
        return any((u.step, u.item) in self._critical for u in row.units)

    def _ready(self, step: str) -> float | None:
        """When ``step``'s last dependency finished (None when unknown)."""
        if self._deps is None:
            return None
        ends = [self._ends[d] for d in self._deps.get(step, ()) if d in self._ends]
        return max(ends, default=0.0)

    def _track(self, name: str, capacity: float | None, steps: tuple[str, ...] | None) -> _Track:
        changes: list[tuple[float, int]] = []
        for unit in self._units:
            if unit.bars and (steps is None or unit.step in steps):
                changes.append((min(b.start for b in unit.bars), 1))
                changes.append((max(b.end for b in unit.bars), -1))
        changes.sort()  # at the same instant a release (-1) comes before an acquire (+1)
        level = 0
        levels: list[tuple[float, int]] = [(0.0, 0)]
        for t, delta in changes:
            level += delta
            if levels[-1][0] == t:
                levels[-1] = (t, level)
            else:
                levels.append((t, level))
        cap = None if capacity is None or math.isinf(capacity) else capacity
        return _Track(name, cap, tuple(levels))

    def _rows(self, max_rows: int) -> list[_Row]:
        by_step: dict[str, list[_Unit]] = {}
        for unit in self._units:
            by_step.setdefault(unit.step, []).append(unit)
        mapped = {s for s, us in by_step.items() if any(u.item is not None for u in us)}
        collapsed: set[str] = set()
        total = sum(len(us) for us in by_step.values())
        for step in sorted(mapped, key=lambda s: -len(by_step[s])):
            if total <= max_rows:
                break
            collapsed.add(step)
            total -= len(by_step[step]) - 1
        rows: list[_Row] = []
        for step, units in by_step.items():
            status = self.statuses.get(step, "")
            note = f" ({status})" if status in ("skipped", "restored") or not any(u.bars for u in units) else ""
            if step in collapsed:
                rows.append(_Row(step, None, tuple(units), f"{step} [{len(units)} items]{note}", len(units)))
                continue
            for unit in units:
                label = step if unit.item is None else f"{step}[{unit.item}]"
                rows.append(_Row(step, unit.item, (unit,), label + note))
        return rows

    # -- drawing ------------------------------------------------------------------------

    def to_text(self, width: int = 56, *, max_rows: int = MAX_ROWS) -> str:
        """An ASCII Gantt chart, ``width`` columns wide (the chart, not counting labels).

        ``#`` an attempt that succeeded, ``x`` one that failed, ``.`` the wait
        before a retry, ``!`` an attempt cut short by cancellation; ``*``
        marks the critical path; a limiter's row shows how many units held it
        (``+`` for more than nine).
        """
        if isinstance(width, bool) or not isinstance(width, int) or width < 10:
            raise ValueError(f"Timeline.to_text(width=...) must be an int >= 10 columns (got {width!r})")
        rows = self._rows(max_rows)
        total = max(self.duration, 1e-9)
        scale = width / total
        labels = [("* " if self._is_critical(r) else "  ") + r.label for r in rows]
        labels += [f"  {t.name} ({_cap(t)})" for t in self._tracks]
        head = f"{self.flow} {self.duration:.2f}s"
        label_width = max(len(head), *(len(label) for label in labels))
        lines = [f"{head:{label_width}} |0s{'':{width - 8}}{total:5.2f}s|"]
        for row, label in zip(rows, labels, strict=False):
            cells = [" "] * width
            rank = [-1] * width
            spans: list[tuple[float, float]] = []
            for unit in row.units:
                for bar in unit.bars:
                    spans.append((bar.start, bar.end))
                    first = min(width - 1, round(bar.start * scale))
                    last = max(first + 1, round(bar.end * scale))
                    r = _PRECEDENCE.index(bar.status)
                    for i in range(first, min(last, width)):
                        if r > rank[i]:
                            rank[i] = r
                            cells[i] = _MARKS[bar.status]
            when = f" {min(s[0] for s in spans):4.2f}-{max(s[1] for s in spans):4.2f}s" if spans else ""
            lines.append(f"{label:{label_width}} |{''.join(cells)}|{when}")
        for track, label in zip(self._tracks, labels[len(rows) :], strict=True):
            cells = []
            for i in range(width):
                t0, t1 = i / scale, (i + 1) / scale
                n = _peak_between(track.levels, t0, t1)
                cells.append(" " if n == 0 else (str(n) if n < 10 else "+"))
            lines.append(f"{label:{label_width}} |{''.join(cells)}| peak {track.peak}")
        return "\n".join(lines)

    def to_svg(self, *, max_rows: int = MAX_ROWS) -> str:
        """An SVG picture on a linear time axis.

        Each attempt and each retry wait is a ``<rect>`` with ``data-step``,
        ``data-item`` (map items only), ``data-status`` (``succeeded``,
        ``failed``, ``retried``, ``backoff``, ``cancelled``) and
        ``data-attempt``; its tooltip gives the times. Bars on the critical path
        have ``data-critical="true"`` and a dark outline. A map step with more
        items than fit in ``max_rows`` rows is drawn on one row, its items'
        bars overlaid and the row labelled with the count. Below the rows, one
        track per limiter shows its occupancy against its capacity.
        """
        return _Svg(self, self._rows(max_rows)).render()

    def to_html(self, *, max_rows: int = MAX_ROWS) -> str:
        """A self-contained HTML page with the SVG and a legend: no script, no network."""
        svg = self.to_svg(max_rows=max_rows)
        title = html.escape(f"trioflow timeline: {self.flow}")
        path = " \u2192 ".join(self.critical_path) or "unknown (no dependencies recorded)"
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        legend = "".join(
            f'<span class="key"><span class="swatch" style="background:{color}"></span>{name}</span>'
            for name, color in _COLORS.items()
        )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fff}"
            "h1{font-size:18px;margin:0 0 4px}p{margin:4px 0;font-size:13px}"
            ".key{margin-right:14px;font-size:12px}.swatch{display:inline-block;width:12px;"
            "height:12px;margin-right:4px;vertical-align:middle;border:1px solid #888}</style>"
            "</head><body>"
            f"<h1>{title}</h1>"
            f"<p>{self.duration:.3f} s; steps: {html.escape(summary)}</p>"
            f"<p>Critical path: {html.escape(path)}</p>"
            f"<p>{legend}</p>\n{svg}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the picture to ``path``: SVG, HTML or text by its suffix (``.svg``, ``.html``, ``.txt``).

        Returns:
            The path written, as a :class:`~pathlib.Path`.

        Raises:
            ValueError: another suffix.
        """
        target = Path(path)
        render = {".svg": self.to_svg, ".html": self.to_html, ".htm": self.to_html, ".txt": self.to_text}
        suffix = target.suffix.lower()
        if suffix not in render:
            raise ValueError(
                f"Timeline.save() writes .svg, .html or .txt files (got {str(path)!r} with suffix "
                f"{target.suffix!r}); name the file timeline.svg, timeline.html or timeline.txt"
            )
        target.write_text(render[suffix](), encoding="utf-8")
        return target


def _unit_of_result(
    step: str, item: int | None, r: StepResult, origin: float, end: float, retries: list[list[Any]]
) -> _Unit:
    if r.started_at is None:
        return _Unit(step, item, ())
    bars: list[_Bar] = []
    resume: float | None = r.started_at - origin
    for _, _, attempt, started, failed_at, wait, resumed_at in retries:
        bars.append(_Bar(started - origin, failed_at - origin, "retried", attempt))
        stop = failed_at + wait if resumed_at is None else resumed_at
        if resumed_at is None and r.finished_at is None:
            stop = min(stop, origin + end)
        bars.append(_Bar(failed_at - origin, stop - origin, "backoff", attempt))
        resume = None if resumed_at is None else resumed_at - origin
    if resume is not None:
        status = r.status
        if status is StepStatus.SUCCEEDED:
            kind = "succeeded"
        elif status is StepStatus.FAILED:
            kind = "failed"
        else:
            kind = "cancelled"
        finish = r.finished_at - origin if r.finished_at is not None else end
        bars.append(_Bar(resume, max(finish, resume), kind, max(r.attempts, len(retries) + 1)))
    return _Unit(step, item, tuple(bars))


def _cap(track: _Track) -> str:
    if track.capacity is None:
        return f"peak {track.peak}"
    cap = track.capacity
    return f"{cap:g}" if not float(cap).is_integer() else f"{int(cap)}"


def _peak_between(levels: Sequence[tuple[float, int]], t0: float, t1: float) -> int:
    peak = 0
    current = 0
    for t, n in levels:
        if t <= t0:
            current = n
        elif t < t1:
            peak = max(peak, n)
        else:
            break
    return max(peak, current)


def _nice_step(total: float, ticks: int = 8) -> float:
    raw = max(total, 1e-9) / ticks
    power: float = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power  # pragma: no cover


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


class _Svg:
    """Lays a timeline out on a linear time axis: x = left + t * scale."""

    WIDTH = 960  # the chart's width in pixels, labels not included

    def __init__(self, timeline: Timeline, rows: list[_Row]) -> None:
        self.tl = timeline
        self.rows = rows
        self.row_h = 18 if len(rows) <= 300 else 12
        self.font = 12 if self.row_h == 18 else 9
        labels = [r.label for r in rows] + [f"{t.name} ({_cap(t)})" for t in timeline._tracks]
        self.left = 16 + int(max((len(s) for s in labels), default=4) * self.font * 0.62)
        self.top = 44
        self.scale = self.WIDTH / max(timeline.duration, 1e-9)

    def x(self, t: float) -> float:
        return round(self.left + max(t, 0.0) * self.scale, 2)

    def render(self) -> str:
        tl = self.tl
        out: list[str] = []
        rows_h = len(self.rows) * self.row_h
        track_h = 34
        height = self.top + rows_h + 12 + len(tl._tracks) * (track_h + 8) + 10
        width = self.left + self.WIDTH + 60
        out.append(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="{self.font}" '
            f'data-flow="{html.escape(tl.flow, quote=True)}" data-duration="{tl.duration!r}" '
            f'data-left="{self.left}" data-scale="{self.scale!r}">'
        )
        out.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')
        self._axis(out, rows_h)
        for i, row in enumerate(self.rows):
            y = self.top + i * self.row_h
            if i % 2:
                out.append(f'<rect x="0" y="{y}" width="{width}" height="{self.row_h}" fill="#f7f7f7"/>')
            weight = ' font-weight="bold"' if tl._is_critical(row) else ""
            out.append(
                f'<text x="8" y="{y + self.row_h - 5}"{weight}>{html.escape(row.label)}</text>'
            )
            ready = tl._ready(row.step)
            starts = [b.start for u in row.units for b in u.bars]
            if ready is not None and starts and min(starts) - ready > 1e-9:
                mid = y + self.row_h / 2
                out.append(
                    f'<line class="queued" x1="{self.x(ready)}" y1="{mid}" x2="{self.x(min(starts))}" '
                    f'y2="{mid}" stroke="#757575" stroke-dasharray="2,2"><title>'
                    f"{html.escape(row.label)} waited {min(starts) - ready:.3f}s for capacity</title></line>"
                )
            opacity = ' fill-opacity="0.35"' if row.count else ""
            for unit in row.units:
                for bar in unit.bars:
                    out.append(self._bar(unit, bar, y, (unit.step, unit.item) in tl._critical, opacity))
        y = self.top + rows_h + 12
        for track in tl._tracks:
            self._track(out, track, y, track_h)
            y += track_h + 8
        out.append("</svg>")
        return "\n".join(out)

    def _axis(self, out: list[str], rows_h: int) -> None:
        tl = self.tl
        step = _nice_step(tl.duration)
        n = 0
        while n * step <= tl.duration + 1e-9:
            t = n * step
            x = self.x(t)
            out.append(f'<line x1="{x}" y1="{self.top - 6}" x2="{x}" y2="{self.top + rows_h}" stroke="#e0e0e0"/>')
            out.append(f'<text x="{x}" y="{self.top - 10}" text-anchor="middle">{_num(t)}s</text>')
            n += 1
        out.append(
            f'<text x="8" y="14" font-weight="bold">{html.escape(tl.flow)}: {tl.duration:.3f}s</text>'
        )

    def _bar(self, unit: _Unit, bar: _Bar, y: int, critical: bool, opacity: str) -> str:
        x0 = self.x(bar.start)
        w = max(round(self.x(bar.end) - x0, 2), 1.0)
        item = "" if unit.item is None else f' data-item="{unit.item}"'
        label = unit.step if unit.item is None else f"{unit.step}[{unit.item}]"
        outline = ' stroke="#222" stroke-width="1.5" data-critical="true"' if critical else ""
        tip = f"{label} attempt {bar.attempt} {bar.status}: {bar.start:.3f}-{bar.end:.3f}s"
        return (
            f'<rect x="{x0}" y="{y + 3}" width="{w}" height="{self.row_h - 6}" '
            f'fill="{_COLORS[bar.status]}"{opacity}{outline} data-step="{html.escape(unit.step, quote=True)}"'
            f'{item} data-status="{bar.status}" data-attempt="{bar.attempt}" '
            f'data-start="{bar.start!r}" data-end="{bar.end!r}"><title>{html.escape(tip)}</title></rect>'
        )

    def _track(self, out: list[str], track: _Track, y: int, h: int) -> None:
        top = max(track.capacity or 0, track.peak, 1)
        base = y + h

        def ty(n: float) -> float:
            return round(base - n / top * (h - 4), 2)

        out.append(f'<text x="8" y="{y + h / 2 + 4}">{html.escape(track.name)} ({_cap(track)})</text>')
        out.append(
            f'<rect x="{self.left}" y="{y}" width="{self.WIDTH}" height="{h}" fill="#fafafa" stroke="#e0e0e0"/>'
        )
        points = [f"{self.x(0)},{base}"]
        level = 0
        for t, n in track.levels:
            points.append(f"{self.x(t)},{ty(level)}")
            points.append(f"{self.x(t)},{ty(n)}")
            level = n
        points.append(f"{self.x(self.tl.duration)},{ty(level)}")
        points.append(f"{self.x(self.tl.duration)},{base}")
        out.append(
            f'<polygon class="occupancy" data-limiter="{html.escape(track.name, quote=True)}" '
            f'points="{" ".join(points)}" fill="#90caf9" stroke="#1e88e5"/>'
        )
        if track.capacity is not None:
            cy = ty(track.capacity)
            out.append(
                f'<line x1="{self.left}" y1="{cy}" x2="{self.left + self.WIDTH}" y2="{cy}" '
                f'stroke="#c62828" stroke-dasharray="4,3"><title>capacity {_cap(track)}</title></line>'
            )


public_home(Timeline)  # trioflow imports it when first used
