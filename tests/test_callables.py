"""``gather`` and ``map`` take callables the way trio's ``start_soon`` does (issue 11 item 5)."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import trioflow

pytestmark = pytest.mark.anyio


async def fetch(x: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return x


class Client:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def get(self, x: Any) -> str:
        await anyio.lowlevel.checkpoint()
        self.seen.append(x)
        return f"got {x}"


class Doubler:
    async def __call__(self, x: int = 1) -> int:
        await anyio.lowlevel.checkpoint()
        return 2 * x


class Ready:
    """An awaitable that is not a coroutine."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        yield from anyio.lowlevel.checkpoint().__await__()
        return self.value


async def test_issue_11_item_5_gather_takes_every_kind_of_callable() -> None:
    client = Client()
    results = await trioflow.gather(
        lambda: fetch("lambda"),
        functools.partial(fetch, "partial"),
        functools.partial(client.get, "bound"),
        lambda: client.get("bound-lambda"),
        Doubler(),
        lambda: Ready("awaitable"),
    )
    assert results == ["lambda", "partial", "got bound", "got bound-lambda", 2, "awaitable"]


async def test_issue_11_item_5_map_takes_every_kind_of_callable() -> None:
    client = Client()
    assert await trioflow.map(lambda x: fetch(x), [1, 2]) == [1, 2]
    assert await trioflow.map(client.get, [1, 2]) == ["got 1", "got 2"]
    assert await trioflow.map(Doubler(), [1, 2, 3]) == [2, 4, 6]
    assert await trioflow.map(Ready, [1, 2]) == [1, 2]  # a class whose instances are awaitable
    assert await trioflow.map(lambda x: fetch(x), []) == []


def not_awaitable() -> int:
    return 5


async def test_issue_11_item_5_gather_refuses_a_non_awaitable_before_running_anything() -> None:
    started: list[str] = []

    async def tracked(name: str) -> str:
        started.append(name)
        await anyio.lowlevel.checkpoint()
        return name

    with pytest.raises(
        TypeError,
        match="^"
        + re.escape(
            "trioflow.gather (argument 1) expects a callable that returns an awaitable (an async "
            "function, a partial of one, a lambda returning a coroutine), but <lambda>() returned 5 "
            "that is a int; define the function with 'async def'"
        )
        + "$",
    ):
        await trioflow.gather(
            functools.partial(tracked, "a"), lambda: not_awaitable(), functools.partial(tracked, "c")
        )
    assert started == []  # the coroutine made for argument 0 was closed, never run


async def test_issue_11_item_5_map_checks_its_first_call_before_any_runs() -> None:
    calls: list[int] = []

    def sync(x: int) -> int:
        calls.append(x)
        return x

    with pytest.raises(TypeError, match=r"trioflow.map\(sync\) expects a callable .* but sync\(1\) returned 1"):
        await trioflow.map(sync, [1, 2, 3], max_concurrent=3)  # type: ignore[arg-type]
    assert calls == [1]


async def test_issue_11_item_5_a_later_non_awaitable_call_fails_that_item() -> None:
    def sometimes(x: int) -> Awaitable[int] | int:
        return fetch(x) if x < 2 else x

    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.map(sometimes, [0, 1, 2], max_concurrent=1)  # type: ignore[arg-type]
    assert info.value.result.steps["sometimes[2]"].status == "failed"
    assert isinstance(info.value.exceptions[0], TypeError)
    assert info.value.result["sometimes[0]"] == 0


async def test_issue_11_item_5_a_callable_raising_when_called_fails_its_call() -> None:
    def boom(x: int) -> Awaitable[int]:
        raise ValueError(f"boom {x}")

    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.map(boom, [1])
    assert str(info.value.exceptions[0]) == "boom 1"
    with pytest.raises(trioflow.FlowError) as info:
        await trioflow.gather(functools.partial(fetch, 1), lambda: boom(2))
    assert str(info.value.exceptions[0]) == "boom 2"


async def test_issue_11_item_5_fail_fast_gather_closes_the_calls_it_never_started() -> None:
    async def fail() -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("x")

    # under max_concurrent=1 the second call never starts; its coroutine must be closed
    # (pytest turns the "never awaited" warning into an error)
    with pytest.raises(trioflow.FlowError):
        await trioflow.gather(fail, functools.partial(fetch, 2), max_concurrent=1)


async def test_issue_11_item_5_steps_still_need_a_readable_async_function() -> None:
    flow = trioflow.Flow("f")
    with pytest.raises(TypeError, match="is a plain function"):
        flow.add(lambda: fetch(1))
