"""The flow that ``tests/test_crash.py`` runs in a subprocess and kills.

Run as ``python crash_flow.py DB LOG RUN_ID`` (DB: an SQLite file, or ``postgres:``
and a libpq connection string): prints ``ready`` just before
the run starts, then the outputs as JSON when it ends. Every execution of a
step (or map item) appends its label to LOG with ``O_APPEND``, so the test can
count executions across processes. Steps sleep for random real times (seeded
by the process id), so each process is killed somewhere else; their values do
not depend on the timing.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import trioflow

_rng = random.Random(os.getpid())
_log_fd = -1


async def _work(label: str) -> None:
    await trio.sleep(_rng.uniform(0.002, 0.02))
    os.write(_log_fd, f"{label}\n".encode())


def build() -> trioflow.Flow:
    flow = trioflow.Flow("crash")

    @flow.step
    async def seed(n: int) -> list[int]:
        await _work("seed")
        return list(range(n))

    @flow.step(map_over="seed", max_concurrent=4)
    async def square(seed: int) -> int:
        await _work(f"square[{seed}]")
        return seed * seed

    @flow.step
    async def chain0(square: list[int]) -> int:
        await _work("chain0")
        return sum(square)

    previous = "chain0"
    for k in range(1, 6):  # chain1..chain5, each adding k to the one before
        flow.add(_step(f"chain{k}", [previous], _adder(f"chain{k}", previous, k)))
        previous = f"chain{k}"
    sides = [f"side{k}" for k in range(10)]
    for k, name in enumerate(sides):  # independent steps with tuple values
        flow.add(_step(name, [], _side(name, k)))
    flow.add(_step("final", ["chain5", *sides], _final))
    return flow


def _adder(label: str, upstream: str, k: int) -> Callable[..., Awaitable[int]]:
    async def body(**kwargs: int) -> int:
        await _work(label)
        return kwargs[upstream] + k

    return body


def _side(label: str, k: int) -> Callable[..., Awaitable[tuple[int, str]]]:
    async def body() -> tuple[int, str]:
        await _work(label)
        return (k, f"side {k}")

    return body


async def _final(**parts: object) -> dict[str, object]:
    await _work("final")
    return {name: parts[name] for name in sorted(parts)}


def _step(name: str, deps: list[str], body: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """An async function named ``name`` whose keyword parameters are ``deps``."""

    async def step(**kwargs: Any) -> Any:
        return await body(**kwargs)

    step.__name__ = step.__qualname__ = name
    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
    )
    return step


def outputs(result: trioflow.RunResult) -> str:
    return json.dumps({k: repr(v) for k, v in result.outputs.items()}, sort_keys=True)


N_ITEMS = 12


async def main(db: str, log: str, run_id: str) -> None:
    global _log_fd
    _log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    flow = build()
    store = (
        trioflow.PostgresStore(db.removeprefix("postgres:")) if db.startswith("postgres:") else trioflow.SQLiteStore(db)
    )
    print("ready", flush=True)
    result = await flow.run({"n": N_ITEMS}, store=store, run_id=run_id)
    print(outputs(result), flush=True)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])
