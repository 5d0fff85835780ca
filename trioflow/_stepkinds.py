"""What flow-file steps do: run a command (``shell``), call a URL (``http``),
call a Python function (``python``).

Each kind is an async function that takes the step's fields with every
template already filled in and returns the step's output. The flow-file
loader (``_flowfile``) checks the fields before any step runs; here they are
only converted (``str()`` where a string is required).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from ._exceptions import TrioflowError

__all__ = ["CommandError", "run_http", "run_python", "run_shell"]

_STDERR_TAIL = 2000  # characters of stderr kept in a failed command's message


class CommandError(TrioflowError):
    """A ``shell`` step's command exited with a non-zero status.

    Attributes:
        returncode: the exit status (negative: killed by that signal).
        stderr: the end of what the command wrote to standard error.
    """

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip()
        if len(tail) > _STDERR_TAIL:
            tail = "..." + tail[-_STDERR_TAIL:]
        message = f"command {argv!r} exited with code {returncode}"
        super().__init__(f"{message}: {tail}" if tail else message)
        self.argv = argv
        self.returncode = returncode
        self.stderr = tail


def _kill_group(process: anyio.abc.Process) -> None:
    """Kill the command and everything it started (its own process group)."""
    if process.returncode is not None:
        return
    try:
        if sys.platform == "win32":  # pragma: no cover - no process groups there
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - it ended just now
        pass


async def run_shell(fields: Mapping[str, Any]) -> str:
    """Run a command; its output is stdout as text without the trailing newline.

    The command runs in a process group of its own: cancelling the step kills
    the whole group (the command and its children), then waits for it.

    Raises:
        CommandError: the command exited with a non-zero status.
    """
    if fields.get("shell"):
        argv = ["/bin/sh", "-c", str(fields["command"])]
    else:
        argv = [str(a) for a in fields["argv"]]
    env = None
    if fields.get("env"):
        env = {**os.environ, **{str(k): str(v) for k, v in fields["env"].items()}}
    cwd = str(fields["cwd"]) if fields.get("cwd") is not None else None
    stdin = fields.get("stdin")
    data = None if stdin is None else str(stdin).encode()
    # shielded: a cancellation that came while the process was being started would
    # leave it running; here it comes at the first await below, which kills the group
    with anyio.CancelScope(shield=True):
        process = await anyio.open_process(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    out: list[bytes] = []
    err: list[bytes] = []

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: list[bytes]) -> None:
        if stream is not None:
            async for chunk in stream:
                into.append(chunk)

    async def feed() -> None:
        if process.stdin is not None and data is not None:
            try:
                await process.stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the command did not read all of it: that is its business
            finally:
                await process.stdin.aclose()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stdout, out)
            tg.start_soon(drain, process.stderr, err)
            tg.start_soon(feed)
            await process.wait()
    finally:
        _kill_group(process)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
    returncode = process.returncode
    assert returncode is not None
    if returncode != 0:
        raise CommandError(argv, returncode, b"".join(err).decode(errors="replace"))
    text = b"".join(out).decode(errors="replace")
    return text[:-1] if text.endswith("\n") else text


def load_httpx() -> Any:
    """The httpx module, or :class:`ImportError` with the install command."""
    try:  # imported by name: httpx is an optional extra, not needed to type-check trioflow
        httpx = importlib.import_module("httpx")
    except ImportError:
        raise ImportError(
            "the 'http' kind needs httpx, which is not installed; install it with "
            "pip install 'trioflow[http]'"
        ) from None
    return httpx


async def run_http(fields: Mapping[str, Any]) -> Any:
    """Send a request; the output is the parsed JSON for a JSON response, else the text.

    Raises:
        httpx.HTTPStatusError: the response status is not 2xx (``.response.status_code``).
    """
    httpx = load_httpx()
    kwargs: dict[str, Any] = {}
    if fields.get("headers"):
        kwargs["headers"] = {str(k): str(v) for k, v in fields["headers"].items()}
    if "json" in fields:
        kwargs["json"] = fields["json"]
    elif "body" in fields:
        kwargs["content"] = str(fields["body"]).encode()
    method = str(fields.get("method", "GET")).upper()
    async with httpx.AsyncClient(follow_redirects=True, timeout=None) as client:
        response = await client.request(method, str(fields["url"]), **kwargs)
    response.raise_for_status()
    content_type = response.headers.get("content-type", "")
    if "json" in content_type.split(";")[0]:
        return response.json()
    return response.text


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (async functions, async ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


async def run_python(fn: Callable[..., Any], args: Mapping[str, Any]) -> Any:
    """Call ``fn(**args)``: awaited on the event loop when async, else in a worker thread."""
    if is_async(fn):
        return await fn(**args)
    return await anyio.to_thread.run_sync(functools.partial(fn, **args))
