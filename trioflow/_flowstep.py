"""A flow-file step as read from the file, and the async function that runs it.

The function fills in the step's templates from its inputs and upstream
outputs, then does the work of its kind (``_stepkinds``); a batch step maps
that over its items with :func:`trioflow.map`, each item holding the step's
limiters (the objects of the current run, set by ``FlowFile.run``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._exceptions import FlowError
from ._limits import RateLimit
from ._map import map as map_items
from ._retry import Retry
from ._stepkinds import run_http, run_python, run_shell
from ._templates import resolve

__all__ = ["LOG", "RUN_LIMITERS", "Batch", "StepDef"]

LOG = logging.getLogger("trioflow.flowfile")
"""Where batch steps report the items that failed under ``error_handling = "continue"``."""
LOG.addHandler(logging.NullHandler())


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@attrs.frozen
class Batch:
    items: Any  # a compiled template tree
    name: str
    parallel: bool
    max_concurrent: int
    max_retries: int
    retry_wait: float
    error_handling: str


def _params(count: int) -> inspect.Signature:
    """A signature of ``count`` keyword-only parameters ``v0``, ``v1``, ...

    Step and input names in flow files may hold a '-', which parameter names
    cannot: each parameter is bound to its step or input with ``bind=``.
    """
    return inspect.Signature(
        [inspect.Parameter(f"v{i}", inspect.Parameter.KEYWORD_ONLY) for i in range(count)]
    )


@attrs.define
class StepDef:
    """A step as read from the file, before it is added to the :class:`Flow`."""

    name: str
    kind: str
    raw: Mapping[str, Any]
    folder: str
    description: str = ""
    after: list[str] = attrs.Factory(list)
    limiters: list[str] = attrs.Factory(list)
    timeout: float | None = None
    retry: Retry | None = None
    batch: Batch | None = None
    function: Callable[..., Any] | None = None
    tree: dict[str, Any] = attrs.Factory(dict)
    deps: set[str] = attrs.Factory(set)
    inputs: set[str] = attrs.Factory(set)

    def make(self) -> tuple[Callable[..., Any], dict[str, str]]:
        """The step function (it fills in the templates, then does the step's kind of
        work), and the ``bind=`` that gives its parameters the upstream outputs and inputs."""
        tree, batch, deps, used = self.tree, self.batch, sorted(self.deps), sorted(self.inputs)
        name = self.name
        kind = self.kind
        limiter_names = tuple(self.limiters)
        function = self.function

        async def act(fields: dict[str, Any]) -> Any:
            if kind == "shell":
                return await run_shell(fields)
            if kind == "http":
                return await run_http(fields)
            assert function is not None
            return await run_python(function, fields.get("args") or {})

        async def step(**values: Any) -> Any:
            scope: dict[str, Any] = {
                "inputs": {n: values[f"v{i + len(deps)}"] for i, n in enumerate(used)},
                "steps": {n: values[f"v{i}"] for i, n in enumerate(deps)},
            }
            if batch is None:
                return await act(resolve(tree, scope))
            items = resolve(batch.items, scope)
            if not isinstance(items, list | tuple):
                raise TypeError(
                    f"step {name!r}: batch.items must be a list (got {_show(items)}, "
                    f"a {type(items).__name__})"
                )

            held, rate = _item_limiters(name, limiter_names)
            extra = {} if rate is None else {"limiter": rate}  # each item's attempts take a token

            async def one(item: Any) -> Any:
                async with contextlib.AsyncExitStack() as stack:
                    for limiter in held:
                        await stack.enter_async_context(limiter)
                    return await act(resolve(tree, {**scope, batch.name: item}))

            one.__name__ = one.__qualname__ = name
            retry = Retry(max_attempts=batch.max_retries, wait=batch.retry_wait, backoff=1.0)
            width = batch.max_concurrent if batch.parallel else 1
            if batch.error_handling == "fail_fast":
                return await map_items(one, items, max_concurrent=width, retry=retry, **extra)

            # "continue", as the batch node does it: every item is tried (with its
            # retries), and a failed item's output is None; the step succeeds
            async def tried(pair: tuple[int, Any]) -> Any:
                index, item = pair
                try:
                    [value] = await map_items(one, [item], max_concurrent=1, retry=retry, **extra)
                except FlowError as exc:
                    error = exc.exceptions[0]
                    LOG.warning(
                        "step %r: item %d failed after %d attempt%s, so its output is null "
                        "(batch error_handling = continue): %s: %s",
                        name, index, batch.max_retries, "s" * (batch.max_retries != 1),
                        type(error).__name__, error,
                    )
                    return None
                return value

            tried.__name__ = tried.__qualname__ = name
            return await map_items(tried, list(enumerate(items)), max_concurrent=width)

        # the step's whole definition is part of the flow's structure: resuming a run
        # recorded with another version of the step is refused
        digest = hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()
        step.__name__ = name
        step.__qualname__ = f"{kind}:{digest[:16]}"
        sources = [*deps, *used]
        step.__signature__ = _params(len(sources))  # type: ignore[attr-defined]
        return step, {f"v{i}": source for i, source in enumerate(sources)}


RUN_LIMITERS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "trioflow_flow_file_limiters"
)


def _item_limiters(step: str, names: Sequence[str]) -> tuple[list[Any], Any]:
    """The limiter objects of the current ``FlowFile.run`` for a batch's items: the
    capacity limiters each item holds, and the rate limit (if any) that
    :func:`trioflow.map` applies to each item's attempts."""
    if not names:
        return [], None
    try:
        limiters = RUN_LIMITERS.get()
    except LookupError:
        raise RuntimeError(
            f"step {step!r}: a batch step with a limiter runs only through FlowFile.run(), "
            f"which makes the run's limiters"
        ) from None
    held = [limiters[n] for n in names]
    rates = [lim for lim in held if isinstance(lim, RateLimit)]
    return [lim for lim in held if lim not in rates], (rates[0] if rates else None)
