"""``trioflow.map`` and ``trioflow.gather``: run many calls of async functions at once.

Both run on a *pool*: at most ``max_concurrent`` worker tasks in one nursery,
each pulling the next item from a shared iterator, running it (with its own
retry counter), storing the result at the item's index, and pulling again. So
a generator or an async iterable with millions of items costs
O(``max_concurrent``) tasks and in-flight items, and the items are read lazily,
only as fast as workers free up. Results are kept in item order.

``fail_fast`` cancels the nursery's scope: every running item is cancelled at
its next await. ``FlowError`` is raised after the nursery has closed, so trio
never wraps it in another group. Its ``.result`` is a
:class:`~trioflow.RunResult` with one :class:`~trioflow.StepResult` per item
taken from ``items`` (or per function given to ``gather``), named
``"<function name>[<index>]"``, e.g. ``"fetch[3]"``.
"""

from __future__ import annotations

import functools
import inspect
import math
import secrets
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from typing import Any, Literal, TypeVar

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel

from ._context import StepContext, _current, current_or_none
from ._exceptions import FlowError, GraphError, add_note, split_escaped
from ._foreign import explain
from ._graph import check_async_callable, check_max_concurrent
from ._limits import KeyedLimiter, RateLimit
from ._public import public_home
from ._results import RunResult, StepResult, StepStatus
from ._retry import Retry, next_wait
from ._scheduler import (
    YIELD_EVERY,
    Backend,
    _cancelled_class,
    current_backend,
    quiescent_here,
    settle_decision,
    wait_after_settling,
    wait_all_tasks_blocked,
)
from ._waiting import line_for, wait_turn

__all__ = ["gather", "map"]

T = TypeVar("T")
R = TypeVar("R")

ErrorHandling = Literal["fail_fast", "continue"]

_MAX_LISTED = 10  # failed items named in a FlowError message


def _fixed() -> bool:
    """What a pool tells the harness's hand-over decision: its next item is fixed."""
    return True


def _fn_name(fn: object) -> str:
    """A readable name for a callable: its ``__name__``, looking through partials."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _check_async(fn: object, what: str) -> None:
    """:func:`check_async_callable`, with a hint for the lambda-returning-a-coroutine mistake
    (for ``race``, whose calls start at different times)."""
    if getattr(fn, "__name__", None) == "<lambda>":
        raise TypeError(
            f"{what} expects an async function, but got a lambda (a plain function, even "
            f"if it returns a coroutine); pass functools.partial(fetch, x) instead of "
            f"lambda: fetch(x), or define the function with 'async def'"
        )
    check_async_callable(fn, what)


def _check_callable(fn: object, what: str) -> None:
    """A callable, as ``nursery.start_soon`` takes: its call must return an awaitable
    (checked at the call); a coroutine object or a non-callable is refused here."""
    if inspect.iscoroutine(fn) or not callable(fn):
        check_async_callable(fn, what)  # the messages that show the fix


def _not_awaitable(what: str, fn: object, args: str, value: object) -> TypeError:
    return TypeError(
        f"{what} expects a callable that returns an awaitable (an async function, a partial of "
        f"one, a lambda returning a coroutine), but {_fn_name(fn)}({args}) returned "
        f"{_short(value)} that is a {type(value).__name__}; define the function with 'async def'"
    )


async def _await_it(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _raise(exc: Exception) -> Any:
    raise exc


def _check_on_item_error(value: object, what: str) -> None:
    if value not in ("fail", "none"):
        raise GraphError(
            f"{what}(on_item_error={value!r}) must be 'fail' (a failed item fails the call) "
            f"or 'none' (a failed item becomes None in the output list)"
        )


def _check_error_handling(value: object, what: str) -> None:
    if value not in ("fail_fast", "continue"):
        raise GraphError(f"{what}(error_handling={value!r}) must be 'fail_fast' or 'continue'")


class _Pool:
    """One ``map``/``gather`` call: workers pulling items from a shared iterator.

    What it keeps per item beyond the result list is sparse: an item's error,
    times, attempts (when more than one) and usage are kept only for items
    that failed, are in flight, were retried or counted usage, so a million
    quick items cost the result list and nothing more.
    """

    __slots__ = (
        "attempts",
        "be",
        "call",
        "cohort",
        "errors",
        "exhausted",
        "fail_fast",
        "finished",
        "iterator",
        "label",
        "limiter",
        "lock",
        "name",
        "names",
        "nursery",
        "parent",
        "quiescent",
        "retry",
        "retrying",
        "scope",
        "seed",
        "settling",
        "soft",
        "source_error",
        "started",
        "stop_at",
        "stopping",
        "usages",
        "values",
        "what",
    )

    def __init__(
        self,
        *,
        be: Backend,
        label: str,
        what: str,
        call: Callable[[Any], Awaitable[Any]],
        name: str | None,
        iterator: Iterator[Any] | AsyncIterator[Any],
        retry: Retry | None,
        fail_fast: bool,
        limiter: Any = None,
        soft: bool = False,
    ) -> None:
        self.be = be
        # under trioflow.testing: take items and settle as a flow's workers do (see worker)
        self.quiescent = quiescent_here(be.name == "trio")
        self.limiter = limiter  # None, a RateLimit, or a CapacityLimiter
        self.label = label  # "trioflow.map(fetch)", names the call in messages
        self.what = what  # "map item" or "gather argument", for notes
        self.call = call
        self.name = name  # None: each item is a function and names itself (gather)
        self.iterator = iterator
        self.lock: Any = (
            None
            if isinstance(iterator, Iterator)
            else (trio.Lock() if be.name == "trio" else anyio.Lock())
        )
        self.retry = retry
        self.seed = secrets.randbits(63) if retry is not None and retry.jitter else 0
        self.fail_fast = fail_fast
        self.soft = soft  # on_item_error="none": a failed item's value is None, nothing raises
        self.parent = current_or_none()
        self.exhausted = False
        self.stopping = False
        self.stop_at = math.inf  # when fail-fast stopped the call (the first failure)
        self.scope: Any = None
        self.nursery: Any = None
        self.settling = 0  # under trioflow.testing: workers waiting for the instant to settle
        self.source_error: Exception | None = None
        self.values: list[Any] = []  # one entry per item taken from the iterator: the results
        # sparse, by item index:
        self.names: dict[int, str] = {}  # gather: the function's name
        self.attempts: dict[int, int] = {}  # attempts begun, when more than one
        self.started: dict[int, float] = {}  # items in flight, failed or cancelled
        self.finished: dict[int, float] = {}  # failed items
        self.usages: dict[int, dict[str, float]] = {}  # items that counted usage
        self.errors: dict[int, Exception] = {}
        # items waiting to retry: index -> (the failed attempt's error, attempt, when it failed)
        self.retrying: dict[int, tuple[Exception, int, float]] = {}

    def _item_name(self, index: int) -> str:
        return f"{self.names.get(index) if self.name is None else self.name}[{index}]"

    # -- taking items ----------------------------------------------------------------

    def _source_failed(self, exc: Exception) -> None:
        add_note(
            exc,
            f"trioflow: {self.label} stopped taking items: iterating over the items raised "
            f"after {len(self.values)} item{'s' if len(self.values) != 1 else ''}",
        )
        self.source_error = exc
        self.exhausted = True
        if self.fail_fast:
            self._stop()

    def _claim(self, item: Any) -> tuple[int, Any]:
        """Give a freshly taken item its index (in the same step as taking it)."""
        index = len(self.values)
        self.values.append(None)
        self.started[index] = self.be.current_time()
        return index, item

    def _next_sync(self) -> tuple[int, Any] | None:
        assert isinstance(self.iterator, Iterator)
        try:
            return self._claim(next(self.iterator))
        except StopIteration:
            self.exhausted = True
        except Exception as exc:
            self._source_failed(exc)
        return None

    async def _next_async(self) -> tuple[int, Any] | None:
        assert isinstance(self.iterator, AsyncIterator)
        async with self.lock:  # an async generator cannot be advanced by two tasks at once
            if self._done():
                return None
            try:
                return self._claim(await anext(self.iterator))
            except StopAsyncIteration:
                self.exhausted = True
            except Exception as exc:
                self._source_failed(exc)
        return None

    # -- running items ---------------------------------------------------------------

    def _done(self) -> bool:
        """Whether a worker takes no more items: they ran out, or fail-fast stopped the
        call before this instant (an item due at the instant of the first failure
        still begins)."""
        return self.exhausted or (self.stopping and self.be.current_time() > self.stop_at)

    async def worker(self, first: bool = True) -> None:
        """Take items and run them until the items run out or the pool stops.

        ``first``: whether this task has run no item yet (``_first_worker`` runs one first).
        Fail-fast stops it after the instant of the first failure: an item due at that
        instant (a worker is free then) still begins, as a flow's unit does (see
        :meth:`_cancel_all`).
        """
        sync = self.lock is None
        be = self.be
        quiescent = self.quiescent
        streak = 0
        while not self.exhausted and (not self.stopping or be.current_time() <= self.stop_at):  # (_done, inline)
            # like a flow's workers: a checkpoint every YIELD_EVERY items, so items
            # that never await cannot starve other tasks nor hold off a cancellation
            streak += 1
            if streak >= YIELD_EVERY:
                streak = 0
                if self.stopping:  # (at the stop instant: the items due then begin)
                    await self._pass()
                else:
                    await be.checkpoint()
                if self._done():
                    return
            if quiescent and not first and self._settles():
                # under trioflow.testing, as a flow's workers do: take the next item
                # once this virtual instant has settled, so that what the other items
                # do at this instant happens first (unless the harness takes it at
                # once, as production does)
                self.settling += 1
                try:
                    await wait_all_tasks_blocked()
                finally:
                    self.settling -= 1
                if self._done():
                    return
            first = False
            taken = self._next_sync() if sync else await self._next_async()
            if taken is None:
                return
            try:
                await self._run_item(*taken)
            except Exception as exc:  # the engine's own error: a failure of that item
                add_note(exc, f"trioflow: internal error while running {self.what} {taken[0]}")
                if taken[0] not in self.errors:
                    self.retrying.pop(taken[0], None)
                    self._failed(taken[0], exc, self.attempts.get(taken[0], 1), be.current_time())

    async def _cancel_all(self, cohort: Any) -> None:
        """Fail fast: cancel every item, once the failures and the items due at the
        instant of the first failure have landed, by the rule of a flow's
        ``Run._cancel_all``: every attempt that fails at that instant is reported as
        failed, and every item due then (a worker is free) still begins its first
        attempt, whichever of the instant's events the async library runs first.

        One scheduling batch after the failure (this task's first step); under
        ``trioflow.testing``, once every task is blocked, after the workers settling at
        that instant have taken their items, or as plain trio lands it (the harness's
        cancel decision, with *cohort* the tasks of the failure's batch).
        """
        if self.quiescent:
            hooks: Any = settle_decision.get()
            if cohort is not None and hooks.cancel_decision():
                await hooks.wait_cohort(cohort)
                if self.settling:  # (they began to settle before: they go first)
                    await wait_after_settling()
            else:
                await wait_after_settling()
        # an item whose attempt failed at the instant the call stopped, and that
        # waits to retry, failed at that instant too: report it as failed
        for index, (error, attempt, failed_at) in list(self.retrying.items()):
            if failed_at >= self.stop_at:
                del self.retrying[index]
                self._failed(index, error, attempt, failed_at)
        self.scope.cancel()

    async def _run_item(self, index: int, item: Any, first: Any = None) -> None:
        be = self.be
        if self.name is None:
            name = self.names[index] = _fn_name(item)
        else:
            name = self.name
        parent = self.parent
        usage: dict[str, float] = {}
        ctx_name, run_id = (name, None) if parent is None else (parent.name, parent.run_id)
        retry = self.retry
        limiter = self.limiter
        line = line_for(limiter, None) if isinstance(limiter, RateLimit) else None
        holding = False
        attempt = 0
        try:
            if limiter is not None and line is None:
                await limiter.acquire()
                holding = True
            while True:
                attempt += 1
                if line is not None:  # every attempt takes a token
                    await wait_turn(line, (index,), be)
                if attempt > 1:
                    self.attempts[index] = attempt
                token = _current.set(StepContext(ctx_name, attempt, index, run_id, usage))
                try:
                    if first is None:
                        call = self.call(item)
                        if not inspect.isawaitable(call):
                            raise _not_awaitable(self.label, self.call, "item", call)
                    else:  # the call map() made to check that it returns an awaitable
                        call, first = first, None
                    value = await call
                except Exception as exc:
                    error: Exception = exc if be.name == "trio" else explain(exc, f"{self.label} item {index}")
                else:
                    self.values[index] = value
                    del self.started[index]
                    return
                finally:
                    _current.reset(token)
                failed_at = be.current_time()
                wait, error = (None, error) if self.stopping else next_wait(
                    retry, error, attempt, seed=self.seed, step=name, item=index
                )
                if wait is None:
                    self._failed(index, error, attempt, failed_at)
                    return
                # decide once the failures of this instant have landed (see Run._attempts)
                await self._settle()
                if self.stopping:
                    self._failed(index, error, attempt, failed_at)
                    return
                self.retrying[index] = (error, attempt, failed_at)
                await be.sleep(wait)
                if index in self.retrying:  # begin the next attempt once this instant settled
                    await self._settle()
                if index not in self.retrying:  # the call stopped, and reported this failure
                    return
                del self.retrying[index]
                if self.stopping:
                    if failed_at >= self.stop_at:
                        self._failed(index, error, attempt, failed_at)
                    return
        finally:
            if holding:
                limiter.release()
            if usage:
                self.usages[index] = usage
                if parent is not None:
                    parent.add_usage(**usage)  # items' usage sums into the enclosing step

    def _failed(self, index: int, error: Exception, attempt: int, now: float) -> None:
        add_note(
            error,
            f"trioflow: {self.what} {index} ({self._item_name(index)!r}) of {self.label} "
            f"failed on attempt {attempt}",
        )
        if self.soft:  # on_item_error="none": its value stays None, and nothing is kept
            self.started.pop(index, None)
            return
        self.errors[index] = error
        self.finished[index] = now
        if self.fail_fast:
            self._stop()

    def _settles(self) -> bool:
        """Under trioflow.testing: settle before taking the next item, or take it at once as
        production does? The harness's hand-over decision, as a flow's workers ask it.

        Nothing the other items do at this instant changes which item comes next
        (the iterator's next one; a failure lets the items due now begin), so the
        harness may take it at once even while they can run (``_fixed``)."""
        decide = settle_decision.get()
        return decide is None or bool(decide(self.nursery, _fixed))

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_at = self.be.current_time()
            # (under the harness: the tasks plain trio would run before the cancellation)
            cohort = getattr(settle_decision.get(), "cancel_cohort", None) if self.quiescent else None
            self.nursery.start_soon(self._cancel_all, None if cohort is None else cohort())

    async def _settle(self) -> None:
        """Let the other tasks woken at this instant run first (not cancellable).

        One scheduling batch; in quiescent mode (under ``trioflow.testing``),
        until every task is blocked, so that what happens at one virtual
        instant does not depend on the schedule.
        """
        if self.quiescent:
            with anyio.CancelScope(shield=True):
                await wait_all_tasks_blocked()
        else:
            await self._pass()

    async def _pass(self) -> None:
        """One scheduling batch, not cancellable."""
        if self.be.name == "trio":
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await anyio.lowlevel.cancel_shielded_checkpoint()

    # -- the call --------------------------------------------------------------------

    async def _first_worker(self, index: int, item: Any, call: Awaitable[Any]) -> None:
        try:
            await self._run_item(index, item, first=call)
        except Exception as exc:  # the engine's own error: a failure of that item
            add_note(exc, f"trioflow: internal error while running {self.what} {index}")
            if index not in self.errors:
                self._failed(index, exc, self.attempts.get(index, 1), self.be.current_time())
        await self.worker(first=False)

    async def run(
        self, workers: int, first: tuple[int, Any, Awaitable[Any]] | None = None, checkpointed: bool = False
    ) -> list[Any]:
        be = self.be
        if not checkpointed:
            await be.checkpoint()  # always a checkpoint, even with no items
        started_at = be.current_time()
        internal: list[Exception] = []
        try:
            async with be.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                self.nursery = nursery
                if first is not None:
                    nursery.start_soon(self._first_worker, *first)
                    workers -= 1
                for _ in range(workers):
                    nursery.start_soon(self.worker)
        except BaseExceptionGroup as group:
            # our own nursery wrapped it: KeyboardInterrupt, SystemExit and
            # cancellation leave as themselves, anything else as a FlowError
            escaped, internal = split_escaped(group, _cancelled_class(be))
            if escaped is not None:
                raise escaped from None
        if self.errors or self.source_error is not None or internal:
            raise self._flow_error(started_at, be.current_time(), internal)
        return self.values

    def _flow_error(self, started_at: float, finished_at: float, internal: list[Exception]) -> FlowError:
        steps: dict[str, StepResult] = {}
        cancelled = 0
        no_usage: Mapping[str, float] = {}
        for i in range(len(self.values)):
            name = self._item_name(i)
            error = self.errors.get(i)
            if error is not None:
                status = StepStatus.FAILED
            elif i in self.started:
                status = StepStatus.CANCELLED
                cancelled += 1
            else:
                status = StepStatus.SUCCEEDED
            steps[name] = StepResult(
                name=name,
                status=status,
                value=self.values[i] if status is StepStatus.SUCCEEDED else None,
                error=error,
                attempts=self.attempts.get(i, 1),
                started_at=self.started.get(i),
                finished_at=self.finished.get(i),
                usage=self.usages.get(i, no_usage),
            )
        result = RunResult(flow=self.label, steps=steps, started_at=started_at, finished_at=finished_at)
        failed = sorted(self.errors)
        errors = [self.errors[i] for i in failed]
        listed = ", ".join(repr(self._item_name(i)) for i in failed[:_MAX_LISTED])
        if len(failed) > _MAX_LISTED:
            listed += f", … ({len(failed) - _MAX_LISTED} more)"
        parts = []
        if failed:
            parts.append(f"{len(failed)} item{'s' if len(failed) > 1 else ''} failed: {listed}")
        if self.source_error is not None:
            errors.append(self.source_error)
            parts.append("iterating over the items raised")
        if internal:
            errors.extend(internal)
            parts.append(f"{len(internal)} internal error(s)")
        if cancelled:
            parts.append(f"{cancelled} cancelled")
        return FlowError(f"{self.label}: " + "; ".join(parts), errors, result)


def _iterate(items: object, what: str) -> Iterator[Any] | AsyncIterator[Any]:
    if isinstance(items, str | bytes | bytearray | Mapping):
        hint = (
            "pass list(mapping) for its keys or mapping.items() for pairs"
            if isinstance(items, Mapping)
            else "wrap it in a list to map over it as one item, or pass list(text) for its characters"
        )
        raise TypeError(
            f"{what} maps over an iterable of items, but got {_short(items)} that is a "
            f"{type(items).__name__}; {hint}"
        )
    if isinstance(items, AsyncIterable):
        return aiter(items)
    if isinstance(items, Iterable):
        return iter(items)
    raise TypeError(
        f"{what} takes an iterable or async iterable of items (got {_short(items)} that is a "
        f"{type(items).__name__})"
    )


def _check_limiter(limiter: object, what: str) -> None:
    """``limiter=`` of map and gather: a CapacityLimiter or an unkeyed RateLimit."""
    if limiter is None:
        return
    if isinstance(limiter, KeyedLimiter) or (isinstance(limiter, RateLimit) and limiter.keyed):
        raise GraphError(
            f"{what}(limiter={limiter!r}): a keyed limiter needs a key per call, which {what} "
            f"does not take; use it in a flow step with limit_key=, or pass a CapacityLimiter "
            f"or an unkeyed RateLimit"
        )
    if isinstance(limiter, RateLimit):
        return
    if callable(getattr(limiter, "acquire", None)) and callable(getattr(limiter, "release", None)):
        return
    raise TypeError(
        f"{what}(limiter=...) takes a CapacityLimiter or a trioflow.RateLimit "
        f"(got {limiter!r} that is a {type(limiter).__name__})"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    max_concurrent: int = 10,
    retry: Retry | None = None,
    error_handling: ErrorHandling = "fail_fast",
    limiter: Any = None,
    on_item_error: Literal["fail", "none"] = "fail",
) -> list[R]:
    """Call ``await fn(item)`` for every item, at most ``max_concurrent`` at once.

    ``items`` may be any iterable, including a generator or an async iterable too
    large to hold in memory: items are taken lazily, only as workers free up, so
    at most ``max_concurrent`` items are in flight and the memory for in-flight
    work is O(``max_concurrent``) (the results are kept, of course; nothing
    else is kept per finished item). At least every 16 items each worker
    reaches a checkpoint, even if ``fn`` never awaits. Items are
    passed as they are, like the built-in :func:`map`; use a map step
    (``@flow.step(map_over=...)``) for a copy of each item per attempt.

    Each item has its own retry counter. Inside ``fn``,
    :func:`trioflow.current_step` gives the item's index and attempt; its
    ``name`` is ``fn``'s name (inside a flow step, the step's name and run id,
    and the items' usage sums into the step's usage).

    Works under trio and asyncio. A checkpoint; it returns only when every task
    it started has ended. Cancellation from outside cancels every item and
    propagates as it is.

    Args:
        fn: a callable of one argument that returns an awaitable (an async
            function, a partial or bound method of one, a lambda returning a
            coroutine, an object with ``async def __call__``), as trio's
            ``start_soon`` takes; the first call is checked before any runs.
        items: the items, in order.
        max_concurrent: at most this many items at once (an int >= 1). Unlike
            the batch node's 1..100 setting there is no upper cap: with an
            async source of slow I/O calls, thousands in flight can be right.
        retry: a :class:`~trioflow.Retry` policy, applied to each item on its own.
        error_handling: ``"fail_fast"`` (default) cancels the running items at
            the first failure (after its retries): an item whose worker is
            free at that very clock reading still begins, and is cancelled at
            its first await (as a flow's steps due then are, see
            :doc:`errors`); ``"continue"`` tries every item and reports every
            failure at the end.
        limiter: a ``CapacityLimiter`` each item holds while it runs (its
            attempts and their waits), or a :class:`~trioflow.RateLimit` whose
            bucket every attempt takes a token from. Shared with whatever else
            is given the same object.
        on_item_error: ``"fail"`` (default) as ``error_handling`` says;
            ``"none"``: a failed item (after its retries) becomes ``None`` in
            the returned list and nothing is raised for it.

    Returns:
        The results, in item order whatever the completion order.

    Raises:
        FlowError: one or more items failed (or iterating over ``items``
            raised). It holds each item's exception, with a note naming the
            item index; ``.result`` is a :class:`~trioflow.RunResult` with one
            :class:`~trioflow.StepResult` per item taken, named
            ``"<fn name>[<index>]"``, so successful values are at
            ``err.result["fetch[0]"]``. Under ``fail_fast``, items not yet taken
            from ``items`` are absent, and running ones are ``cancelled``.
            Times are kept only for items that did not succeed (a succeeded
            item's ``started_at`` and ``finished_at`` are ``None``), so that
            nothing is kept per finished item beyond its result.
        TypeError: ``fn`` is not callable, or its first call returns something
            that is not awaitable; ``items`` is not iterable (or is a string,
            bytes or mapping), or an option has the wrong type.
        GraphError: ``max_concurrent < 1`` or an unknown ``error_handling``.

    Example:
        >>> import trio, trioflow
        >>> async def double(x: int) -> int:
        ...     await trio.sleep(0)
        ...     return 2 * x
        >>> trio.run(trioflow.map, double, range(5))
        [0, 2, 4, 6, 8]
    """
    _check_callable(fn, "trioflow.map")
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
        raise TypeError(
            f"trioflow.map(max_concurrent=...) must be an int >= 1 (got {max_concurrent!r} that "
            f"is a {type(max_concurrent).__name__}); items are taken lazily by that many workers"
        )
    if max_concurrent < 1:
        raise GraphError(f"trioflow.map(max_concurrent={max_concurrent!r}) must be at least 1")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(
            f"trioflow.map(retry=...) takes a trioflow.Retry (got {retry!r}); "
            f"for example retry=trioflow.Retry(max_attempts=3)"
        )
    _check_error_handling(error_handling, "trioflow.map")
    _check_limiter(limiter, "trioflow.map")
    _check_on_item_error(on_item_error, "trioflow.map")
    iterator = _iterate(items, "trioflow.map")
    workers = max_concurrent
    if isinstance(items, Sized):
        workers = min(workers, len(items))
    name = _fn_name(fn)
    pool = _Pool(
        be=current_backend(),
        label=f"trioflow.map({name})",
        what="map item",
        call=fn,
        name=name,
        iterator=iterator,
        retry=retry,
        fail_fast=error_handling == "fail_fast",
        limiter=limiter,
        soft=on_item_error == "none",
    )
    # Check the first call before any call runs: fn must return an awaitable.
    await pool.be.checkpoint()  # always a checkpoint, even with no items; before any call
    taken = pool._next_sync() if pool.lock is None else await pool._next_async()
    if taken is None:
        return await pool.run(0, checkpointed=True)  # no items (or iterating raised: a FlowError)
    index, first = taken
    try:
        call = fn(first)
    except Exception as exc:  # the first item's first attempt failed when called
        call = _raise(exc)
    if not inspect.isawaitable(call):
        raise _not_awaitable(f"trioflow.map({name})", fn, repr(first), call)
    return await pool.run(max(workers, 1), (index, first, call), checkpointed=True)


class _Call:
    """One ``gather`` argument, already called: named after the callable."""

    __slots__ = ("__name__", "awaitable")

    def __init__(self, fn: object, awaitable: Any) -> None:
        self.__name__ = _fn_name(fn)
        self.awaitable = awaitable


def _await_call(call: _Call) -> Awaitable[Any]:
    return _await_it(call.awaitable)


def _close(calls: list[_Call]) -> None:
    """Close coroutines that will never be awaited, so Python does not warn about them."""
    for c in calls:
        if inspect.iscoroutine(c.awaitable):
            c.awaitable.close()


async def gather(
    *fns: Callable[[], Awaitable[Any]], max_concurrent: int | None = None, limiter: Any = None
) -> list[Any]:
    """Run zero-argument async callables concurrently (the planner's ``call_tools_parallel``).

    Each argument is a callable that takes no arguments and returns an
    awaitable, as trio's ``start_soon`` takes: an async function, a
    :func:`functools.partial` (``gather(partial(search, "a"), partial(search,
    "b"))``), a bound method, a lambda returning a coroutine, an object with
    ``async def __call__``. Every one is called before any runs. Inside each function, :func:`trioflow.current_step`
    gives its name and its argument index as ``item``.

    The first failure cancels the others at their next await (fail-fast). Works
    under trio and asyncio; a checkpoint; returns only when every task it
    started has ended.

    Args:
        fns: callables taking no arguments that return awaitables.
        max_concurrent: at most this many at once; ``None`` (default) runs them all.
        limiter: a ``CapacityLimiter`` each call holds while it runs, or a
            :class:`~trioflow.RateLimit` each call takes a token from as it starts.

    Returns:
        Their results, in argument order.

    Raises:
        FlowError: a function raised. ``.result`` has one
            :class:`~trioflow.StepResult` per function, named
            ``"<function name>[<argument index>]"``.
        TypeError: an argument is not callable (a coroutine object, say), or its
            call returns something that is not awaitable; raised before any
            call runs.

    Example:
        >>> import functools, trio, trioflow
        >>> async def search(query: str) -> str:
        ...     await trio.sleep(0)
        ...     return f"results for {query}"
        >>> trio.run(trioflow.gather, functools.partial(search, "a"), functools.partial(search, "b"))
        ['results for a', 'results for b']
    """
    for i, fn in enumerate(fns):
        _check_callable(fn, f"trioflow.gather (argument {i})")
    if max_concurrent is not None:
        check_max_concurrent(max_concurrent, "trioflow.gather(max_concurrent=...)")
    _check_limiter(limiter, "trioflow.gather")
    be = current_backend()
    await be.checkpoint()  # always a checkpoint; a cancelled caller calls nothing
    # every call first, so a callable that returns no awaitable is refused before any runs
    calls: list[_Call] = []
    try:
        for i, fn in enumerate(fns):
            try:
                awaitable = fn()
            except Exception as exc:  # fails as that argument's call, like an async raise
                awaitable = _raise(exc)
            calls.append(_Call(fn, awaitable))
            if not inspect.isawaitable(awaitable):
                raise _not_awaitable(f"trioflow.gather (argument {i})", fn, "", awaitable)
    except TypeError:
        _close(calls)
        raise
    workers = len(fns) if max_concurrent is None else min(max_concurrent, len(fns))
    pool = _Pool(
        be=be,
        label="trioflow.gather",
        what="gather argument",
        call=_await_call,
        name=None,
        iterator=iter(calls),
        retry=None,
        fail_fast=True,
        limiter=limiter,
    )
    try:
        return await pool.run(workers, checkpointed=True)
    finally:
        _close(calls[len(pool.values) :])  # the calls fail-fast never started


public_home(map, gather)  # trioflow imports them when first used
