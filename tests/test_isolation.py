"""Copy-on-consume isolation: mutable inputs are copied per step, immutable ones shared."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import anyio
import attrs
import pytest

from trioflow import Flow
from trioflow._isolation import is_immutable, isolate


class Color(enum.Enum):
    RED = 1


@attrs.frozen
class FrozenPoint:
    x: int
    y: tuple[int, ...]


@attrs.frozen
class FrozenHolder:
    items: list[int]


@attrs.define
class MutablePoint:
    x: int


@dataclasses.dataclass(frozen=True)
class FrozenDC:
    name: str


@dataclasses.dataclass
class MutableDC:
    name: str


IMMUTABLE = [
    None,
    True,
    3,
    2.5,
    1j,
    "text",
    b"bytes",
    range(3),
    ...,
    Color.RED,
    (1, "a", (None, b"x")),
    frozenset({1, 2}),
    FrozenPoint(1, (2, 3)),
    FrozenDC("n"),
    (FrozenPoint(1, ()), FrozenDC("m")),
]

MUTABLE = [
    [1, 2],
    {"a": 1},
    {1, 2},
    bytearray(b"x"),
    (1, [2]),
    (frozenset({1}), [1]),
    FrozenHolder([1]),
    MutablePoint(1),
    MutableDC("n"),
]


@pytest.mark.parametrize("value", IMMUTABLE, ids=repr)
def test_immutable_values_pass_through_as_the_same_object(value: Any) -> None:
    assert is_immutable(value)
    assert isolate(value) is value


@pytest.mark.parametrize("value", MUTABLE, ids=repr)
def test_mutable_values_are_deep_copied(value: Any) -> None:
    assert not is_immutable(value)
    copy = isolate(value)
    assert copy is not value
    assert copy == value


def test_deep_copy_reaches_nested_containers() -> None:
    value = {"a": [1, {"b": [2]}]}
    copy = isolate(value)
    copy["a"][1]["b"].append(3)
    assert value == {"a": [1, {"b": [2]}]}


def _mutating_flow(isolation: str) -> tuple[Flow, dict[str, Any]]:
    seen: dict[str, Any] = {}
    flow = Flow("f")

    @flow.step
    async def src() -> list[int]:
        value = [1, 2, 3]
        seen["produced"] = value
        return value

    @flow.step(isolation=isolation)  # type: ignore[arg-type]
    async def appender(src: list[int]) -> int:
        seen["appender got"] = src
        src.append(99)
        await anyio.lowlevel.checkpoint()
        return len(src)

    @flow.step(isolation=isolation)  # type: ignore[arg-type]
    async def sibling(src: list[int]) -> list[int]:
        # runs alongside appender: look both before and after it had its turn
        seen["sibling before"] = list(src)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        seen["sibling after"] = list(src)
        seen["sibling got"] = src
        return src

    @flow.step(after="appender", isolation=isolation)  # type: ignore[arg-type]
    async def later(src: list[int]) -> list[int]:
        seen["later got"] = list(src)
        return src

    return flow, seen


@pytest.mark.anyio
async def test_a_step_mutating_its_input_does_not_affect_siblings_or_the_output(anyio_backend: Any) -> None:
    flow, seen = _mutating_flow("copy")
    result = await flow.run()
    assert result["appender"] == 4
    assert seen["sibling before"] == seen["sibling after"] == [1, 2, 3]
    assert seen["later got"] == [1, 2, 3]
    assert result["src"] == [1, 2, 3]
    assert result["sibling"] == [1, 2, 3]
    assert seen["appender got"] is not seen["sibling got"]
    assert seen["appender got"] is not result["src"]


@pytest.mark.anyio
async def test_isolation_share_passes_the_same_object(anyio_backend: Any) -> None:
    flow, seen = _mutating_flow("share")
    result = await flow.run()
    assert seen["appender got"] is seen["produced"]
    assert seen["sibling got"] is seen["produced"]
    assert seen["later got"] == [1, 2, 3, 99]  # shared: the mutation is visible
    assert result["src"] is seen["produced"]


@pytest.mark.anyio
async def test_immutable_outputs_are_passed_without_a_copy(anyio_backend: Any) -> None:
    seen: dict[str, Any] = {}
    flow = Flow("f")

    @flow.step
    async def src() -> tuple[Any, ...]:
        value = ("x" * 1000, FrozenPoint(1, (2,)), 3)
        seen["produced"] = value
        return value

    @flow.step
    async def user(src: tuple[Any, ...]) -> None:
        seen["user got"] = src

    result = await flow.run()
    assert seen["user got"] is seen["produced"]
    assert result["src"] is seen["produced"]


@pytest.mark.anyio
async def test_flow_inputs_are_isolated_from_the_caller(anyio_backend: Any) -> None:
    config = {"tags": ["a"]}
    token = "secret-token"
    got: dict[str, Any] = {}
    flow = Flow("f")

    @flow.step
    async def one(config: dict[str, Any], token: str) -> None:
        config["tags"].append("one")
        got["token"] = token

    @flow.step(after="one")
    async def two(config: dict[str, Any]) -> list[str]:
        return config["tags"]

    result = await flow.run({"config": config, "token": token})
    assert result["two"] == ["a"]
    assert config == {"tags": ["a"]}
    assert got["token"] is token


@pytest.mark.anyio
async def test_map_items_are_isolated(anyio_backend: Any) -> None:
    flow = Flow("f")

    @flow.step
    async def docs() -> list[list[str]]:
        return [["a"], ["b"]]

    @flow.step(map_over="docs")
    async def grow(docs: list[str]) -> int:
        docs.append("x")
        return len(docs)

    @flow.step(after="grow")
    async def check(docs: list[list[str]]) -> list[list[str]]:
        return docs

    result = await flow.run()
    assert result["grow"] == [2, 2]
    assert result["check"] == [["a"], ["b"]]
    assert result["docs"] == [["a"], ["b"]]
