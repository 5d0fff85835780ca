"""The web-service recipe, for real (issue 11 item 9): the Starlette app of
``examples/web_service/app.py`` served by uvicorn on 127.0.0.1, a backend served
the same way, concurrent requests sent with httpx, one client disconnecting
mid-run. Runs on asyncio (uvicorn's loop)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio

# every nox session that collects tests/ installs these (a missing one is an error, never a skip)
import httpx
import starlette.applications as starlette_apps
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

APP = Path(__file__).resolve().parent.parent / "examples" / "web_service" / "app.py"
REQUESTS = 20
LIMIT = 4
DOCS_PER_QUESTION = 3


def load_app_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_trioflow_web_service_app", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Backend:
    """The search and page endpoints the steps call; counts calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.release = anyio.Event()  # set at the end: the slow reads return, shutdown is clean
        self.app = starlette_apps.Starlette(
            routes=[Route("/search", self.search), Route("/page", self.page)]
        )

    async def _work(self, seconds: float, slow: bool = False) -> None:
        self.in_flight += 1
        self.calls += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if slow:
                with anyio.move_on_after(seconds):
                    await self.release.wait()
            else:
                await anyio.sleep(seconds)
        finally:
            self.in_flight -= 1

    async def search(self, request: Request) -> JSONResponse:
        q = request.query_params["q"]
        await self._work(0.3 if q == "slow" else 0.02)
        return JSONResponse({"hits": [f"{q}-{i}" for i in range(DOCS_PER_QUESTION)]})

    async def page(self, request: Request) -> JSONResponse:
        doc = request.query_params["id"]
        await self._work(30.0, slow=True) if doc.startswith("slow") else await self._work(0.02)
        return JSONResponse({"text": f"text of {doc}"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve(app: Any, port: int, tg: anyio.abc.TaskGroup) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    tg.start_soon(server.serve)
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await anyio.sleep(0.01)
    return server


async def disconnect_mid_run(port: int, app_state: Any) -> tuple[float, float]:
    """Send a request on a raw socket, close it once its run has started steps:
    (when it closed, when the app saw its run cancelled)."""
    body = json.dumps({"question": "slow"}).encode()
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(
        b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    while not any(q == "slow" and what.startswith("read") for _, q, what, _ in app_state.log):  # noqa: ASYNC110
        await anyio.sleep(0.01)  # until the map step's reads are running (the app's log)
    closed = time.monotonic()
    await stream.aclose()
    while "slow" not in app_state.cancelled:  # noqa: ASYNC110 - the app's record
        await anyio.sleep(0.005)
    return closed, app_state.cancelled["slow"]


async def with_servers(test: Any) -> None:
    """Serve the backend and the app with uvicorn on 127.0.0.1 while ``test`` runs."""
    module = load_app_module()
    backend = Backend()
    backend_port, app_port = free_port(), free_port()
    app = module.create_app(f"http://127.0.0.1:{backend_port}", limit=LIMIT)
    async with anyio.create_task_group() as tg:
        backend_server = await serve(backend.app, backend_port, tg)
        app_server = await serve(app, app_port, tg)
        try:
            await test(backend, app, app_port)
        finally:
            backend.release.set()
            for server in (app_server, backend_server):
                server.should_exit = True


def test_issue_11_item_9_web_service_shares_one_limit_and_cancels_on_disconnect() -> None:
    anyio.run(with_servers, _shares_one_limit_and_cancels_on_disconnect, backend="asyncio")


async def _shares_one_limit_and_cancels_on_disconnect(backend: Backend, app: Any, port: int) -> None:
    answers: dict[int, Any] = {}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        async def ask(i: int) -> None:
            response = await client.post("/ask", json={"question": f"q{i}"})
            assert response.status_code == 200, response.text
            answers[i] = response.json()["answer"]

        async with anyio.create_task_group() as tg:
            for i in range(REQUESTS):
                tg.start_soon(ask, i)
            closed, cancelled = await disconnect_mid_run(port, app.state)

    # every answer is right
    assert answers == {
        i: f"q{i}: " + " | ".join(f"text of q{i}-{d}" for d in range(DOCS_PER_QUESTION))
        for i in range(REQUESTS)
    }
    # the shared CapacityLimiter held across all requests, and was used to the full
    assert backend.peak == LIMIT
    assert backend.calls >= REQUESTS * (1 + DOCS_PER_QUESTION)
    # the disconnected client's run: nothing started after the cancellation, and every
    # step that started was cut short (its slow page reads never ended)
    slow = [(t, what, edge) for t, q, what, edge in app.state.log if q == "slow"]
    assert not [entry for entry in slow if entry[2] == "start" and entry[0] > cancelled]
    reads = [what for _, what, edge in slow if what.startswith("read") and edge == "start"]
    assert reads
    assert not [what for _, what, edge in slow if what.startswith("read") and edge == "end"]
    print(
        f"\nweb service: {REQUESTS} requests + 1 disconnected, peak backend calls in flight "
        f"{backend.peak} (shared limit {LIMIT}), disconnect -> run cancelled in "
        f"{(cancelled - closed) * 1000:.1f} ms"
    )
