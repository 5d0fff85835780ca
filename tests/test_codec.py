"""JSONCodec and PickleCodec (issue 5)."""

from __future__ import annotations

import dataclasses
import enum
import math
import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trioflow
from trioflow import CodecError, JSONCodec, PickleCodec


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@attrs.frozen
class Pair:
    left: Any
    right: Any


@attrs.define
class Box:
    content: list[int]
    label: str = "box"


@dataclasses.dataclass
class Doc:
    title: str
    tags: tuple[str, ...] = ()


VALUES = [
    None, True, False, 0, -7, 2**70, 1.5, "", "héllo \"quoted\" \n", [], [1, [2, [3]]],
    {}, {"a": 1}, {1: "int key"}, {(1, 2): "tuple key"}, {"__trioflow__": "a user key"},
    (), (1, "a", (2,)), {1, 2, 3}, frozenset({"x"}), b"\x00\xffbytes",
    Color.RED, Color.BLUE, Pair(1, (2, 3)), Box([1, 2]), Doc("t", ("a", "b")),
    [Pair(Doc("nested", ()), {"k": {1, 2}}), None],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_json_round_trip_keeps_value_and_type(value: Any) -> None:
    codec = JSONCodec()
    back = codec.decode(codec.encode(value))
    assert back == value
    assert type(back) is type(value)


def test_non_finite_floats_round_trip() -> None:
    codec = JSONCodec()
    assert codec.decode(codec.encode(math.inf)) == math.inf
    assert math.isnan(codec.decode(codec.encode(math.nan)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children) | st.tuples(children, children)
    | st.dictionaries(st.text() | st.integers(), children) | st.frozensets(st.integers()),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trip_property(value: Any) -> None:
    codec = JSONCodec()
    assert codec.decode(codec.encode(value)) == value


def test_equal_sets_encode_to_equal_bytes() -> None:
    codec = JSONCodec()
    assert codec.encode({3, 1, 2}) == codec.encode({2, 3, 1})


def test_unencodable_value_names_the_path_and_type() -> None:
    class Conn:
        pass

    with pytest.raises(CodecError) as info:
        JSONCodec().encode({"pool": [1, Pair(1, Conn())]})
    message = str(info.value)
    assert message.startswith(
        "cannot encode value['pool'][1].right of type test_codec."
        "test_unencodable_value_names_the_path_and_type.<locals>.Conn as JSON; "
    )
    assert "codec=trioflow.PickleCodec()" in message
    assert isinstance(info.value, TypeError)


def test_json_never_imports_or_builds_other_classes() -> None:
    codec = JSONCodec()
    with pytest.raises(CodecError, match=r"module 'not_imported_module' is not imported"):
        codec.decode(b'{"__trioflow__":"attrs","type":"not_imported_module:X","fields":{}}')
    with pytest.raises(CodecError, match=r"'os:system': it is not a class"):
        codec.decode(b'{"__trioflow__":"attrs","type":"os:system","fields":{}}')
    with pytest.raises(CodecError, match=r"it is not an attrs class"):
        codec.decode(b'{"__trioflow__":"attrs","type":"subprocess:Popen","fields":{}}')
    with pytest.raises(CodecError, match=r"unknown tag"):
        codec.decode(b'{"__trioflow__":"pickle","data":""}')
    with pytest.raises(CodecError, match=r"not JSON"):
        codec.decode(b"\x80\x04garbage")


def test_pickle_is_opt_in_and_round_trips_anything_picklable() -> None:
    codec = PickleCodec()
    assert codec.name == "pickle"
    assert JSONCodec().name == "json"
    assert codec.decode(codec.encode(1 + 2j)) == 1 + 2j
    assert pickle.loads(codec.encode([1])) == [1]
    with pytest.raises(CodecError, match=r"cannot pickle value of type builtins.generator"):
        codec.encode(x for x in ())


def test_stores_take_codecs() -> None:
    assert isinstance(trioflow.MemoryStore().codec, JSONCodec)
    assert isinstance(trioflow.MemoryStore(codec=PickleCodec()).codec, PickleCodec)
    with pytest.raises(TypeError, match=r"^codec= takes a codec such as trioflow.JSONCodec\(\)"):
        trioflow.MemoryStore(codec="json")  # type: ignore[arg-type]
