"""Where a key is in a flow file: the line of a key path, for the messages that locate problems.

``tomllib`` and ``json`` give no positions for what they parse, so this
module finds a key path's line in the text: table headers, keys, and the keys
of inline tables for TOML; the keys in order for JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = ["Problems"]

_BARE = r"[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'"
_KEY = re.compile(rf"\s*((?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*)\s*=")
_HEADER = re.compile(rf"\s*\[\[?\s*((?:{_BARE})(?:\s*\.\s*(?:{_BARE}))*)\s*\]\]?\s*(#.*)?\Z")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(k.strip().strip("\"'") for k in re.findall(rf"{_BARE}", text))


def _toml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> line, for table headers, keys and the keys of inline tables."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        path = table + _split_key(key.group(1))
        lines.setdefault(path, number)
        # keys of inline tables on the same line: { a = 1, b = { c = 2 } }
        stack, last, i = [path], path, key.end()
        while i < len(line):
            ch = line[i]
            if ch in "\"'":
                close = line.find(ch, i + 1)
                i = len(line) if close < 0 else close + 1
                continue
            if ch == "#":
                break
            if ch == "}" and len(stack) > 1:
                stack.pop()
            elif ch == "{" or (ch == "," and len(stack) > 1):
                if ch == "{":
                    stack.append(last)
                inner = _KEY.match(line, i + 1)
                if inner:
                    last = stack[-1] + _split_key(inner.group(1))
                    lines.setdefault(last, number)
                    i = inner.end()
                    continue
            i += 1
    return lines


def _json_line(text: str, path: Sequence[str]) -> int | None:
    """The line of the last key of ``path`` found in order in JSON text."""
    pos, line = 0, None
    for key in path:
        m = re.compile(re.escape(json.dumps(key)) + r"\s*:").search(text, pos)
        if m is None:
            break
        pos = m.end()
        line = text.count("\n", 0, m.start()) + 1
    return line


class Problems:
    """Collects problems, each located in the file."""

    def __init__(self, path: str, text: str, is_toml: bool) -> None:
        self.path = path
        self.text = text
        self.is_toml = is_toml
        self.items: list[str] = []
        self.lines: list[int] = []
        self._lines: dict[tuple[str, ...], int] | None = None

    def line(self, keys: Sequence[str]) -> int | None:
        if not self.is_toml:
            return _json_line(self.text, keys)
        if self._lines is None:
            self._lines = _toml_lines(self.text)
        for n in range(len(keys), 0, -1):
            if tuple(keys[:n]) in self._lines:
                return self._lines[tuple(keys[:n])]
        return None

    def add(self, keys: Sequence[str], message: str) -> None:
        line = self.line(keys)
        where = f"{self.path}:{line}" if line is not None else self.path
        key = ".".join(keys)
        self.items.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.lines.append(line or 0)

    def sorted(self) -> list[str]:
        """The problems in file order (stable for problems on one line)."""
        order = sorted(range(len(self.items)), key=lambda i: self.lines[i])
        return [self.items[i] for i in order]
