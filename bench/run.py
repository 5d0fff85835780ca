"""trioflow benchmarks: what a step costs, as ratios to hand-written baselines in the same process.

Every case times trioflow and its baseline (raw trio or asyncio written by
hand, the same flow without a store or observer, ...) alternately in the same
process, over at least 5 repetitions, so a slow spell of a busy machine hits
both alike. The table gives the medians of the two, the ratio of each
repetition's pair as min/median/max (below 1.0x: trioflow is cheaper), the
same ratio by the process's CPU time where the case measures it, the target,
and whether the median meets it. Rows with no baseline give their own figure
as min/median/max. Ratios are judged on the wall clock; absolute figures
(BUILD's µs per step, SLEEP's share) on CPU time, and their target says
"(CPU)": a busy machine's wall clock adds however long the process waited for
a core. Timings are noisy on a shared machine; the spread says how much.

    python bench/run.py              # every case, 9 repetitions
    python bench/run.py --quick      # 5 repetitions (and fewer elsewhere): a few minutes
    python bench/run.py --rst        # also print the table as an RST csv-table (docs/design.rst)
    python bench/run.py --only CORE YIELD   # only the cases named
    python bench/run.py --only YIELD --profile   # where the time goes (cProfile, to stderr)

Cases (--only takes these names; the modules, in bench/, run alone too):

CORE       core_case: W1 fan-out of N no-op steps + a join, W1m the same with
           max_concurrent=50, W2 chain of N steps, W3 fail-fast latency, MAP
           trioflow.map: against raw trio
YIELD      yielding_case: fan-out of 1k/10k/100k steps that each await
           trio.sleep(0) once, against raw trio
ASYNCIO    asyncio_case: W1 and W2 under asyncio.run, against asyncio written by hand
CANCEL     outside_cancel_case: a 10k-step fan-out cancelled from outside mid-run,
           against raw trio and against finishing
STARTUP    startup_case: BUILD add+plan per step; IMPORT trioflow against import trio
SLEEP      sleep_chain_case: chain of 20 steps sleeping 10 ms (real clock): trioflow's
           own share of the time
MAPSTARVE  map_starvation_case: trioflow.map over items that never await: a sibling's
           turns, cancellation within 16 items
STORE      store_case: W1/W2/W4 recording to an SQLiteStore, against no store
POSTGRES   store_case: W1/W2 recording to a PostgresStore on a loopback server (when
           psycopg and Debian's postgresql are there), against no store
LIMITS     limits_case: RATE/KEYED, W1 with a huge-rate RateLimit / a 100-key
           KeyedLimiter against plain W1; PIPE, virtual makespan of a two-stage map,
           pipelined against whole-list
OBS        observers_case: W1 with a ProgressDisplay, OpenTelemetry spans, open_run's
           event stream, against none
RUNNERS    runners_case: CPU/OVH/KILL, where steps run: threads, processes, Dask

The harness (bench/harness_case.py), the 100k cancellation (bench/cancel_case.py)
and map memory (bench/map_memory_case.py) run separately; ``nox -s bench`` runs them all.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import importlib.util
import os
import pstats
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))

from measure import (
    NONE,
    Row,
    Target,
    alternate,
    at_most,
    below,
    compared,
    failed,
    render,
    render_rst,
    skipped,
)

import trioflow

N = 2000


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # (its parent package is missing)
        return False


# -- the cases that need an adapter here ----------------------------------------------------


def core_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from core_case import bench_core

    return trio.run(bench_core, n, repeats)


def yielding_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from yielding_case import bench_yielding

    return trio.run(bench_yielding, repeats)


def asyncio_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from asyncio_case import bench_asyncio

    return bench_asyncio(n, repeats)


def cancel_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from outside_cancel_case import bench_outside_cancel

    return trio.run(bench_outside_cancel, repeats)


def startup_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from startup_case import bench_build, bench_import

    return bench_build(n, repeats) + bench_import(repeats)


def sleep_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from sleep_chain_case import bench_sleep_chain

    return trio.run(bench_sleep_chain, 7 if quick else 15)  # noisy: a few more


def starvation_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from map_starvation_case import bench_map_starvation

    return trio.run(bench_map_starvation, repeats)


def store_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from store_case import store_samples

    t = trio.run(store_samples, n, repeats)
    rows = []
    for w, what, target in (
        ("w1", "W1", at_most(2.0)),
        ("w2", "W2", at_most(2.0)),
        ("w4", "W4 100 runs at once", NONE),
    ):
        rows.append(
            compared(f"STORE {what}: SQLiteStore vs no store", t[f"{w}_sqlite"], t[f"{w}_none"], scale=1,
                     base_note=" (no store)", target=target)
        )
    return rows


def postgres_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    from store_case import postgres_samples

    if not installed("psycopg"):
        return [skipped("STORE PostgresStore", "psycopg missing (pip install 'trioflow[postgres]')")]
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return [skipped("STORE PostgresStore", "no PostgreSQL server (apt-get install postgresql)")]
    sys.path.append(str(Path(__file__).parent.parent / "tests"))
    from _postgres import Server  # type: ignore[import-not-found]

    server = Server(durable=True)  # a loopback server
    try:
        pg = trio.run(postgres_samples, n, server.new_database(), repeats)
    finally:
        server.stop()
    return [
        compared(f"STORE {what}: PostgresStore (loopback) vs no store", pg[f"{w}_postgres"], pg[f"{w}_none"],
                 scale=1, base_note=" (no store)")
        for w, what in (("w1", "W1"), ("w2", "W2"))
    ]


def limits_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    """RATE/KEYED (issue 13 asks that they cost little; no figure) and PIPE."""
    from limits_case import gate_cases, pipeline_makespans

    cases = gate_cases(n)
    cpu: dict[str, list[float]] = {}
    t = trio.run(partial(alternate, cases, repeats, cpu=cpu))
    scale = 1e6 / (n + 1)
    little = Target("little (no figure)")
    rows = [
        compared("RATE W1, huge-rate RateLimit vs plain W1", t["rate"], t["plain"], scale=scale,
                 base_note=" (plain)", target=little, cpu=(cpu["rate"], cpu["plain"])),
        compared("KEYED W1, 100-key KeyedLimiter vs plain W1", t["keyed"], t["plain"], scale=scale,
                 base_note=" (plain)", target=little, cpu=(cpu["keyed"], cpu["plain"])),
    ]
    # virtual time: exact, so the repetitions agree (they show that it is deterministic)
    spans = [pipeline_makespans() for _ in range(repeats)]
    for limit in (None, 50):
        ours = [s[f"pipelined, max_concurrent={limit}"] for s in spans]
        whole = [s[f"whole list, max_concurrent={limit}"] for s in spans]
        rows.append(
            compared(f"PIPE 1000 items, max_concurrent={limit} (virtual s)", ours, whole, scale=1, unit="s",
                     fmt=".1f", base_note=" (whole list)", target=below(1.0))
        )
    return rows


def observer_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    missing = [name for name in ("rich", "opentelemetry.sdk") if not installed(name)]
    if missing:
        return [skipped("OBS W1 + observers", f"{', '.join(missing)} missing (pip install 'trioflow[rich,otel]' "
                                              "opentelemetry-sdk)")]
    from core_case import build_fanout
    from observers_case import bench_observers

    return trio.run(bench_observers, build_fanout(n), n, repeats)


def runner_rows(n: int, repeats: int, quick: bool) -> list[Row]:
    missing = [name for name in ("distributed",) if not installed(name)]
    if missing:
        return [skipped("CPU/OVH/KILL runners", f"{', '.join(missing)} missing (pip install 'trioflow[dask]')")]
    from runners_case import bench_runners

    return trio.run(bench_runners, repeats, 0.1 if quick else 0.2)


CASES: dict[str, Callable[[int, int, bool], list[Row]]] = {
    "CORE": core_rows,
    "YIELD": yielding_rows,
    "ASYNCIO": asyncio_rows,
    "CANCEL": cancel_rows,
    "STARTUP": startup_rows,
    "SLEEP": sleep_rows,
    "MAPSTARVE": starvation_rows,
    "STORE": store_rows,
    "POSTGRES": postgres_rows,
    "LIMITS": limits_rows,
    "OBS": observer_rows,
    "RUNNERS": runner_rows,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions instead of 9: a few minutes")
    parser.add_argument("-n", type=int, default=N, help=f"steps of the W1/W2-shaped workloads (default {N})")
    parser.add_argument("--rst", action="store_true", help="also print the table as an RST csv-table")
    parser.add_argument("--only", nargs="+", metavar="CASE", choices=sorted(CASES), help="run only these cases")
    parser.add_argument(
        "--profile", action="store_true",
        help="print each case's cProfile (top 25 by own time) to stderr; its figures are then inflated",
    )
    args = parser.parse_args()
    repeats = 5 if args.quick else 9
    load = os.getloadavg()[0]
    began = time.perf_counter()
    rows: list[Row] = []
    status = 0
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        profile = cProfile.Profile() if args.profile else None
        try:
            if profile is not None:
                profile.enable()
            try:
                rows.extend(case(args.n, repeats, args.quick))
            finally:
                if profile is not None:
                    profile.disable()
                    pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        except Exception as exc:  # the table still prints; the exit status says something broke
            traceback.print_exc()
            rows.append(failed(name, exc))
            status = 1
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    judged = [r for r in rows if r.holds]
    print(
        f"trio {trio.__version__}, trioflow {trioflow.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{repeats} repetitions, {time.perf_counter() - began:.0f} s (wall clock: noisy when the machine is busy)"
    )
    print(render(rows))
    met = sum(r.holds == "yes" for r in judged)
    print(f"targets met (judged on the median): {met} of {len(judged)}")
    if args.rst:
        print()
        print(render_rst(rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
