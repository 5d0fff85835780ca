"""Small text functions for ``examples/python.toml`` and ``examples/batch.toml``."""

from __future__ import annotations

import anyio


def word_count(text: str) -> int:
    """A plain function: python steps run it in a worker thread."""
    return len(text.split())


async def shout(text: str, times: int = 1) -> str:
    """An async function: python steps await it on the event loop."""
    await anyio.sleep(0.1)
    return " ".join([text.upper()] * times)


async def score(word: str) -> dict[str, object]:
    """Score one word (a batch step calls this once per item)."""
    await anyio.sleep(0.2)
    return {"word": word, "score": sum(ord(c) for c in word) % 100}


def best(scores: list[dict[str, object]]) -> object:
    """The word with the highest score."""
    return max(scores, key=lambda s: s["score"])["word"]  # type: ignore[arg-type,return-value]
