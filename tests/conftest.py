"""Shared fixtures for trioflow's tests.

* ``anyio_backend`` runs ``@pytest.mark.anyio`` tests on trio (with a virtual
  ``MockClock``, so sleeps cost nothing) and on asyncio (real time: tests that
  run there assert results, ordering and errors, never timing).
* ``add_sleeper`` declares a step with a given name and dependencies that
  sleeps a given number of seconds and returns its name; trio tests combine it
  with pytest-trio's ``autojump_clock`` to check timing exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import pytest
import trio.testing
from _postgres import postgres_dsn as postgres_dsn
from _postgres import postgres_server as postgres_server

import trioflow


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``anyio`` tests run on both backends; ``@pytest.mark.trio_only`` ones (about
    # virtual time, which needs trio's MockClock) on trio alone
    if "anyio_backend" in metafunc.fixturenames:
        trio_only = metafunc.definition.get_closest_marker("trio_only") is not None
        backends = ["trio"] if trio_only else ["trio", "asyncio"]
        metafunc.parametrize("anyio_backend", backends, indirect=True)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "asyncio"


def make_step(
    name: str,
    deps: Iterable[str] = (),
    body: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """An async function named ``name`` whose keyword parameters are ``deps``.

    ``body(**kwargs)`` is awaited and its value returned (default: the name).
    """

    async def step(**kwargs: Any) -> Any:
        if body is None:
            return name
        return await body(**kwargs)

    step.__name__ = step.__qualname__ = name
    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(d, inspect.Parameter.KEYWORD_ONLY) for d in deps]
    )
    return step


def _add_sleeper(
    flow: trioflow.Flow,
    name: str,
    seconds: float,
    deps: Iterable[str] = (),
    **options: Any,
) -> None:
    async def body(**kwargs: Any) -> str:
        await anyio.sleep(seconds)
        return name

    flow.add(make_step(name, deps, body), **options)


@pytest.fixture
def add_sleeper() -> Callable[..., None]:
    """``add_sleeper(flow, name, seconds, deps=(), **step_options)``."""
    return _add_sleeper


@pytest.fixture
def step_factory() -> Callable[..., Callable[..., Any]]:
    """``step_factory(name, deps=(), body=None)``: see :func:`make_step`."""
    return make_step
