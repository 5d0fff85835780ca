"""What every bench case shares: interleaved timing, spreads, targets and table rows.

A case times trioflow and its baseline alternately in the same process
(``alternate``), so a slow spell of a busy machine hits both alike, and turns
the samples into a :class:`Row`: the medians of the two, the ratio of each
repetition's pair as min/median/max, the target, and whether the median meets
it. Rows without a baseline show the figure itself as min/median/max.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """A bench target: how it reads in the table, and the test of a median."""

    text: str
    test: Callable[[float], bool] | None = None

    def judge(self, median: float) -> str:
        if self.test is None:
            return ""
        return "yes" if self.test(median) else "NO"


NONE = Target("-")


def at_most(limit: float, unit: str = "x", note: str = "") -> Target:
    return Target(f"<= {_num(limit)}{_sep(unit)}{unit}{note}", lambda v: v <= limit)


def below(limit: float, unit: str = "x", note: str = "") -> Target:
    return Target(f"< {_num(limit)}{_sep(unit)}{unit}{note}", lambda v: v < limit)


def _num(x: float) -> str:
    return f"{x:.1f}" if x < 2 and round(x, 1) == x else f"{x:g}"


def _sep(unit: str) -> str:
    return "" if unit in ("x", "%") else " "


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    workload: str
    ours: str
    base: str
    ratio: str
    target: str
    holds: str
    cpu: str = ""  # the ratio (or figure) by the process's CPU time, where the case measured it


def spread(values: Sequence[float], fmt: str = ".2f", unit: str = "") -> str:
    """``min/median/max`` of ``values``."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{lo:{fmt}}/{mid:{fmt}}/{hi:{fmt}}{unit}"


def compared(
    workload: str,
    ours: Sequence[float],
    base: Sequence[float],
    *,
    target: Target = NONE,
    scale: float = 1e6,
    unit: str = "µs",
    fmt: str = ".2f",
    base_note: str = "",
    judge_ours: bool = False,
    cpu: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Row:
    """A row for paired samples (seconds, or any figure): medians and the ratio's spread.

    ``scale`` turns a sample into the figure shown (1e6 / steps for µs per step).
    The ratio of repetition *i* is ``ours[i] / base[i]``; the target judges the
    median ratio, or with ``judge_ours`` the median of trioflow's figure.
    ``cpu`` gives the CPU seconds of the same calls (ours, base), shown as a
    ratio of its own.
    """
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    sep = _sep(unit)
    mine = statistics.median(ours) * scale
    return Row(
        workload,
        f"{mine:{fmt}}{sep}{unit}",
        f"{statistics.median(base) * scale:{fmt}}{sep}{unit}{base_note}",
        spread(ratios, unit="x"),
        target.text,
        target.judge(mine if judge_ours else statistics.median(ratios)),
        "" if cpu is None else spread([o / b for o, b in zip(*cpu, strict=True)], unit="x"),
    )


def figure(
    workload: str,
    values: Sequence[float],
    *,
    target: Target = NONE,
    unit: str = "µs",
    fmt: str = ".2f",
    base: str = "-",
    cpu: Sequence[float] | None = None,
    judge_cpu: bool = False,
) -> Row:
    """A row for one figure with no baseline (already scaled): its spread, judged by its median.

    ``cpu`` gives the same figure measured in CPU time; with ``judge_cpu`` the
    target judges that one (an absolute figure, which the wall clock of a busy
    machine inflates by however long the process waited for a core).
    """
    judged = cpu if judge_cpu and cpu is not None else values
    return Row(
        workload,
        spread(values, fmt, f"{_sep(unit)}{unit}"),
        base,
        "-",
        target.text + (" (CPU)" if judged is cpu and target.test is not None else ""),
        target.judge(statistics.median(judged)),
        "" if cpu is None else spread(cpu, fmt, f"{_sep(unit)}{unit}"),
    )


def skipped(workload: str, why: str) -> Row:
    """A row for a case that cannot run here (an optional extra is missing)."""
    return Row(workload, f"skipped: {why}", "", "", "", "")


def failed(workload: str, exc: BaseException) -> Row:
    """A row for a case that raised: the table still prints, and the run exits non-zero."""
    return Row(workload, f"FAILED: {type(exc).__name__}: {exc}"[:120], "", "", "", "")


async def alternate(
    cases: Mapping[str, Callable[[], Awaitable[Any]]],
    repeats: int,
    *,
    warm_up: bool = True,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each case, the cases taking turns within each repetition.

    Works under trio and asyncio alike (it only awaits the cases). With
    ``cpu``, the process's CPU seconds of each call go there too, by case.
    """
    if warm_up:
        for fn in cases.values():
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    if cpu is not None:
        cpu.update({name: [] for name in cases})
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            used = time.process_time()
            start = time.perf_counter()
            await fn()
            samples[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu[name].append(time.process_time() - used)
    return samples


HEADER = Row("workload", "trioflow", "baseline", "ratio min/median/max", "target", "met", "by CPU time")
COLUMNS = ("workload", "ours", "base", "ratio", "cpu", "target", "holds")  # the order they print in


def _cells(row: Row) -> tuple[str, ...]:
    return tuple(getattr(row, c) for c in COLUMNS)


def _is_note(row: Row) -> bool:
    return row.ours.startswith(("skipped: ", "FAILED: "))


def render(rows: Sequence[Row]) -> str:
    """The table as aligned plain text (a skipped or failed case's note runs past the columns)."""
    cells = [_cells(r) for r in (HEADER, *rows) if not _is_note(r)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    out = []
    for i, r in enumerate((HEADER, *rows)):
        if _is_note(r):
            out.append(f"{r.workload.ljust(widths[0])}  {r.ours}")
            continue
        out.append("  ".join(v.ljust(w) for v, w in zip(_cells(r), widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_rst(rows: Sequence[Row]) -> str:
    """The table as an RST ``csv-table``, to paste into docs/design.rst."""

    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    out = [".. csv-table::", "   :header: " + ", ".join(cell(h) for h in _cells(HEADER)), ""]
    out.extend("   " + ", ".join(cell(v) for v in _cells(r)) for r in rows)
    return "\n".join(out)
