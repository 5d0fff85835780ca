"""Codecs: how a store turns step values into bytes and back.

:class:`JSONCodec` is the default. It writes plain JSON for ``None``, bools,
numbers, strings, lists and string-keyed dicts, and tagged JSON objects for
what JSON cannot say by itself (tuples, sets, frozensets, bytes, dicts with
other keys, enums, attrs classes and dataclasses), so a value decodes to an
equal value of the same type. Decoding never runs code from the data: classes
are looked up among the modules already imported, and only attrs classes,
dataclasses and enums are ever constructed.

:class:`PickleCodec` handles any picklable value, and is opt-in: unpickling
runs code chosen by whoever wrote the bytes, so use it only for stores you
trust.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import pickle
import sys
from typing import Any, Protocol, runtime_checkable

import attrs

from ._public import public_home

__all__ = ["Codec", "CodecError", "JSONCodec", "PickleCodec"]

_TAG = "__trioflow__"


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back (:class:`trioflow.JSONCodec`, :class:`trioflow.PickleCodec`)."""

    @property
    def name(self) -> str:
        """Stored next to each value, so a store knows which codec can read it."""
        ...

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; raise :class:`TypeError` (e.g. :class:`trioflow.CodecError`) if it cannot."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode what :meth:`encode` returned."""
        ...


class CodecError(TypeError):
    """A value cannot be encoded or decoded by a codec.

    A :class:`TypeError`, since it is about the type of the value.
    """


def _type_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _lookup(path: str) -> type:
    """The class named ``module:qualname``, from a module that is already imported."""
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise CodecError(
            f"cannot decode a value of type {path!r}: module {module_name!r} is not imported; "
            f"import it before loading (the JSON codec never imports modules named by stored data)"
        )
    obj: Any = module
    for part in qualname.split("."):
        # what the namespace holds already: never getattr, which would run a module's
        # lazy __getattr__ (anyio's, for one, imports submodules) or a descriptor
        try:
            namespace = vars(obj)
        except TypeError:
            namespace = {}
        obj = namespace.get(part)
        if obj is None:
            raise CodecError(
                f"cannot decode a value of type {path!r}: {module_name!r} has no {qualname!r} "
                f"(among what it has defined or imported so far)"
            )
    if not isinstance(obj, type):
        raise CodecError(f"cannot decode a value of type {path!r}: it is not a class")
    return obj


def _to_json(value: Any, path: str, depth: int) -> Any:
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        if math.isfinite(value):
            return value
        return {_TAG: "float", "v": repr(value)}
    if depth > 200:
        raise CodecError(f"cannot encode {path}: nested more than 200 levels deep")
    if cls is list:
        return [_to_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if cls is dict:
        if _TAG not in value and all(type(k) is str for k in value):
            return {k: _to_json(v, f"{path}[{k!r}]", depth + 1) for k, v in value.items()}
        return {
            _TAG: "dict",
            "items": [
                [_to_json(k, f"{path}.keys()", depth + 1), _to_json(v, f"{path}[{k!r}]", depth + 1)]
                for k, v in value.items()
            ],
        }
    if cls is tuple:
        return {_TAG: "tuple", "items": [_to_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if cls is set or cls is frozenset:
        items = [_to_json(v, f"{path}{{...}}", depth + 1) for v in value]
        items.sort(key=lambda x: json.dumps(x, sort_keys=True))  # canonical: same set, same bytes
        return {_TAG: cls.__name__, "items": items}
    if cls is bytes:
        return {_TAG: "bytes", "b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, enum.Enum):
        return {_TAG: "enum", "type": _type_path(cls), "value": _to_json(value.value, f"{path}.value", depth + 1)}
    if attrs.has(cls):
        fields = {
            f.name: _to_json(getattr(value, f.name), f"{path}.{f.name}", depth + 1)
            for f in attrs.fields(cls)
            if f.init
        }
        return {_TAG: "attrs", "type": _type_path(cls), "fields": fields}
    if dataclasses.is_dataclass(value):
        fields = {
            f.name: _to_json(getattr(value, f.name), f"{path}.{f.name}", depth + 1)
            for f in dataclasses.fields(value)
            if f.init
        }
        return {_TAG: "dataclass", "type": _type_path(cls), "fields": fields}
    raise CodecError(
        f"cannot encode {path} of type {cls.__module__}.{cls.__qualname__} as JSON; return "
        f"JSON-friendly data (str, numbers, lists, dicts, tuples, sets, bytes, enums, attrs "
        f"classes, dataclasses), or opt in to pickle with codec=trioflow.PickleCodec()"
    )


def _from_json(data: Any) -> Any:
    if type(data) is list:
        return [_from_json(v) for v in data]
    if type(data) is not dict:
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: _from_json(v) for k, v in data.items()}
    if tag == "tuple":
        return tuple(_from_json(v) for v in data["items"])
    if tag == "set":
        return {_from_json(v) for v in data["items"]}
    if tag == "frozenset":
        return frozenset(_from_json(v) for v in data["items"])
    if tag == "dict":
        return {_from_json(k): _from_json(v) for k, v in data["items"]}
    if tag == "bytes":
        return base64.b64decode(data["b64"])
    if tag == "float":
        return float(data["v"])
    if tag == "enum":
        cls = _lookup(data["type"])
        if not issubclass(cls, enum.Enum):
            raise CodecError(f"cannot decode {data['type']!r} as an enum: it is not an Enum class")
        return cls(_from_json(data["value"]))
    if tag in ("attrs", "dataclass"):
        cls = _lookup(data["type"])
        if not (attrs.has(cls) if tag == "attrs" else dataclasses.is_dataclass(cls)):
            raise CodecError(f"cannot decode {data['type']!r}: it is not an {tag} class")
        return cls(**{k: _from_json(v) for k, v in data["fields"].items()})
    raise CodecError(f"cannot decode a JSON object tagged {tag!r}: unknown tag")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_str = json.encoder.encode_basestring


@attrs.frozen
class JSONCodec:
    """The default codec: JSON, extended for the Python values steps commonly return.

    Encodes ``None``, bools, ints, floats (``nan``/``inf`` too), strings,
    lists, dicts (any keys), tuples, sets, frozensets, bytes, enums, attrs
    classes and dataclasses, nested in any way, so that decoding gives back an
    equal value of the same type. Equal values encode to equal bytes (dict keys
    are kept in insertion order, sets are sorted), which is how a store compares
    a run's inputs. Decoding constructs only attrs classes, dataclasses and
    enums, looked up by name among the modules already imported.
    """

    name: str = attrs.field(default="json", init=False)

    def encode(self, value: Any) -> bytes:
        """``value`` as UTF-8 JSON bytes.

        Raises:
            CodecError: ``value`` holds something the codec cannot encode; the
                message gives where (``value[2].conn``) and the type.
        """
        cls = type(value)
        if value is None:  # fast paths for the common atoms
            return b"null"
        if cls is str:
            return _encode_str(value).encode()
        if cls is int:
            return int.__repr__(value).encode()
        if cls is bool:
            return b"true" if value else b"false"
        return _ENCODER.encode(_to_json(value, "value", 0)).encode()

    def decode(self, data: bytes) -> Any:
        """The value ``data`` encodes.

        Raises:
            CodecError: ``data`` is not JSON this codec wrote, or names a class
                that is not imported.
        """
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(f"cannot decode {bytes(data[:40])!r}...: not JSON ({exc})") from None
        return _from_json(parsed)


@attrs.frozen
class PickleCodec:
    """Encodes any picklable value with :mod:`pickle`. Opt-in.

    Warning:
        Unpickling runs code chosen by whoever wrote the data: give this codec
        only to stores whose files you trust. A store without it refuses to
        decode pickled records.

    Args:
        protocol: the pickle protocol (default: :data:`pickle.HIGHEST_PROTOCOL`).
    """

    protocol: int = pickle.HIGHEST_PROTOCOL
    name: str = attrs.field(default="pickle", init=False)

    def encode(self, value: Any) -> bytes:
        """``value`` pickled.

        Raises:
            CodecError: ``value`` cannot be pickled.
        """
        try:
            return pickle.dumps(value, protocol=self.protocol)
        except Exception as exc:
            raise CodecError(
                f"cannot pickle value of type {type(value).__module__}.{type(value).__qualname__}: {exc}"
            ) from exc

    def decode(self, data: bytes) -> Any:
        """The unpickled value (runs code the data names: trusted data only)."""
        return pickle.loads(data)


public_home(CodecError, JSONCodec, PickleCodec)  # trioflow imports them when first used
