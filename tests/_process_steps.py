"""Module-level step functions for the process and Dask runner tests.

Worker processes import them by reference, so they live in a module of their
own (tests import it as ``_process_steps``, which is on ``sys.path`` for the
workers too).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import trioflow


def square(xs: int) -> int:
    trioflow.current_step().add_usage(calls=1, units=xs)
    return xs * xs


def whoami(xs: int) -> tuple[str, int | None, int, str | None, int]:
    """The step's context as seen in the worker, and the worker's process id."""
    step = trioflow.current_step()
    time.sleep(0.2)  # long enough that the items overlap and spread over the workers
    return step.name, step.item, step.attempt, step.run_id, os.getpid()


def flaky(marker: str) -> str:
    """Fails on attempt 1 with a ValueError, succeeds on attempt 2."""
    step = trioflow.current_step()
    step.add_usage(tries=1)
    if step.attempt == 1:
        raise ValueError(f"first try of {marker}")
    return f"{marker} on attempt {step.attempt}"


def raises_key_error() -> None:
    raise KeyError("missing key")


def echo(value: Any) -> Any:
    return value


def returns_lambda() -> Any:
    return lambda: 1


class NeedsTwo(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ takes two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raises_needs_two() -> None:
    raise NeedsTwo("this", "that")


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable objects refuse to be pickled")


def returns_unpicklable() -> Any:
    return Unpicklable()


def spin(seconds: float, pid_file: str) -> str:
    """Busy-loop for ``seconds`` (CPU-bound, no way to interrupt it but killing)."""
    # written whole or not at all (a rename): a kill between creating the file and
    # writing the pid would leave it empty for the test that reads it
    written = Path(pid_file + ".tmp")
    written.write_text(str(os.getpid()))
    os.replace(written, pid_file)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun to the end"


def burn(xs: int) -> int:
    """A CPU-bound item: a deterministic value that takes a little work."""
    total = 0
    for k in range(20_000):
        total = (total * 31 + k * xs) % 1_000_003
    return total


def noop() -> None:
    return None


def thread_count() -> int:
    return threading.active_count()


def spin_logged(xs: int, seconds: float, log: str) -> int:
    """Log the start, busy-loop for ``seconds``, log the end (in ``log + '.done'``)."""
    with open(log, "a") as f:
        f.write(f"{xs}\n")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    with open(log + ".done", "a") as f:
        f.write(f"{xs}\n")
    return xs


def _refuse_to_unpickle() -> Any:
    raise ValueError("OneWay objects cannot be unpickled")


class OneWay:
    """Pickles, but cannot be unpickled."""

    def __reduce__(self) -> Any:
        return (_refuse_to_unpickle, ())


def returns_one_way() -> Any:
    return OneWay()


def timed_item(xs: int, log: str) -> int:
    """Sleep 0.3 s on the worker; append 'start end' (CLOCK_MONOTONIC, system-wide) to ``log``."""
    start = time.monotonic()
    time.sleep(0.3)
    end = time.monotonic()
    with open(log, "a") as f:
        f.write(f"{start} {end}\n")
    return xs


def append_one(data: list[int]) -> list[int]:
    data.append(1)  # mutates what it was given: its own copy
    return data
