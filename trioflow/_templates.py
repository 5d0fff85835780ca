"""Templates in flow files: ``${inputs.NAME}``, ``${steps.NAME.output}``, ``${item}``.

Pure and synchronous. :func:`parse` turns a string into a :class:`Template`
(literal text and references); the flow-file loader does so for every string
inside a step's fields, so they become a tree that :func:`resolve` fills in at
run time. A template that is the whole string keeps
the value's type; inside a longer string each reference is formatted with
``str()``. ``$${`` stands for a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["Ref", "Template", "TemplateError", "parse", "refs", "resolve"]


class TemplateError(ValueError):
    """A template that cannot be parsed or resolved (the message says which part)."""


@attrs.frozen
class Ref:
    """One ``${...}``: ``root`` is ``"inputs"``, ``"steps"`` or a batch item's name."""

    text: str
    root: str
    name: str
    path: tuple[str | int, ...] = ()


@attrs.frozen
class Template:
    """A string with references: literal parts and :class:`Ref` objects, in order."""

    source: str
    parts: tuple[str | Ref, ...]

    @property
    def whole(self) -> Ref | None:
        """The reference when it is the whole string (the value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0]
        return None


_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_ACCESSOR = re.compile(r"\.(?P<key>[A-Za-z0-9_\-]+)|\[(?P<index>-?\d+)\]|\[(?P<q>['\"])(?P<qkey>.*?)(?P=q)\]")


def _parse_ref(body: str, source: str) -> Ref:
    text = "${" + body + "}"
    m = re.match(_NAME, body)
    if m is None:
        raise TemplateError(
            f"template {text} in {source!r} must start with inputs., steps. or a batch item's "
            f"name, as in ${{inputs.topic}}, ${{steps.fetch.output}} or ${{item}}"
        )
    root = m.group()
    pos = m.end()
    path: list[str | int] = []
    while pos < len(body):
        a = _ACCESSOR.match(body, pos)
        if a is None:
            raise TemplateError(
                f"template {text} in {source!r}: cannot read {body[pos:]!r}; use .key or [index] "
                f"to reach into a value, as in ${{steps.fetch.output.items[0]}}"
            )
        if a.group("key") is not None:
            path.append(a.group("key"))
        elif a.group("index") is not None:
            path.append(int(a.group("index")))
        else:
            path.append(a.group("qkey"))
        pos = a.end()
    if root == "inputs":
        if not path or not isinstance(path[0], str):
            raise TemplateError(f"template {text} in {source!r} must name an input: ${{inputs.NAME}}")
        return Ref(text, "inputs", path[0], tuple(path[1:]))
    if root == "steps":
        if not path or not isinstance(path[0], str):
            raise TemplateError(
                f"template {text} in {source!r} must name a step: ${{steps.NAME.output}}"
            )
        if len(path) < 2 or path[1] != "output":
            raise TemplateError(
                f"template {text} in {source!r} must read the step's output: "
                f"${{steps.{path[0]}.output}}"
            )
        return Ref(text, "steps", path[0], tuple(path[2:]))
    return Ref(text, root, root, tuple(path))


def parse(source: str) -> Template:
    """Split a string into literal text and references.

    Raises:
        TemplateError: a ``${`` without its ``}``, or a reference that is not
            ``inputs.NAME``, ``steps.NAME.output`` or ``NAME`` (a batch item),
            each optionally followed by ``.key`` / ``[index]`` accessors.
    """
    parts: list[str | Ref] = []
    literal: list[str] = []
    pos = 0
    while True:
        start = source.find("$", pos)
        if start < 0:
            literal.append(source[pos:])
            break
        if source.startswith("$${", start):
            literal.append(source[pos:start] + "${")
            pos = start + 3
            continue
        if not source.startswith("${", start):
            literal.append(source[pos : start + 1])
            pos = start + 1
            continue
        end = source.find("}", start)
        if end < 0:
            raise TemplateError(f"{source!r} has a '${{' with no closing '}}'; write $${{ for a literal ${{")
        literal.append(source[pos:start])
        text = "".join(literal)
        if text:
            parts.append(text)
        literal = []
        parts.append(_parse_ref(source[start + 2 : end].strip(), source))
        pos = end + 1
    text = "".join(literal)
    if text:
        parts.append(text)
    return Template(source, tuple(parts))


def refs(tree: Any) -> Iterator[Ref]:
    """Every reference in a compiled value, in order."""
    if isinstance(tree, Template):
        for p in tree.parts:
            if isinstance(p, Ref):
                yield p
    elif isinstance(tree, Mapping):
        for v in tree.values():
            yield from refs(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from refs(v)


def _lookup(ref: Ref, scope: Mapping[str, Mapping[str, Any]]) -> Any:
    group: Any = scope.get(ref.root, {})
    value: Any = group[ref.name] if ref.root in ("inputs", "steps") else group
    walked = {"inputs": f"inputs.{ref.name}", "steps": f"steps.{ref.name}.output"}.get(ref.root, ref.root)
    for key in ref.path:
        what = f"[{key}]" if isinstance(key, int) else f".{key}"
        try:
            indexable = isinstance(key, int) and isinstance(value, Sequence) and not isinstance(value, str)
            if not (indexable or (isinstance(key, str) and isinstance(value, Mapping))):
                raise TypeError
            value = value[key]
        except (KeyError, IndexError, TypeError):
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise TemplateError(
                f"{ref.text}: ${{{walked}}} has no {what} (it is {shown}, of type "
                f"{type(value).__name__})"
            ) from None
        walked += what
    return value


def resolve(tree: Any, scope: Mapping[str, Any]) -> Any:
    """Fill in a compiled value. ``scope`` maps ``"inputs"`` and ``"steps"`` to
    name -> value, and a batch item's name to the item.

    Raises:
        TemplateError: an accessor that does not fit the value (no such key or index).
    """
    if isinstance(tree, Template):
        whole = tree.whole
        if whole is not None:
            return _lookup(whole, scope)
        return "".join(p if isinstance(p, str) else str(_lookup(p, scope)) for p in tree.parts)
    if isinstance(tree, Mapping):
        return {k: resolve(v, scope) for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve(v, scope) for v in tree]
    return tree
