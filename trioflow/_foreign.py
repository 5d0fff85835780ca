"""Clear errors for trio-only code running under asyncio.

A step that awaits ``trio.sleep`` (or uses a ``trio.CapacityLimiter``, a
``trio.Event``...) while the flow runs on asyncio fails inside trio with
``RuntimeError: must be called from async context``, which names neither the
step nor the fix. :func:`explain` turns that into an error that does.
"""

from __future__ import annotations

import os

import trio

_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


def trio_function(exc: BaseException) -> str | None:
    """The trio function a ``RuntimeError`` from trio's run-context check came from, if any."""
    if type(exc) is not RuntimeError or str(exc) != "must be called from async context":
        return None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(_TRIO_DIR):
            module = tb.tb_frame.f_globals.get("__name__", "trio")
            owner = tb.tb_frame.f_locals.get("self")
            if owner is not None:
                return f"{type(owner).__module__.split('._')[0]}.{type(owner).__name__}.{code.co_name}"
            return f"{module.split('._')[0]}.{code.co_name}"
        tb = tb.tb_next
    return None


def explain(exc: Exception, label: str) -> Exception:
    """``exc``, or a clearer :class:`RuntimeError` (caused by it) when it is a trio-only call
    made under asyncio by the step or map item ``label``."""
    name = trio_function(exc)
    if name is None:
        return exc
    error = RuntimeError(
        f"{label} called {name}(), which works only under trio, but it runs on asyncio; use "
        f"anyio's equivalent (anyio.sleep, anyio.CapacityLimiter, anyio.Event, "
        f"anyio.create_task_group, ...), which works on both"
    )
    error.__cause__ = exc
    error.__traceback__ = exc.__traceback__
    return error
