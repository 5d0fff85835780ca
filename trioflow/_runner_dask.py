"""``runner=trioflow.DaskRunner(address_or_client)``: steps on a Dask cluster.

Each call (a step, or one item of a map step) is submitted to a
``dask.distributed`` cluster as one task and awaited without blocking the event
loop: the future's done-callback wakes the waiting task through the event
loop's thread-safe entry (trio's token, asyncio's ``call_soon_threadsafe``), so
no thread is held while the cluster works. Arguments, results and exceptions
cross as with ``runner="process"``, serialized with cloudpickle (what Dask's
serializer accepts: lambdas and closures too).

Cancellation: a task still pending on the cluster is cancelled; a task already
running on a worker cannot be interrupted by Dask, so it finishes there and its
result is dropped, while the run returns without waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import sniffio

from ._context import current_step
from ._crossing import call_in_worker, decode_reply, encode_kwargs
from ._public import public_home
from ._runner_thread import check_plain

WHERE = "a Dask worker"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "trioflow.DaskRunner needs dask.distributed; install it with "
            "python -m pip install 'trioflow[dask]'"
        ) from None
    return distributed


class DaskRunner:
    """Runs steps on a ``dask.distributed`` cluster: ``@flow.step(runner=DaskRunner(...))``.

    Args:
        address_or_client: the scheduler's address (``"tcp://10.0.0.5:8786"``),
            or a ``distributed.Client`` you already have (a cluster object such
            as a ``LocalCluster`` is taken as its ``scheduler_address``).

    Under asyncio the client may also be an asynchronous one
    (``Client(..., asynchronous=True)``) running on the application's event loop.

    A runner made from an address owns its client: it connects on first use
    (or on entering ``async with``) and disconnects when closed, so use it as
    ``async with trioflow.DaskRunner(address) as runner:`` or call
    :meth:`aclose`. A runner made from a client leaves that client to its
    owner; closing the runner then does nothing to it.

    ``max_concurrent`` and a step's limiters count the calls submitted to the
    cluster. A cancelled step's task is cancelled if it has not started; one
    already running on a worker finishes there (Dask cannot interrupt it)
    while the run returns without waiting for it.

    Raises:
        TypeError: ``address_or_client`` is neither a string nor a ``Client``.
        ImportError: ``dask.distributed`` is not installed (``trioflow[dask]``).
    """

    name = "dask"
    # arguments are pickled to the worker: a step gets its own copy without isolation="copy"
    copies_arguments = True

    def __init__(self, address_or_client: Any) -> None:
        distributed = _distributed()
        self._lock = threading.Lock()
        self._closed = False
        if isinstance(address_or_client, str):
            if not address_or_client:
                raise TypeError("DaskRunner(address_or_client): the address is empty")
            self._address: str | None = address_or_client
            self._client: Any = None
            self._owns = True
        elif isinstance(address_or_client, distributed.Client):
            self._address = None
            self._client = address_or_client
            self._owns = False
        elif isinstance(getattr(address_or_client, "scheduler_address", None), str):
            # a cluster object (LocalCluster, ...): connect to it like to its address
            self._address = address_or_client.scheduler_address
            self._client = None
            self._owns = True
        else:
            raise TypeError(
                f"DaskRunner takes a scheduler address such as 'tcp://127.0.0.1:8786' or a "
                f"distributed.Client (got {address_or_client!r} that is a "
                f"{type(address_or_client).__name__})"
            )

    def __repr__(self) -> str:
        where = self._address if self._owns else repr(self._client)
        state = " closed" if self._closed else ""
        return f"<trioflow.DaskRunner {where}{state}>"

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use (``None`` before a runner made from an address connects)."""
        return self._client

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> DaskRunner:
        """Connect (a runner made from an address). Blocks until connected; a checkpoint."""
        await anyio.to_thread.run_sync(self._connect)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the runner: see :meth:`aclose`. Blocks until disconnected."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this runner made it (from an address); a checkpoint.

        Steps that use the runner afterwards fail with :class:`RuntimeError`.
        """
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """:meth:`aclose` for synchronous code (blocks while the client disconnects)."""
        with self._lock:
            self._closed = True
            client = self._client
            if self._owns:
                self._client = None
        if self._owns and client is not None:
            client.close()

    def _connect(self) -> Any:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed; make a new DaskRunner")
            if self._client is None:
                self._client = _distributed().Client(self._address, set_as_default=False)
            return self._client

    # -- the runner interface ----------------------------------------------------------------

    def check(self, fn: Callable[..., Any], step: str) -> None:
        check_plain(fn, step, "DaskRunner(...)")

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        step = current_step()
        client = self._client
        if client is None or self._closed:
            client = await anyio.to_thread.run_sync(self._connect)
        args = encode_kwargs(kwargs, step, "cloudpickle", WHERE)
        label = step.name if step.item is None else f"{step.name}[{step.item}]"
        future = client.submit(
            call_in_worker, fn, "cloudpickle", step.name, step.attempt, step.item, step.run_id, args,
            key=f"trioflow-{label}-{uuid.uuid4().hex}", pure=False,
        )
        if getattr(client, "asynchronous", False):
            # an asyncio application's own asynchronous client, on this event loop
            try:
                reply = await future
            finally:
                if not future.done():
                    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                        await future.cancel()
            return decode_reply(reply, step, WHERE)
        try:
            await _wait_done(future)
            # the result is on a worker: fetching it is network I/O, done in a thread
            reply = await anyio.to_thread.run_sync(future.result)
        finally:
            if not future.done():
                # still pending or running: cancel it (a running task finishes on
                # its worker; the cancel only waits for the scheduler's answer)
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await anyio.to_thread.run_sync(_cancel, future, abandon_on_cancel=True)
        return decode_reply(reply, step, WHERE)


def _cancel(future: Any) -> None:
    future.cancel()


async def _wait_done(future: Any) -> None:
    """Wait for a Dask future without holding a thread. A checkpoint."""
    done = anyio.Event()
    call_soon = _thread_safe_call_soon()

    def on_done(_: Any) -> None:  # in Dask's callback thread
        try:
            call_soon(done.set)
        except RuntimeError:  # the event loop has ended (trio's RunFinishedError, a closed
            pass  # asyncio loop): the step was cancelled and nobody waits any more

    future.add_done_callback(on_done)
    await done.wait()


def _thread_safe_call_soon() -> Callable[[Callable[[], object]], object]:
    """A function that runs a callback in this event loop's thread, from any thread."""
    if sniffio.current_async_library() == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        return token.run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


public_home(DaskRunner)  # trioflow imports it when first used
