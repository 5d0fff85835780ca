"""``runner="process"`` (issue 14 item 2): CPU-bound steps in worker processes, cancelled for real."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import _process_steps as steps
import anyio
import pytest

from trioflow import Flow, FlowError, Retry, StepStatus

pytestmark = pytest.mark.anyio


def raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def wait_for_file(path: Path) -> int:
    """Block (in a thread) until ``path`` holds a process id; return it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


async def test_map_items_run_in_worker_processes_with_their_context() -> None:
    flow = Flow("p")
    flow.add(steps.whoami, runner="process", map_over="xs")
    flow.add(steps.square, runner="process", map_over="xs")
    result = await flow.run({"xs": [1, 2, 3, 4]}, run_id="run-7")
    seen = result["whoami"]
    assert [s[:4] for s in seen] == [("whoami", i, 1, "run-7") for i in range(4)]
    pids = {s[4] for s in seen}
    assert os.getpid() not in pids
    assert len(pids) >= min(2, os.cpu_count() or 1)  # the items spread over the workers
    assert result["square"] == [1, 4, 9, 16]
    assert result.steps["square"].usage == {"calls": 4, "units": 10}


async def test_exceptions_cross_with_type_message_and_a_note_and_are_retried() -> None:
    flow = Flow("p")
    flow.add(steps.flaky, runner="process", retry=Retry(max_attempts=2))
    flow.add(steps.raises_key_error, runner="process")
    with pytest.raises(FlowError) as info:
        await flow.run({"marker": "m"}, error_handling="continue")
    result = info.value.result
    assert result["flaky"] == "m on attempt 2"
    assert result.steps["flaky"].attempts == 2
    assert result.steps["flaky"].usage == {"tries": 2}  # usage of the failed attempt came back too
    (error,) = info.value.exceptions
    assert type(error) is KeyError
    assert error.args == ("missing key",)
    assert error.__notes__[0].startswith(
        "trioflow: raised by step 'raises_key_error' in a worker process; its traceback there:\n"
    )
    assert "raise KeyError" in error.__notes__[0]
    assert error.__notes__[-1] == "trioflow: step 'raises_key_error' failed on attempt 1"


async def test_what_cannot_cross_is_a_failure_naming_step_what_and_type() -> None:
    flow = Flow("p")
    flow.add(steps.echo, name="send", runner="process")  # its `value` is a flow input
    flow.add(steps.returns_lambda, runner="process")
    flow.add(steps.returns_unpicklable, runner="process")
    flow.add(steps.raises_needs_two, runner="process")
    with pytest.raises(FlowError) as info:
        await flow.run({"value": lambda: 2}, error_handling="continue")
    errors = {e.__notes__[-1]: e for e in info.value.exceptions}
    assert all(type(e) is TypeError for e in errors.values())
    messages = sorted(str(e) for e in errors.values())
    assert messages[0].startswith(
        "step 'raises_needs_two': exception NeedsTwo('this and that') cannot be sent back from the worker: TypeError:"
    )
    assert messages[1].startswith(
        "step 'returns_lambda': result (a function) cannot be sent back from the worker: "
    )
    assert messages[2] == (
        "step 'returns_unpicklable': result (a Unpicklable) cannot be sent back from the worker: "
        "TypeError: Unpicklable objects refuse to be pickled"
    )
    assert messages[3].startswith(
        "step 'send': parameter 'value' (a function) cannot be sent to a worker process: "
    )


def test_a_process_step_must_be_importable_by_reference() -> None:
    flow = Flow("p")

    def local(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"^step 'local': runner='process' needs a function that a worker "
                       r"process can import by reference, but <function .*local.*> is defined inside a "
                       r"function \(test_runner_process\.test_a_process_step_must_be_importable_by_reference"
                       r"\.<locals>\.local\); define it at module level in a module \(not __main__ nor a "
                       r"lambda or closure\)$"):
        flow.add(local, runner="process")
    with pytest.raises(TypeError, match=r"^step 'double': runner='process' needs .* is a lambda; "):
        flow.add(lambda x: 2 * x, name="double", runner="process")

    def main_function(x: int) -> int:
        return x

    main_function.__module__ = "__main__"
    main_function.__qualname__ = "main_function"
    with pytest.raises(TypeError, match=r"is defined in __main__ \(main_function\), which a worker process cannot import"):
        flow.add(main_function, runner="process")

    async def coro() -> None:
        pass

    with raises(
        TypeError,
        "step 'coro': runner='process' runs plain functions, but 'coro' is an async function; "
        "drop runner= to run it on the event loop, or define it with 'def'",
    ):
        flow.add(coro, runner="process")
    assert flow.steps == ()


async def test_fail_fast_kills_a_spinning_cpu_bound_step(tmp_path: Path) -> None:
    flow = Flow("p")
    pid_file = tmp_path / "pid"
    flow.add(steps.spin, runner="process")

    @flow.step
    async def fails() -> None:
        await anyio.to_thread.run_sync(wait_for_file, pid_file)
        raise ValueError("sibling failed")

    began = time.monotonic()
    with pytest.raises(FlowError) as info:
        await flow.run({"seconds": 120.0, "pid_file": str(pid_file)})
    took = time.monotonic() - began
    pid = int(pid_file.read_text())
    assert process_gone(pid)  # killed, not left spinning
    assert took < 60  # far less than the 120 s the step would spin (the kill takes milliseconds)
    result = info.value.result
    assert result.steps["spin"].status is StepStatus.CANCELLED
    assert result.steps["fails"].status is StepStatus.FAILED


async def test_timeout_kills_the_process_step(tmp_path: Path) -> None:
    flow = Flow("p")
    pid_file = tmp_path / "pid"
    flow.add(steps.spin, runner="process", timeout=0.5)
    with pytest.raises(FlowError) as info:
        await flow.run({"seconds": 120.0, "pid_file": str(pid_file)})
    (error,) = info.value.exceptions
    assert isinstance(error, TimeoutError)
    if pid_file.exists():  # under trio's virtual clock the deadline may pass before the worker starts
        assert process_gone(int(pid_file.read_text()))


async def test_cancellation_from_outside_kills_the_process_step(tmp_path: Path) -> None:
    flow = Flow("p")
    pid_file = tmp_path / "pid"
    flow.add(steps.spin, runner="process")
    async with anyio.create_task_group() as tg:
        tg.start_soon(flow.run, {"seconds": 120.0, "pid_file": str(pid_file)})
        pid = await anyio.to_thread.run_sync(wait_for_file, pid_file)
        tg.cancel_scope.cancel()
    assert process_gone(pid)


async def test_process_and_local_results_agree() -> None:
    local = Flow("local")

    @local.step(map_over="xs")
    async def burn(xs: int) -> int:
        return steps.burn(xs)

    remote = Flow("remote")
    remote.add(steps.burn, runner="process", map_over="xs")
    items = list(range(16))
    assert (await remote.run({"xs": items}))["burn"] == (await local.run({"xs": items}))["burn"]


async def test_what_pickles_but_cannot_be_unpickled_is_a_failure_naming_it() -> None:
    flow = Flow("p")
    flow.add(steps.echo, name="send", runner="process", isolation="share")  # (a copy would unpickle it)
    flow.add(steps.returns_one_way, runner="process")
    with pytest.raises(FlowError) as info:
        await flow.run({"value": steps.OneWay()}, error_handling="continue")
    messages = sorted(str(e) for e in info.value.exceptions)
    assert messages == [
        "step 'returns_one_way': result (a OneWay) cannot be unpickled here: "
        "ValueError: OneWay objects cannot be unpickled",
        "step 'send': parameter 'value' (a OneWay) cannot be unpickled in the worker: "
        "ValueError: OneWay objects cannot be unpickled",
    ]


async def test_a_process_step_gets_its_own_copy_without_isolation_copy() -> None:
    flow = Flow("p")

    @flow.step
    async def data() -> list[int]:
        return [1, 2]

    flow.add(steps.append_one, runner="process")

    @flow.step
    async def after(data: list[int], append_one: list[int]) -> tuple[list[int], list[int]]:
        return data, append_one

    assert flow.plan().nodes[1].spec.isolation == "share"  # pickling copies already
    result = await flow.run()
    assert result["after"] == ([1, 2], [1, 2, 1])
