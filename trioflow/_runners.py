"""Where a step's call runs: the runner interface.

The scheduler decides *when* a step (or map item) runs; a runner decides
*where* its function is called. The interface is small, like httpx's
transports: :class:`Runner` has one check made when the step is declared and
one async method that calls the function; each implementation lives in its
own module (``_runner_thread``, ``_runner_process``, ``_runner_dask``).

A step declared with ``runner=`` has its plain function bound to its runner
when it is declared (:func:`bind`): the bound function is an ordinary async
function of the step's keyword arguments, so the scheduler, retries,
timeouts, limiters, caches and the attempt hook treat it like any other step
and never branch on the runner.

Per-run state: a runner may keep state for the run it serves (the thread
runner keeps a thread limiter sized to the run) in :func:`current_run_scope`,
which the scheduler sets for the duration of each run.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable
from typing import Any, Protocol


class Runner(Protocol):
    """Where a step's function is called (``runner=`` of :meth:`Flow.step`).

    Attributes:
        name: a short name for messages and hooks (``"thread"``, ``"process"``, ``"dask"``).

    A runner that pickles the arguments to another process may also say so with
    a true ``copies_arguments`` attribute: its steps then default to
    ``isolation="share"``, since the copy made by pickling already isolates them.
    """

    name: str

    def check(self, fn: Callable[..., Any], step: str) -> None:
        """Raise :class:`TypeError` (naming ``step``) unless ``fn`` can run here.

        Called once, when the step is declared.
        """
        ...

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Call ``fn(**kwargs)`` here and return its value or raise its exception.

        Runs in the step's task with :func:`trioflow.current_step` set; must make
        ``current_step()`` work inside ``fn`` and bring its usage back. A
        checkpoint. On cancellation it returns only once the call has been
        stopped or (where it cannot be) has finished, unless the runner's
        documentation says otherwise.
        """
        ...


class RunScope:
    """State that runners keep for one run (one per run, set by the scheduler)."""

    __slots__ = ("capacity", "state")

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity  # the run's max_concurrent (math.inf if none)
        self.state: dict[object, Any] = {}


_run_scope: contextvars.ContextVar[RunScope] = contextvars.ContextVar("trioflow_run_scope")


def current_run_scope() -> RunScope:
    """The run's scope; outside a run (``trioflow.map``), a fresh unlimited one."""
    try:
        return _run_scope.get()
    except LookupError:
        scope = RunScope(math.inf)
        _run_scope.set(scope)
        return scope


def enter_run(capacity: float) -> contextvars.Token[RunScope]:
    """Give the current task (and the tasks it starts) a new run scope."""
    return _run_scope.set(RunScope(capacity))


def exit_run(token: contextvars.Token[RunScope]) -> None:
    _run_scope.reset(token)


def resolve(value: object) -> Runner:
    """The runner that ``runner=value`` names.

    Raises:
        TypeError: ``value`` is neither ``"thread"``, ``"process"`` nor a runner object.
    """
    if isinstance(value, str):
        if value == "thread":
            from ._runner_thread import THREAD

            return THREAD
        if value == "process":
            from ._runner_process import PROCESS

            return PROCESS
        raise TypeError(
            f"runner={value!r} is not a runner; use runner='thread' (blocking code), "
            f"runner='process' (CPU-bound code) or runner=trioflow.DaskRunner(...)"
        )
    if callable(getattr(value, "call", None)) and callable(getattr(value, "check", None)):
        runner: Runner = value  # type: ignore[assignment]
        return runner
    raise TypeError(
        f"runner= takes 'thread', 'process' or a trioflow.DaskRunner (got {value!r} that is a "
        f"{type(value).__name__})"
    )


def bind(runner: Runner, fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async function of keyword arguments that calls ``fn`` through ``runner``.

    It keeps ``fn``'s name, signature and module (``functools.wraps``), so the
    step reads the same everywhere (dependencies, caches, fingerprints).
    """
    call = runner.call

    @functools.wraps(fn)
    async def through_runner(**kwargs: Any) -> Any:
        return await call(fn, kwargs)

    return through_runner

