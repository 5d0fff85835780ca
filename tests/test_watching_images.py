"""The pictures in ``docs/images`` are what the library draws today (issue 12)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def _pictures() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("_trioflow_make_images", IMAGES / "make_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pictures()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["jokes-progress.svg", "jokes-timeline.svg", "jokes-timeline.txt", "jokes-flow.mmd", "jokes-flow.dot"])
def test_docs_pictures_are_up_to_date(name: str) -> None:
    drawn = _pictures()[name]
    stored = (IMAGES / name).read_text(encoding="utf-8")
    assert stored == drawn, f"docs/images/{name} is out of date: run python docs/images/make_images.py"
