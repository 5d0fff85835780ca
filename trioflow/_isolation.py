"""Copy-on-consume isolation: a step gets its own copy of mutable inputs.

Values that cannot be mutated pass through as they are, for free: ``None``,
``bool``, numbers, ``str``, ``bytes``, ranges, enums, and tuples, frozensets and
frozen attrs classes or dataclasses whose contents are themselves immutable.
Everything else is deep-copied once per consuming step.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from typing import Any

import attrs

_ATOMS: frozenset[type] = frozenset(
    {type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis)}
)


_ATTRS_FROZEN_SETATTR: object
try:  # attrs marks frozen classes by this __setattr__
    from attr._make import _frozen_setattrs as _ATTRS_FROZEN_SETATTR
except ImportError:  # pragma: no cover - attrs changed its layout: copy attrs instances
    _ATTRS_FROZEN_SETATTR = None


def _frozen_record_fields(value: object) -> list[Any] | None:
    """Field values of a frozen attrs class or dataclass instance, else None."""
    cls = type(value)
    if attrs.has(cls):
        if _ATTRS_FROZEN_SETATTR is None or cls.__setattr__ is not _ATTRS_FROZEN_SETATTR:
            return None
        return [getattr(value, f.name) for f in attrs.fields(cls)]
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return [getattr(value, f.name) for f in dataclasses.fields(value)]  # type: ignore[arg-type]
    return None


def is_immutable(value: object, _depth: int = 0) -> bool:
    """Whether ``value`` is known to be deeply immutable (so sharing it is safe)."""
    cls = type(value)
    if cls in _ATOMS or isinstance(value, enum.Enum):
        return True
    if _depth > 20:
        return False
    if cls is tuple or cls is frozenset:
        return all(is_immutable(v, _depth + 1) for v in value)  # type: ignore[attr-defined]
    fields = _frozen_record_fields(value)
    if fields is not None:
        return all(is_immutable(v, _depth + 1) for v in fields)
    return False


def isolate(value: Any) -> Any:
    """Return ``value`` if it is immutable, else a deep copy of it."""
    if type(value) in _ATOMS or is_immutable(value):
        return value
    return copy.deepcopy(value)
