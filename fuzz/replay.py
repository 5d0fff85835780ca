"""Replay a failing fuzz example saved in ``fuzz/failures/``.

Usage::

    python fuzz/replay.py fuzz/failures/matches_sequential.json

Rebuilds the flow, runs it once under the saved schedule and options with
:func:`trioflow.testing.run_deterministic`, and prints each step's status,
attempts, times and output, next to what running the steps one by one gives.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from trioflow.testing import run_deterministic
from trioflow.testing.strategies import FlowCase


def main(path: str) -> None:
    record = json.loads(Path(path).read_text())
    case = FlowCase.from_json(record["case"])
    params = dict(record["params"])
    schedule = params.pop("schedule", [])
    seed = params.pop("seed", None)
    options = {
        k: params[k] for k in ("max_concurrent", "limiters", "error_handling") if k in params
    }
    print(f"check {record['check']!r} failed with: {record['error']}")
    print(f"flow: {case.flow.describe()}")
    print(f"inputs: {case.inputs!r}; options: {options!r}; schedule={schedule!r}; seed={seed!r}")
    run = functools.partial(case.run_settled, **options)
    result = run_deterministic(run, schedule=schedule, seed=seed).value
    expected = case.sequential()
    for name, step in result.steps.items():
        print(
            f"  {name}: {step.status.value} attempts={step.attempts} "
            f"[{step.started_at}, {step.finished_at}] value={step.value!r}   "
            f"one-by-one: {expected[name]!r}"
        )
    print(f"duration {result.duration!r}; critical path {case.critical_path!r}")


if __name__ == "__main__":
    main(sys.argv[1])
