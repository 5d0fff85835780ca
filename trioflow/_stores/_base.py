"""What every store shares: the backend helpers, argument checks, and the recording hooks.

A store's session gives the scheduler its two recording hooks through one
method, ``hooks(codec, errors)`` (see :class:`Recording`): the scheduler calls
them synchronously the moment a step or a map item finishes, with the raw
values (no record object in between), so a store turns them into whatever it
writes at the lowest cost. :func:`recording_hooks` asks a session for them; a
session that offers only the public :class:`~trioflow.abc.RunSession` methods
(a store of one's own) gets hooks that build :class:`~trioflow.abc.StepRecord`
and :class:`~trioflow.abc.ItemRecord` objects for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import trio
import trio.lowlevel

from .._codec import Codec, JSONCodec
from .._records import ItemRecord, StepRecord, type_name
from .._results import StepStatus
from .._scheduler import Recorder, current_backend

T = TypeVar("T")

# (step, index, value, encoded value, attempts, started_at, finished_at, item fingerprint)
ItemRecorder = Callable[[str, int, Any, bytes, int, float, float, "str | None"], None]


# trio's own primitives under trio (cheaper, and anyio's trio backend is not
# imported on first use), anyio's elsewhere


async def checkpoint() -> None:
    await current_backend().checkpoint()


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    if current_backend().name == "trio":
        return await trio.to_thread.run_sync(fn, *args)
    return await anyio.to_thread.run_sync(fn, *args)


def shielded() -> Any:
    return current_backend().cancel_scope(shield=True)


def is_cancellation(exc: BaseException) -> bool:
    """``Cancelled``, or a group of nothing else (how a trio nursery passes it on)."""
    cancelled = trio.Cancelled if current_backend().name == "trio" else anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)


class _Signal:
    """An event that another thread sets, waking the event loop's task that waits on it.

    Cheaper than a worker thread blocked on a :class:`threading.Event`, and it
    ties up no thread of the loop's pool while it waits.
    """

    __slots__ = ("_call", "_event")

    def __init__(self) -> None:
        if current_backend().name == "trio":
            self._event: trio.Event | anyio.Event = trio.Event()
            self._call: Callable[[Callable[[], object]], object] = (
                trio.lowlevel.current_trio_token().run_sync_soon
            )
        else:  # anyio on asyncio
            self._event = anyio.Event()
            self._call = asyncio.get_running_loop().call_soon_threadsafe

    def set(self) -> None:
        """Wake the waiter (from any thread)."""
        try:
            self._call(self._event.set)
        except (trio.RunFinishedError, RuntimeError):
            pass  # the event loop has ended: no one is waiting any more

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def threadsafe_call() -> Callable[[Callable[[], object]], object]:
    """A function that calls ``fn()`` soon in the running event loop, from any thread."""
    if current_backend().name == "trio":
        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


def check_codec(codec: object) -> Codec:
    if codec is None:
        return JSONCodec()
    if not isinstance(codec, Codec):
        raise TypeError(
            f"codec= takes a codec such as trioflow.JSONCodec() or trioflow.PickleCodec() "
            f"(got {codec!r} that is a {type(codec).__name__})"
        )
    return codec


def check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string (got {run_id!r})")
    return run_id


class BuiltinStore:
    """The stores trioflow ships (not a public extension point: see :class:`trioflow.abc.Store`).

    ``_where`` identifies where the store keeps its runs, so that two store
    objects over the same database are known to be one place.
    """

    __slots__ = ()

    @property
    def _where(self) -> object:
        return id(self)


class Recording(Protocol):
    """A session that makes the scheduler's recording hooks itself (every built-in store's)."""

    def hooks(
        self, codec: Codec, errors: list[BaseException], stop: Callable[[], object]
    ) -> tuple[Recorder, ItemRecorder]:
        """The hooks the scheduler calls when a step or a map item finishes.

        They run synchronously on the event loop's thread: they must not block,
        and must not raise (a failure to record goes to ``errors``). When the
        store can no longer record the run, the session calls ``stop()`` (from
        any thread), which stops the run.
        """
        ...


def recording_hooks(
    session: Any, codec: Codec, errors: list[BaseException], stop: Callable[[], object]
) -> tuple[Recorder, ItemRecorder]:
    """The scheduler's recording hooks for ``session``: its own, or made from its record methods."""
    hooks = getattr(session, "hooks", None)
    if hooks is not None:
        made: tuple[Recorder, ItemRecorder] = hooks(codec, errors, stop)
        return made
    return _record_hooks(session, codec, errors, stop)


def _record_hooks(
    session: Any, codec: Codec, errors: list[BaseException], stop: Callable[[], object]
) -> tuple[Recorder, ItemRecorder]:
    """Hooks that hand a session :class:`StepRecord` and :class:`ItemRecord` objects."""
    encode = codec.encode
    codec_name = codec.name

    def record_step(
        name: str,
        status: StepStatus,
        value: Any,
        data: bytes | None,
        error: BaseException | None,
        attempts: int,
        started_at: float | None,
        finished_at: float | None,
        usage: dict[str, float],
    ) -> None:
        try:
            stored = None
            if status is StepStatus.SUCCEEDED:
                if data is None:  # a map step's list (its items were encoded one by one)
                    data = encode(value)
                stored = codec_name
            session.record_step(
                StepRecord(
                    name,
                    status,
                    data,
                    stored,
                    None if error is None else type_name(error),
                    None if error is None else str(error),
                    attempts,
                    started_at,
                    finished_at,
                    MappingProxyType(dict(usage)),
                )
            )
        except Exception as exc:  # never into the scheduler: raised when the run ends
            errors.append(exc)
            stop()

    def record_item(
        step: str, index: int, value: Any, data: bytes, attempts: int, started: float, finished: float,
        fingerprint: str | None,
    ) -> None:
        try:
            session.record_item(ItemRecord(step, index, data, codec_name, attempts, started, finished, fingerprint))
        except Exception as exc:
            errors.append(exc)
            stop()

    return record_step, record_item
