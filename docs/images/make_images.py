"""Draw the pictures on the "Watching runs" page: ``python docs/images/make_images.py``.

The jokes example runs in virtual time (trio's ``MockClock``), so the
pictures are the same on every machine; ``tests/test_watching_images.py``
checks that the files here are up to date.

``jokes-flow-mermaid.svg`` is ``jokes-flow.mmd`` drawn by mermaid itself in
headless Chromium; it needs mermaid's JavaScript (``npm install mermaid`` in
some folder) and Debian's ``chromium``::

    python docs/images/make_images.py --mermaid /path/to/node_modules/mermaid/dist/mermaid.min.js

The SVG starts with a comment holding the SHA-256 of the mermaid text it
shows, which the test compares with today's text.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
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
        "tutorial-flow.mmd": _tutorial_flow().to_mermaid(),
        "jokes-progress.svg": _progress(events),
        "jokes-timeline.svg": timeline.to_svg() + "\n",
        "jokes-timeline.txt": timeline.to_text() + "\n",
        "jokes-flow.mmd": jokes.flow.to_mermaid(),
        "jokes-flow.dot": jokes.flow.to_dot(),
    }


def _tutorial_flow():  # type: ignore[no-untyped-def]
    """The first flow of docs/tutorial.rst."""
    import trioflow

    flow = trioflow.Flow("jokes")

    @flow.step
    async def joke(topic: str) -> str:
        return f"Why did the {topic} cross the road?"

    @flow.step
    async def french(joke: str) -> str:
        return f"[fr] {joke}"

    @flow.step
    async def rating(joke: str) -> int:
        return min(10, len(joke) // 4)

    return flow


def _progress(events: list[object]) -> str:
    """The progress display as it looks 0.52 s into the run (translate waits to retry) (rich's SVG export of one frame)."""
    from rich.console import Console

    import trioflow

    upto = [ev for ev in events if ev.elapsed <= 0.52]  # type: ignore[attr-defined]
    panel = trioflow.ProgressDisplay(io.StringIO())._replay(upto)  # type: ignore[arg-type]
    console = Console(record=True, width=72, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(panel)
    return console.export_svg(title="python examples/jokes.py")


def mermaid_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render_mermaid(text: str, mermaid_js: Path) -> str:
    """``text`` drawn by mermaid in headless Chromium, as SVG (with the digest comment first)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mermaid.min.js").write_bytes(mermaid_js.read_bytes())
        page = folder / "render.html"
        page.write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8"><script src="mermaid.min.js"></script></head>'
            "<body><script>"
            'mermaid.initialize({startOnLoad: false, htmlLabels: false, flowchart: {htmlLabels: false}});'
            f"mermaid.render('flow', {json.dumps(text)}).then(r => {{"
            'const out = document.createElement("pre"); out.id = "svg"; out.textContent = r.svg;'
            "document.body.append(out); });</script></body></html>",
            encoding="utf-8",
        )
        (folder / "profile").mkdir()
        dom = subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={folder / 'profile'}", "--allow-file-access-from-files",
                "--dump-dom", "--virtual-time-budget=10000", page.as_uri(),
            ],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    found = re.search(r'<pre id="svg">(.*?)</pre>', dom, flags=re.DOTALL)
    if found is None:
        raise RuntimeError("mermaid drew nothing")
    return f"<!-- mermaid sha256 {mermaid_digest(text)} -->\n{html.unescape(found[1])}\n"


def main() -> int:
    drawn = pictures()
    for name, text in drawn.items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    if "--mermaid" in sys.argv:
        js = Path(sys.argv[sys.argv.index("--mermaid") + 1])
        for source, name in (("jokes-flow.mmd", "jokes-flow-mermaid.svg"), ("tutorial-flow.mmd", "tutorial-flow-mermaid.svg")):
            target = HERE / name
            target.write_text(render_mermaid(drawn[source], js), encoding="utf-8")
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
