"""The timeline's HTML page in a real browser: headless Chromium (issue 12 item 3).

Runs in its own nox session (``nox -s browser``): it needs Debian's
``chromium`` package, which ``.ci/run`` installs when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, Retry

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        "this test needs Debian's chromium package: apt-get install -y chromium (.ci/run does it)"
    )


def _browse(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()  # a new, empty profile every time
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _flow() -> Flow:
    flow = Flow("browser")

    @flow.step
    async def a() -> list[int]:
        await anyio.sleep(1)
        return [1, 2, 3]

    @flow.step(map_over="a", limiter="llm")
    async def m(a: int) -> int:
        await anyio.sleep(a)
        return a

    @flow.step(retry=Retry(max_attempts=2, wait=0.5))
    async def c(m: list[int]) -> int:
        await anyio.sleep(1)
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("flaky")
        return sum(m)

    @flow.step
    async def side() -> None:
        await anyio.sleep(2)

    return flow


def _timeline() -> trioflow.Timeline:
    async def main() -> trioflow.RunResult:
        return await _flow().run(limiters={"llm": 2})

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)).timeline()


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes): width, height, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace, colour in (2, 6)) == (8, 0, True), (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            left = row[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[i] = (row[i] + pred) & 0xFF
        rows.append(bytes(row) if channels == 3 else bytes(b for j, b in enumerate(row) if j % 4 != 3))
        previous = row
    return width, height, rows


def test_issue_12_item_3_screenshot_is_not_blank(tmp_path: Path) -> None:
    page = _timeline().save(tmp_path / "timeline.html")
    shot = tmp_path / "shot.png"
    proc = _browse(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1300,700")
    assert shot.exists(), proc.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1300, 700)
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), 3)]
    white = sum(1 for p in pixels if p == b"\xff\xff\xff")
    assert white < 0.97 * len(pixels), "the screenshot is (nearly) blank"
    colours = {p for p in pixels}
    assert len(colours) > 20
    # the bars' colours are on screen: succeeded (green), retried (orange), backoff (light orange)
    for name, rgb in (("succeeded", (0x43, 0xA0, 0x47)), ("retried", (0xFB, 0x8C, 0x00)), ("backoff", (0xFF, 0xE0, 0xB2))):
        assert sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, rgb, strict=True))) > 200, name


def test_issue_12_item_3_bars_at_the_right_x_positions(tmp_path: Path) -> None:
    tl = _timeline()
    # the page as saved, plus a script (for this test only) that reports where the browser drew each bar
    probe = """
<script>
const svg = document.querySelector("svg");
const box = svg.getBoundingClientRect();
const bars = [...svg.querySelectorAll("rect[data-step]")].map(r => {
  const b = r.getBoundingClientRect();
  return {step: r.dataset.step, item: r.dataset.item ?? null, status: r.dataset.status,
          x: b.left - box.left, width: b.width};
});
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify({left: +svg.dataset.left, scale: +svg.dataset.scale, bars});
document.body.append(out);
</script>"""
    page = tmp_path / "probe.html"
    page.write_text(tl.to_html().replace("</body>", probe + "</body>"), encoding="utf-8")
    proc = _browse(tmp_path, page.as_uri(), "--dump-dom", "--virtual-time-budget=5000")
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, proc.stderr[-2000:]
    probe_data: dict[str, Any] = json.loads(found[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    left, scale = probe_data["left"], probe_data["scale"]
    drawn = [
        (b["step"], b["item"], b["status"], round((b["x"] - left) / scale, 2), round(b["width"] / scale, 2))
        for b in probe_data["bars"]
    ]
    # one bar per attempt of each step and item (and the wait before c's retry), where the run put it:
    # a 0-1; m[0] 1-2 and m[1] 1-3 (llm holds 2), m[2] 2-5; c fails 5-6, waits 0.5, succeeds 6.5-7.5
    assert drawn == [
        ("a", None, "succeeded", 0.0, 1.0),
        ("m", "0", "succeeded", 1.0, 1.0),
        ("m", "1", "succeeded", 1.0, 2.0),
        ("m", "2", "succeeded", 2.0, 3.0),
        ("c", None, "retried", 5.0, 1.0),
        ("c", None, "backoff", 6.0, 0.5),
        ("c", None, "succeeded", 6.5, 1.0),
        ("side", None, "succeeded", 0.0, 2.0),
    ]
    assert tl.duration == 7.5


@pytest.fixture(autouse=True)
def _no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
