"""The hook around each attempt (issue 14: one hook that a span or a runner uses)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

import trioflow
from trioflow import Flow, FlowError, Retry
from trioflow._hooks import Attempt, add_attempt_hook, installed_hooks, remove_attempt_hook

pytestmark = pytest.mark.anyio

current_span: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_span", default=None)


class Recorder:
    """A hook that records each attempt's outcome and makes a 'span' current around it."""

    def __init__(self, label: str, log: list[Any]) -> None:
        self.label = label
        self.log = log

    async def around_attempt(self, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]) -> Any:
        self.log.append((self.label, "enter", attempt.step, attempt.item, attempt.attempt))
        token = current_span.set(f"{self.label}:{attempt.step}:{attempt.item}:{attempt.attempt}")
        try:
            value = await proceed()
        except Exception as exc:
            self.log.append((self.label, "raised", attempt.step, attempt.item, type(exc).__name__))
            raise
        finally:
            current_span.reset(token)
        self.log.append((self.label, "returned", attempt.step, attempt.item, value))
        return value


@pytest.fixture
def install() -> Iterator[Callable[[Any], None]]:
    added: list[Any] = []

    def add(hook: Any) -> None:
        add_attempt_hook(hook)
        added.append(hook)

    yield add
    for hook in added:
        remove_attempt_hook(hook)
    assert installed_hooks() == ()


async def test_hook_wraps_every_attempt_and_sees_values_and_errors(install: Callable[[Any], None]) -> None:
    log: list[Any] = []
    hook = Recorder("h", log)
    install(hook)
    seen: list[Attempt] = []

    class Keep:
        async def around_attempt(self, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]) -> Any:
            seen.append(attempt)
            return await proceed()

    install(Keep())
    flow = Flow("hooked")

    @flow.step(retry=Retry(max_attempts=2))
    async def flaky() -> str:
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("once")
        return "ok"

    @flow.step(map_over="xs", runner="thread")
    def each(xs: int) -> int:
        return xs + 1

    result = await flow.run({"xs": [1, 2]}, max_concurrent=1, run_id="r")
    assert result.outputs == {"flaky": "ok", "each": [2, 3]}
    assert log == [
        ("h", "enter", "flaky", None, 1),
        ("h", "raised", "flaky", None, "ConnectionError"),
        ("h", "enter", "flaky", None, 2),
        ("h", "returned", "flaky", None, "ok"),
        ("h", "enter", "each", 0, 1),
        ("h", "returned", "each", 0, 2),
        ("h", "enter", "each", 1, 1),
        ("h", "returned", "each", 1, 3),
    ]
    assert [(a.flow, a.step, a.item, a.attempt, a.run_id, a.runner) for a in seen] == [
        ("hooked", "flaky", None, 1, "r", "async"),
        ("hooked", "flaky", None, 2, "r", "async"),
        ("hooked", "each", 0, 1, "r", "thread"),
        ("hooked", "each", 1, 1, "r", "thread"),
    ]


async def test_first_installed_hook_is_outermost(install: Callable[[Any], None]) -> None:
    log: list[Any] = []
    install(Recorder("outer", log))
    install(Recorder("inner", log))
    flow = Flow("f")

    @flow.step
    async def a() -> int:
        return 1

    await flow.run()
    assert [entry[:2] for entry in log] == [
        ("outer", "enter"),
        ("inner", "enter"),
        ("inner", "returned"),
        ("outer", "returned"),
    ]


async def test_what_a_hook_makes_current_is_current_inside_the_step(install: Callable[[Any], None]) -> None:
    install(Recorder("span", []))
    flow = Flow("f")

    @flow.step
    async def on_loop() -> str | None:
        return current_span.get()

    @flow.step(runner="thread")
    def in_thread() -> str | None:
        return current_span.get()

    result = await flow.run()
    assert result["on_loop"] == "span:on_loop:None:1"
    assert result["in_thread"] == "span:in_thread:None:1"


async def test_hook_sees_the_timeout_of_an_attempt(install: Callable[[Any], None]) -> None:
    log: list[Any] = []
    install(Recorder("h", log))
    flow = Flow("f")

    @flow.step(timeout=1)
    async def slow() -> None:
        await anyio.sleep(10)

    with pytest.raises(FlowError):
        await flow.run()
    assert log == [("h", "enter", "slow", None, 1), ("h", "raised", "slow", None, "TimeoutError")]


async def test_runs_keep_the_hooks_they_started_with() -> None:
    log: list[Any] = []
    hook = Recorder("h", log)
    flow = Flow("f")

    @flow.step
    async def a() -> int:
        if hook in installed_hooks():
            remove_attempt_hook(hook)  # affects later runs only
        return 1

    @flow.step
    async def b(a: int) -> int:
        return a + 1

    add_attempt_hook(hook)
    await flow.run()
    assert [entry[2] for entry in log if entry[1] == "enter"] == ["a", "b"]
    log.clear()
    await flow.run()
    assert log == []


def test_add_and_remove_check_their_argument() -> None:
    with pytest.raises(TypeError, match="needs an async around_attempt"):
        add_attempt_hook(object())  # type: ignore[arg-type]
    hook = Recorder("h", [])
    add_attempt_hook(hook)
    try:
        with pytest.raises(ValueError, match="already installed"):
            add_attempt_hook(hook)
    finally:
        remove_attempt_hook(hook)
    with pytest.raises(ValueError, match="is not installed"):
        remove_attempt_hook(hook)


async def test_hook_wraps_process_steps_in_the_event_loop_task(install: Callable[[Any], None]) -> None:
    import _process_steps as steps

    seen: list[tuple[str, str, int | None]] = []

    class Keep:
        async def around_attempt(self, attempt: Attempt, proceed: Callable[[], Awaitable[Any]]) -> Any:
            value = await proceed()
            seen.append((attempt.step, attempt.runner, attempt.item))
            return value

    install(Keep())
    flow = Flow("f")
    flow.add(steps.square, runner="process", map_over="xs")
    result = await flow.run({"xs": [2, 3]})
    assert result["square"] == [4, 9]
    assert sorted(seen, key=lambda s: s[2] or 0) == [("square", "process", 0), ("square", "process", 1)]
