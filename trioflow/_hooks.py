"""The hook around each attempt of a step: features wrap an attempt without the scheduler knowing them.

The scheduler decides *when* an attempt runs; features that need to surround
the attempt itself (a tracing span made current while the step runs, a timer,
a log line with the outcome) implement :class:`AttemptHook` and are installed
with :func:`add_attempt_hook`. It is modelled on trio's ``Instrument``: one
named method, called by the engine at a documented moment, with rules on what
it may do.

When it runs:

* in the step's own task, once per attempt (a map step: once per item and
  attempt), after the step's limiters are held and ``current_step()`` is set;
* *outside* the step's ``timeout=`` (so the :class:`TimeoutError` of an expired
  attempt reaches the hook) and outside the step's runner (so the attempt of a
  ``runner="thread"`` or ``"process"`` step is wrapped the same way, and a
  span made current by the hook is current in the event loop's task while the
  runner waits for the thread, process or cluster);
* hooks nest in the order they were installed: the first installed is the
  outermost.

What it must do: call ``proceed()`` exactly once and await it, then return its
value, or let its exception (``Cancelled`` included) propagate unchanged. It
may look at the outcome (record an exception on a span) but must not retry,
swallow or replace it, must not block, and should not checkpoint before
``proceed()`` (a cancelled run would then never start the attempt, which is
fine, but costs a task switch on every step). Runs that are going on keep the
hooks they started with; installing or removing one affects later runs only.

A run with no hook installed pays nothing for this (one tuple read per run).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs


@attrs.frozen
class Attempt:
    """What a hook knows about the attempt it wraps.

    Attributes:
        flow: the flow's name.
        step: the step's name.
        item: the map item index, or ``None`` for a plain step.
        attempt: the attempt number, starting at 1.
        run_id: the run's id (``None`` when the run was given none).
        runner: where the call runs: ``"async"`` (the event loop), ``"thread"``,
            ``"process"``, or the runner's own name (``"dask"``).
        started_at: when the attempt started, on the async library's clock.
        waited: seconds from the moment the step became ready (its last
            dependency finished) to this attempt's start: time spent waiting
            for capacity (limiters, ``max_concurrent``); 0 for a retry, which
            keeps its slots.
    """

    flow: str
    step: str
    item: int | None
    attempt: int
    run_id: str | None
    runner: str
    started_at: float
    waited: float = 0.0


class AttemptHook(Protocol):
    """Something that wraps every attempt of every step (see the module docstring)."""

    async def around_attempt(self, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap one attempt: await ``proceed()`` once and return what it returns."""
        ...


_installed: tuple[AttemptHook, ...] = ()

# Hooks for the runs started in this context only, after the installed ones: a
# feature that surrounds one run (the OpenTelemetry run span of Flow.run) sets
# it around that run, and the run's tasks inherit it.
context_hooks: contextvars.ContextVar[tuple[AttemptHook, ...]] = contextvars.ContextVar(
    "trioflow_context_hooks", default=()
)


def add_attempt_hook(hook: AttemptHook) -> None:
    """Install ``hook`` around the attempts of every run started from now on.

    Raises:
        TypeError: ``hook`` has no ``around_attempt`` method.
        ValueError: ``hook`` is already installed.
    """
    global _installed
    if not callable(getattr(hook, "around_attempt", None)):
        raise TypeError(f"an attempt hook needs an async around_attempt(attempt, proceed) method (got {hook!r})")
    if hook in _installed:
        raise ValueError(f"attempt hook {hook!r} is already installed")
    _installed = (*_installed, hook)


def remove_attempt_hook(hook: AttemptHook) -> None:
    """Uninstall ``hook``; runs going on keep it until they end.

    Raises:
        ValueError: ``hook`` is not installed.
    """
    global _installed
    if hook not in _installed:
        raise ValueError(f"attempt hook {hook!r} is not installed")
    _installed = tuple(h for h in _installed if h is not hook)


def installed_hooks() -> tuple[AttemptHook, ...]:
    """The hooks installed now, outermost first (then those of :data:`context_hooks`)."""
    extra = context_hooks.get()
    return _installed + extra if extra else _installed


async def call_through(
    hooks: tuple[AttemptHook, ...], attempt: Attempt, innermost: Callable[[], Awaitable[Any]]
) -> Any:
    """Await ``innermost()`` wrapped by ``hooks`` (the first one outermost)."""
    call = innermost
    for hook in reversed(hooks):
        call = _bind(hook, attempt, call)
    return await call()


def _bind(
    hook: AttemptHook, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    def call() -> Awaitable[Any]:
        return hook.around_attempt(attempt, proceed)

    return call
