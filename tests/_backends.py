"""Helpers for tests that run on both the trio and the asyncio backend."""

from __future__ import annotations

import trio


def on_trio() -> bool:
    """Whether the running test is on the trio backend (else asyncio)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
