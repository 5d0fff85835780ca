"""Module-level step functions for bench/runners_case.py (worker processes import them)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def burn_loops(loops: int) -> int:
    """Pure-Python CPU work that holds the GIL: ``loops`` rounds of arithmetic."""
    total = 0
    for k in range(loops):
        total = (total * 31 + k) % 1_000_003
    return total


def calibrate(seconds: float) -> int:
    """How many loops of :func:`burn_loops` take about ``seconds`` here."""
    loops = 10_000
    while True:
        start = time.perf_counter()
        burn_loops(loops)
        took = time.perf_counter() - start
        if took > 0.05:
            return int(loops * seconds / took)
        loops *= 2


def noop() -> None:
    return None


def spin(seconds: float, pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def wait_for(path: str) -> None:
    """Block until ``path`` exists (polls every 2 ms)."""
    while not os.path.exists(path):
        time.sleep(0.002)
