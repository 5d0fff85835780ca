"""``async with flow.open_run(...) as run``: a run in the block's own nursery, and its events.

The run is a task in a task group (a trio nursery, or anyio's on asyncio)
that the block owns, so nothing outlives the block. Its events go to an
unbounded in-memory buffer from the scheduler's ``on_event`` hook: appending
never blocks the scheduler and never drops an event, and
:meth:`RunHandle.events` yields them in order, whenever it is iterated. The
price: events nobody consumes stay in memory until the handle is dropped (a
few hundred bytes each).
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._events import Event, RunStarted
from ._exceptions import add_note
from ._graph import did_you_mean
from ._public import public_home
from ._results import RunResult

if TYPE_CHECKING:
    from ._flow import Flow

# the event iterator yields to the scheduler at least this often (see _Events)
SCHEDULE_EVERY = 64


class RunHandle:
    """A run going on in an ``async with flow.open_run(...) as run:`` block.

    Made by :meth:`Flow.open_run <trioflow.Flow.open_run>`, never directly.
    """

    def __init__(self, on_event: Callable[[Event], object] | None) -> None:
        self._user_on_event = on_event
        self._buffer: collections.deque[Event] = collections.deque()
        self._wakeup: anyio.Event | None = None
        self._begun = anyio.Event()  # RunStarted came, or the run ended before it
        self._ended = anyio.Event()
        self._started = False
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._raised = False  # result() raised the run's failure
        self._iterated = False

    def __repr__(self) -> str:
        state = "running" if not self._ended.is_set() else (
            "failed" if self._error is not None else "finished" if self._result is not None else "cancelled"
        )
        return f"<trioflow.RunHandle {state}, {len(self._buffer)} events buffered>"

    def _on_event(self, event: Event) -> None:
        self._buffer.append(event)
        if not self._started and isinstance(event, RunStarted):
            self._started = True
            self._begun.set()
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()
        if self._user_on_event is not None:
            # (if it raises, the run sends no more events, to it or to the stream: see Flow.run)
            self._user_on_event(event)

    async def _drive(self, flow: Flow, inputs: Mapping[str, Any] | None, options: dict[str, Any]) -> None:
        try:
            self._result = await flow.run(inputs, on_event=self._on_event, **options)
        except Exception as exc:  # the run's failure: raised by result() or the block
            self._error = exc
        finally:
            self._ended.set()
            self._begun.set()
            if self._wakeup is not None:
                self._wakeup.set()
                self._wakeup = None

    def events(self) -> AsyncIterator[Event]:
        """Every event of the run in order, from :class:`~trioflow.RunStarted` to :class:`~trioflow.RunFinished`.

        Use as ``async for event in run.events():``. Events are buffered from
        the run's start, so nothing is missed whenever this is called (also
        after the run ended); the iteration ends after the last event. Each
        step of the iteration is a cancellation point, and it lets other tasks
        run at least every 64 events (or whenever it waits for the next one).
        It can be iterated once.

        Raises:
            RuntimeError: it was iterated before.
        """
        if self._iterated:
            raise RuntimeError(
                "run.events() can be iterated once, and was already; keep the events "
                "in a list if you need them twice"
            )
        self._iterated = True
        return _Events(self)

    async def result(self) -> RunResult:
        """Wait for the run to end; return its :class:`~trioflow.RunResult` or raise as :meth:`Flow.run` does.

        A checkpoint. Once this has raised the run's failure, the block does
        not raise it again.

        Raises:
            FlowError: one or more steps failed.
            RuntimeError: the run was cancelled before it ended (the block was
                left before the run ended).
        """
        await self._ended.wait()
        if self._error is not None:
            self._raised = True
            raise self._error
        if self._result is None:
            raise RuntimeError("the run was cancelled before it ended, so it has no result")
        return self._result


class _Events:
    """The async iterator of :meth:`RunHandle.events` (a class: no async generator to finalize)."""

    def __init__(self, handle: RunHandle) -> None:
        self._handle = handle
        self._streak = 0

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        handle = self._handle
        if handle._buffer:
            # Events already buffered are handed out in a batch: a cancellation
            # point each, a schedule point every SCHEDULE_EVERY, so that a
            # consumer and the run do not take turns at every event.
            self._streak += 1
            if self._streak >= SCHEDULE_EVERY:
                self._streak = 0
                await anyio.lowlevel.checkpoint()
            else:
                await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            self._streak = 0
            while not handle._buffer:
                if handle._ended.is_set():
                    await anyio.lowlevel.checkpoint()
                    raise StopAsyncIteration
                wakeup = handle._wakeup
                if wakeup is None:
                    wakeup = handle._wakeup = anyio.Event()
                await wakeup.wait()
        return handle._buffer.popleft()


def check_options(flow: Flow, options: Mapping[str, Any]) -> None:
    """Refuse option names that :meth:`Flow.run` does not take, before anything starts."""
    params = inspect.signature(flow.run).parameters
    known = [name for name, p in params.items() if p.kind is p.KEYWORD_ONLY]
    for name in options:
        if name not in known:
            raise TypeError(
                f"flow.open_run() got an unknown option {name!r}; it takes the options of "
                f"flow.run(): {', '.join(known)}{did_you_mean(name, known)}"
            )


@asynccontextmanager
async def open_run(flow: Flow, inputs: Mapping[str, Any] | None, options: dict[str, Any]) -> AsyncIterator[RunHandle]:
    """See :meth:`Flow.open_run <trioflow.Flow.open_run>`."""
    check_options(flow, options)
    handle = RunHandle(options.pop("on_event", None))
    early: BaseException | None = None
    body_error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle._drive, flow, inputs, options)
        await handle._begun.wait()
        if not handle._started:
            # the run ended before it started: invalid inputs or options, a store refusing the run id
            early = handle._error
        else:
            try:
                yield handle
            except BaseException as exc:  # raised once the run's task has ended, never wrapped in a group
                body_error = exc
            tg.cancel_scope.cancel()  # a run still going when the block is left is cancelled
    if early is not None:
        handle._raised = True
        raise early
    error = handle._error
    if body_error is not None:
        if error is not None and not handle._raised and error is not body_error:
            add_note(body_error, f"trioflow: the run failed too: {error!r}")
        raise body_error
    if error is not None and not handle._raised:
        handle._raised = True
        raise error


public_home(RunHandle)  # trioflow imports it when first used
