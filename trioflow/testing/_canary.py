"""The canary: check, when the harness is first used, that trio's internals are as it needs.

trioflow's engine uses trio's public API only and works with any trio in the
range ``pyproject.toml`` allows. The deterministic harness also reaches into
trio's private scheduler (see ``_control.py``). Instead of pinning trio for
everyone, it checks those internals the first time it runs, and refuses with
a clear message (naming the trio versions it was tested with) when they
changed, rather than misbehaving.
"""

from __future__ import annotations

import functools
import inspect
import random

import trio
import trio.lowlevel

from .._exceptions import TrioflowError

TESTED_TRIO = ("0.26.2", "0.35.0")
"""The oldest and newest trio releases the harness is tested with (CI runs both)."""

# what the harness relies on in trio/_core/_run.py's unrolled_run
RUN_LOOP_SNIPPETS = (
    "batch = list(runner.runq)",
    "if _ALLOW_DETERMINISTIC_SCHEDULING:",
    "batch.sort(key=lambda t: t._counter)",
    "_r.shuffle(batch)",
    "task = batch.pop()",
    'runner.instruments.call("before_io_wait", timeout)',
)
TASK_FIELDS = ("_counter", "_next_send", "_next_send_fn", "_abort_func", "coro", "name")
TASK_METHODS = ("_attempt_abort", "iter_await_frames")


class UnsupportedTrioError(TrioflowError, RuntimeError):
    """The installed trio's private scheduler differs from what the harness drives."""


def problems() -> list[str]:
    """What the installed trio lacks, as sentences (empty: the harness can run)."""
    found: list[str] = []
    try:
        from trio._core import _run as trio_run
    except ImportError:  # pragma: no cover - trio moved its run loop
        return ["trio._core._run cannot be imported"]
    if not isinstance(getattr(trio_run, "_r", None), random.Random):
        found.append("trio._core._run._r is no longer a random.Random")
    if not isinstance(getattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool):
        found.append("trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone or not a bool")
    try:
        source = inspect.getsource(trio_run.unrolled_run)
    except (AttributeError, OSError, TypeError):
        found.append("the source of trio._core._run.unrolled_run cannot be read")
    else:
        found.extend(
            f"unrolled_run no longer contains {snippet!r}"
            for snippet in RUN_LOOP_SNIPPETS
            if snippet not in source
        )
    fields = {a.name for a in getattr(trio.lowlevel.Task, "__attrs_attrs__", ())}
    found.extend(f"trio.lowlevel.Task has no field {name!r}" for name in TASK_FIELDS if name not in fields)
    found.extend(
        f"trio.lowlevel.Task.{name} is gone"
        for name in TASK_METHODS
        if not callable(getattr(trio.lowlevel.Task, name, None))
    )
    runner = getattr(trio_run, "Runner", None)
    if runner is None or "runq" not in {a.name for a in getattr(runner, "__attrs_attrs__", ())}:
        found.append("trio's Runner has no runq")
    return found


@functools.cache
def _checked(version: str) -> tuple[str, ...]:
    return tuple(problems())


def check_trio() -> None:
    """Raise :class:`UnsupportedTrioError` unless the installed trio's internals are as
    the harness needs (checked once per process).

    Raises:
        UnsupportedTrioError: names what changed, the installed trio, and the
            versions the harness is tested with.
    """
    found = _checked(trio.__version__)
    if found:
        raise UnsupportedTrioError(
            f"trioflow.testing cannot drive the scheduler of the installed trio "
            f"{trio.__version__}: {'; '.join(found)}. The deterministic harness is tested with "
            f"trio {TESTED_TRIO[0]} to {TESTED_TRIO[1]}; install one of those "
            f"(python -m pip install 'trio>={TESTED_TRIO[0]},<={TESTED_TRIO[1]}'), or check "
            f"for a newer trioflow. Flows themselves run on this trio."
        )
