"""``runner="process"``: a plain function in a worker process, cancelled for real.

On trio the call goes through trio-parallel with ``kill_on_cancel=True`` (the
extra ``trioflow[process]``; without it, anyio's process workers); on asyncio
through anyio's process workers with ``cancellable=True``. Either way a
cancelled step (``fail_fast``, a timeout, cancellation from outside) kills its
worker process at once, so CPU-bound work stops mid-computation. Both keep a
pool of worker processes (as many as the machine has CPUs) that later calls
reuse.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import anyio.to_process
import sniffio

from ._context import current_step
from ._crossing import call_in_worker, decode_reply, encode_kwargs
from ._runner_thread import check_plain

WHERE = "a worker process"


def importable_problem(fn: Callable[..., Any]) -> str | None:
    """Why a worker process could not import ``fn`` by reference, or None if it can."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.isbuiltin(target)):
        target = type(target)  # a callable object: its class must be importable
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return "not a module-level function"
    if "<lambda>" in qualname:
        return "a lambda"
    if "<locals>" in qualname:
        return f"defined inside a function ({module}.{qualname})"
    if module == "__main__":
        return f"defined in __main__ ({qualname}), which a worker process cannot import"
    found: Any = sys.modules.get(module)
    if found is None:
        return None  # not imported here yet: the worker imports it by name
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not target:
        return f"not reachable as {module}.{qualname}"
    return None


class ProcessRunner:
    """Calls the step's plain function in a worker process (see the module docstring)."""

    name = "process"
    # arguments are pickled to the worker: a step gets its own copy without isolation="copy"
    copies_arguments = True

    def __repr__(self) -> str:
        return "<trioflow runner 'process'>"

    def check(self, fn: Callable[..., Any], step: str) -> None:
        check_plain(fn, step, "'process'")
        problem = importable_problem(fn)
        if problem is not None:
            raise TypeError(
                f"step {step!r}: runner='process' needs a function that a worker process can import "
                f"by reference, but {fn!r} is {problem}; define it at module level in a module "
                f"(not __main__ nor a lambda or closure)"
            )

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        step = current_step()
        args = encode_kwargs(kwargs, step, "pickle", WHERE)
        call: Any = functools.partial(
            call_in_worker, fn, "pickle", step.name, step.attempt, step.item, step.run_id, args
        )
        trio_parallel = _trio_parallel()
        if trio_parallel is not None:
            reply = await trio_parallel.run_sync(call, kill_on_cancel=True)
        else:
            reply = await anyio.to_process.run_sync(call, cancellable=True)
        return decode_reply(reply, step, WHERE)


def _trio_parallel() -> Any:
    """trio-parallel when running under trio and it is installed (``trioflow[process]``), else None."""
    if sniffio.current_async_library() != "trio":
        return None
    try:
        import trio_parallel  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:  # anyio's process workers work under trio too
        return None
    return trio_parallel


PROCESS = ProcessRunner()
