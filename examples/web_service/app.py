"""A Starlette service that runs a trioflow flow per request (the "Embedding in a
web service" recipe).

* one ``httpx.AsyncClient`` for the whole service, given to the steps as a
  *resource* (shared, never copied);
* one ``anyio.CapacityLimiter`` shared by every request, so the whole service
  never has more than ``LIMIT`` steps calling the backend at once, however
  many requests come in;
* a request whose client disconnects cancels its run: no step starts or keeps
  running after that (:func:`run_until_disconnected`).

Run it with ``uvicorn --factory web_service.app:create_app`` (with
``BACKEND_URL`` set), or see ``tests/test_web_service.py``, which serves it
with uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import trioflow

T = TypeVar("T")

LIMIT = 4  # steps calling the backend at once, across every request

flow = trioflow.Flow("answer", inputs=("question",), resources=("client", "log"))


@flow.step
async def search(question: str, client: httpx.AsyncClient, log: list[Any]) -> list[str]:
    """Find documents about the question."""
    log.append((time.monotonic(), question, "search", "start"))
    response = await client.get("/search", params={"q": question})
    log.append((time.monotonic(), question, "search", "end"))
    hits: list[str] = response.json()["hits"]
    return hits


@flow.step(map_over="search")
async def read(search: str, question: str, client: httpx.AsyncClient, log: list[Any]) -> str:
    """Read each document found."""
    log.append((time.monotonic(), question, f"read {search}", "start"))
    response = await client.get("/page", params={"id": search})
    log.append((time.monotonic(), question, f"read {search}", "end"))
    text: str = response.json()["text"]
    return text


@flow.step
async def answer(question: str, read: list[str]) -> str:
    """Put the answer together."""
    return f"{question}: " + " | ".join(read)


async def run_until_disconnected(request: Request, fn: Callable[[], Awaitable[T]]) -> T | None:
    """``await fn()``, cancelled the moment the client disconnects (then ``None``).

    Reads the request's body first if you need it: this waits on the ASGI
    ``receive`` channel for ``http.disconnect``.
    """
    result: T | None = None
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            result = await fn()
        except Exception as exc:  # raised after the task group, not wrapped in a group
            error = exc
        tg.cancel_scope.cancel()  # done: stop watching
    if error is not None:
        raise error
    return result


async def ask(request: Request) -> Response:
    body = await request.json()
    question = body["question"]
    state = request.app.state
    started = time.monotonic()
    result = await run_until_disconnected(
        request,
        lambda: flow.run(
            {"question": question},
            limiter=state.limiter,  # shared by every request
            resources={"client": state.client, "log": state.log},
        ),
    )
    if result is None:  # the client went away: the run was cancelled, nobody to answer
        state.cancelled[question] = time.monotonic()
        return Response(status_code=499)
    return JSONResponse({"answer": result[answer], "seconds": time.monotonic() - started})


def create_app(backend_url: str | None = None, limit: int = LIMIT) -> Starlette:
    """The service; ``backend_url`` is where the search and page endpoints live."""
    url = backend_url or os.environ.get("BACKEND_URL", "http://127.0.0.1:8001")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=url) as client:
            app.state.client = client
            app.state.limiter = anyio.CapacityLimiter(limit)
            app.state.log = []  # (time, question, step, "start" | "end"): for the tests
            app.state.cancelled = {}  # question -> when its run was cancelled
            yield

    return Starlette(routes=[Route("/ask", ask, methods=["POST"])], lifespan=lifespan)
