"""The pictures in ``docs/images`` are what the library draws today (issue 12)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("_trioflow_make_images", IMAGES / "make_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pictures() -> dict[str, str]:
    return _module().pictures()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["tutorial-flow.mmd", "jokes-progress.svg", "jokes-timeline.svg", "jokes-timeline.txt", "jokes-flow.mmd", "jokes-flow.dot"])
def test_docs_pictures_are_up_to_date(name: str) -> None:
    drawn = _pictures()[name]
    stored = (IMAGES / name).read_text(encoding="utf-8")
    assert stored == drawn, f"docs/images/{name} is out of date: run python docs/images/make_images.py"


@pytest.mark.parametrize(
    ("source", "svg_name", "words"),
    [
        ("jokes-flow.mmd", "jokes-flow-mermaid.svg", ("brainstorm", "draft", "map", "over", "publish", "limiter:", "llm")),
        ("tutorial-flow.mmd", "tutorial-flow-mermaid.svg", ("topic", "joke", "french", "rating")),
    ],
)
def test_the_rendered_mermaid_diagrams_show_todays_text(source: str, svg_name: str, words: tuple[str, ...]) -> None:
    svg = (IMAGES / svg_name).read_text(encoding="utf-8")
    first, _, rest = svg.partition("\n")
    text = (IMAGES / source).read_text(encoding="utf-8")
    assert first == f"<!-- mermaid sha256 {_module().mermaid_digest(text)} -->", (
        f"docs/images/{svg_name} is out of date: run python docs/images/make_images.py --mermaid ..."
    )
    assert rest.startswith("<svg")
    drawn = re.findall(r">\s*([^<>]+?)\s*</tspan>", rest)  # the labels' words
    for word in words:
        assert word in drawn
