"""Draw the pictures on the "Watching runs" page: ``python docs/images/make_images.py``.

The jokes example runs in virtual time (trio's ``MockClock``), so the
pictures are the same on every machine; ``tests/test_watching_images.py``
checks that the files here are up to date.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import trio
import trio.testing

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"


def _jokes():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_trioflow_docs_jokes", EXAMPLES / "jokes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pictures() -> dict[str, str]:
    """File name -> text of each picture."""
    jokes = _jokes()

    events: list[object] = []

    async def run():  # type: ignore[no-untyped-def]
        return await jokes.flow.run(jokes.INPUTS, limiters=jokes.LIMITERS, seed=0, on_event=events.append)

    result = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    timeline = result.timeline()
    return {
        "jokes-progress.svg": _progress(events),
        "jokes-timeline.svg": timeline.to_svg() + "\n",
        "jokes-timeline.txt": timeline.to_text() + "\n",
        "jokes-flow.mmd": jokes.flow.to_mermaid(),
        "jokes-flow.dot": jokes.flow.to_dot(),
    }


def _progress(events: list[object]) -> str:
    """The progress display as it looks 0.52 s into the run (translate waits to retry) (rich's SVG export of one frame)."""
    from rich.console import Console

    import trioflow

    upto = [ev for ev in events if ev.elapsed <= 0.52]  # type: ignore[attr-defined]
    panel = trioflow.ProgressDisplay(io.StringIO())._replay(upto)  # type: ignore[arg-type]
    console = Console(record=True, width=72, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(panel)
    return console.export_svg(title="python examples/jokes.py")


def main() -> int:
    for name, text in pictures().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
