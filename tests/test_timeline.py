"""``result.timeline()`` and ``trioflow.Timeline`` (issue 12 item 3)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trioflow
from trioflow import Flow, FlowError, Retry, Timeline

SVG = "{http://www.w3.org/2000/svg}"


def _flow() -> Flow:
    """a (1s) -> m: 3 items (1s each, 2 at once on limiter 'llm') -> c (2s, retried once after 0.5s)."""
    flow = Flow("tl")

    @flow.step
    async def a() -> list[int]:
        await anyio.sleep(1)
        return [1, 2, 3]

    @flow.step(map_over="a", limiter="llm")
    async def m(a: int) -> int:
        await anyio.sleep(1)
        return a * 10

    @flow.step(retry=Retry(max_attempts=2, wait=0.5))
    async def c(m: list[int]) -> int:
        await anyio.sleep(1)
        if trioflow.current_step().attempt == 1:
            raise ConnectionError("flaky")
        return sum(m)

    @flow.step
    async def side() -> None:
        await anyio.sleep(0.5)

    return flow


def _bars(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [el for el in root.iter(f"{SVG}rect") if "data-step" in el.attrib]


@pytest.mark.trio
async def test_issue_12_item_3_text_chart_of_a_run(autojump_clock: trio.testing.MockClock) -> None:
    result = await _flow().run(limiters={"llm": 2})
    assert result.duration == 5.5
    text = result.timeline().to_text(width=22)
    assert text == "\n".join(
        [
            "tl 5.50s  |0s               5.50s|",
            "* a       |####                  | 0.00-1.00s",
            "  m[0]    |    ####              | 1.00-2.00s",
            "  m[1]    |    ####              | 1.00-2.00s",
            "* m[2]    |        ####          | 2.00-3.00s",
            "* c       |            xxxx..####| 3.00-5.50s",
            "  side    |##                    | 0.00-0.50s",
            "  llm (2) |    22221111          | peak 2",
        ]
    )


@pytest.mark.trio
async def test_issue_12_item_3_svg_bars_on_a_linear_axis(autojump_clock: trio.testing.MockClock) -> None:
    result = await _flow().run(limiters={"llm": 2})
    tl = result.timeline()
    assert tl.critical_path == ("a", "m", "c")
    assert tl.duration == 5.5
    svg = tl.to_svg()
    root = ET.fromstring(svg)
    left, scale = float(root.attrib["data-left"]), float(root.attrib["data-scale"])
    got = [
        (b.get("data-step"), b.get("data-item"), b.get("data-status"), b.get("data-attempt"),
         round((float(b.attrib["x"]) - left) / scale, 3), round(float(b.attrib["width"]) / scale, 3))
        for b in _bars(svg)
    ]
    assert got == [
        ("a", None, "succeeded", "1", 0.0, 1.0),
        ("m", "0", "succeeded", "1", 1.0, 1.0),
        ("m", "1", "succeeded", "1", 1.0, 1.0),
        ("m", "2", "succeeded", "1", 2.0, 1.0),
        ("c", None, "retried", "1", 3.0, 1.0),
        ("c", None, "backoff", "1", 4.0, 0.5),
        ("c", None, "succeeded", "2", 4.5, 1.0),
        ("side", None, "succeeded", "1", 0.0, 0.5),
    ]
    critical = {(b.get("data-step"), b.get("data-item")) for b in _bars(svg) if b.get("data-critical")}
    assert critical == {("a", None), ("m", "2"), ("c", None)}  # of a map step, its last item
    # m[2] waited a second for the limiter: a dashed line from when 'a' ended
    queued = [el for el in root.iter(f"{SVG}line") if el.get("class") == "queued"]
    assert len(queued) == 1
    assert round((float(queued[0].attrib["x1"]) - left) / scale, 3) == 1.0
    assert round((float(queued[0].attrib["x2"]) - left) / scale, 3) == 2.0
    tracks = [el for el in root.iter(f"{SVG}polygon") if el.get("class") == "occupancy"]
    assert [t.get("data-limiter") for t in tracks] == ["llm"]


@pytest.mark.trio
async def test_issue_12_item_3_failure_skip_and_cancel(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("bad")

    @flow.step
    async def boom() -> None:
        await trio.sleep(1)
        raise ValueError("boom")

    @flow.step
    async def child(boom: None) -> None:
        pass

    @flow.step
    async def slow() -> None:
        await trio.sleep(3)

    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue")
    tl = info.value.result.timeline()
    assert tl.statuses == {"boom": "failed", "child": "skipped", "slow": "succeeded"}
    assert tl.to_text(width=12).splitlines()[1:] == [
        "  boom            |xxxx        | 0.00-1.00s",
        "  child (skipped) |            |",
        "* slow            |############| 0.00-3.00s",
    ]
    with pytest.raises(FlowError) as info:
        await flow.run()
    bars = _bars(info.value.result.timeline().to_svg())
    assert [(b.get("data-step"), b.get("data-status")) for b in bars] == [
        ("boom", "failed"),
        ("slow", "cancelled"),
    ]


@pytest.mark.anyio
async def test_issue_12_item_3_from_events_matches_the_result(anyio_backend: Any) -> None:
    flow = _flow()
    events: list[Any] = []
    result = await flow.run(limiters={"llm": 2}, on_event=events.append)
    from_result = result.timeline()
    from_events = Timeline.from_events(events, flow=flow)
    assert from_events.critical_path == from_result.critical_path == ("a", "m", "c")
    assert from_events.statuses == from_result.statuses
    key = [(b.get("data-step"), b.get("data-item"), b.get("data-status")) for b in _bars(from_result.to_svg())]
    assert key == [(b.get("data-step"), b.get("data-item"), b.get("data-status")) for b in _bars(from_events.to_svg())]
    assert len(key) == 8
    if anyio_backend == "trio":  # virtual time: the same times exactly
        assert from_events.to_text() == from_result.to_text().replace("llm (2)", "llm (peak 2)")


@pytest.mark.trio
async def test_issue_12_item_3_events_of_a_cancelled_run(autojump_clock: trio.testing.MockClock) -> None:
    flow = _flow()
    events: list[Any] = []
    with trio.move_on_after(4.2):
        await flow.run(limiters={"llm": 2}, on_event=events.append)
    tl = Timeline.from_events(events)
    assert tl.duration == pytest.approx(4.2)
    assert tl.critical_path == ()  # no flow given: dependencies unknown
    assert tl.statuses["c"] == "cancelled"
    cut = [(b.get("data-status"), b.get("data-end")) for b in _bars(tl.to_svg()) if b.get("data-step") == "c"]
    assert cut == [("retried", "4.0"), ("backoff", repr(tl.duration))]  # the wait, cut short
    assert [ev.step for ev in events if isinstance(ev, trioflow.StepCancelled)] == ["c"]
    with pytest.raises(ValueError, match=r"^Timeline.from_events\(\) needs a run's events from its RunStarted"):
        Timeline.from_events(events[1:])


@pytest.mark.trio
async def test_issue_12_item_3_result_loaded_from_a_store(autojump_clock: trio.testing.MockClock) -> None:
    store = trioflow.MemoryStore()
    await _flow().run(limiters={"llm": 2}, store=store, run_id="r")
    loaded = await store.load("r")
    tl = loaded.timeline()
    assert tl.critical_path == ()
    assert tl.statuses == {"a": "succeeded", "m": "succeeded", "c": "succeeded", "side": "succeeded"}
    bars = _bars(tl.to_svg())
    assert {b.get("data-step") for b in bars} == {"a", "m", "c", "side"}
    # map items from the times the store recorded for each (StepResult.items)
    assert [(b.get("data-item"), b.get("data-start"), b.get("data-end")) for b in bars if b.get("data-step") == "m"] == [
        ("0", "1.0", "2.0"),
        ("1", "1.0", "2.0"),
        ("2", "2.0", "3.0"),
    ]
    # resuming restores every step: drawn as restored, no bars
    again = await _flow().run(limiters={"llm": 2}, store=store, run_id="r")
    assert set(again.timeline().statuses.values()) == {"restored"}
    assert _bars(again.timeline().to_svg()) == []


@pytest.mark.trio
async def test_issue_12_item_3_two_thousand_rows(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("wide")

    @flow.step(map_over="xs", max_concurrent=100)
    async def item(xs: int) -> int:
        await trio.sleep(1)
        return xs

    result = await flow.run({"xs": list(range(2000))})
    svg = result.timeline().to_svg()
    bars = _bars(svg)
    assert len(bars) == 2000
    assert sorted(int(b.attrib["data-item"]) for b in bars) == list(range(2000))
    assert {b.get("fill-opacity") for b in bars} == {"0.35"}  # collapsed into one row
    assert "item [2000 items]" in svg
    assert len(result.timeline().to_text().splitlines()) == 2  # header, one row
    # 2000 plain steps cannot collapse: 2000 rows, smaller
    flow = Flow("long")
    for i in range(2000):

        async def step() -> None:
            await trio.sleep(0.001)

        flow.add(step, name=f"s{i}")
    svg = (await flow.run(max_concurrent=50)).timeline().to_svg()
    root = ET.fromstring(svg)
    ys = sorted({float(b.attrib["y"]) for b in _bars(svg)})
    assert len(ys) == 2000
    assert ys[1] - ys[0] == 12
    assert float(root.attrib["height"]) < 2000 * 12 + 200


@pytest.mark.trio
async def test_issue_12_item_3_html_and_save(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    tl = (await _flow().run(limiters={"llm": 2})).timeline()
    page = tl.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    # self-contained: the only URL is the SVG namespace
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert "Critical path: a \u2192 m \u2192 c" in page
    for suffix, check in ((".svg", "<svg"), (".html", "<!DOCTYPE html>"), (".txt", "* a ")):
        path = tl.save(tmp_path / f"t{suffix}")
        assert path == tmp_path / f"t{suffix}"
        assert check in path.read_text(encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=r"^Timeline.save\(\) writes .svg, .html or .txt files \(got '.*t.png' with suffix '.png'\)",
    ):
        tl.save(tmp_path / "t.png")
    with pytest.raises(ValueError, match=r"^Timeline.to_text\(width=...\) must be an int >= 10 columns \(got 3\)$"):
        tl.to_text(width=3)


@pytest.mark.trio
async def test_issue_12_item_3_failed_items_of_a_step_that_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    flow = Flow("lenient")

    @flow.step(map_over="xs", on_item_error="none")
    async def each(xs: int) -> int:
        await trio.sleep(1)
        if xs % 2:
            raise ValueError(xs)
        return xs

    events: list[Any] = []
    result = await flow.run({"xs": [0, 1, 2]}, on_event=events.append)
    for tl in (result.timeline(), Timeline.from_events(events, flow=flow)):
        assert tl.statuses == {"each": "succeeded"}
        assert [(b.get("data-item"), b.get("data-status")) for b in _bars(tl.to_svg())] == [
            ("0", "succeeded"),
            ("1", "failed"),
            ("2", "succeeded"),
        ]


@pytest.mark.anyio
async def test_issue_12_item_3_retried_map_items(anyio_backend: Any) -> None:
    flow = Flow("items")

    @flow.step(map_over="xs", retry=Retry(max_attempts=2, wait=0.05))
    async def each(xs: int) -> int:
        await anyio.sleep(0.01 * (xs + 1))
        if xs == 1 and trioflow.current_step().attempt == 1:
            raise ConnectionError("once")
        return xs

    events: list[Any] = []
    result = await flow.run({"xs": [0, 1]}, on_event=events.append)
    for tl in (result.timeline(), Timeline.from_events(events, flow=flow)):
        bars = [(b.get("data-item"), b.get("data-status"), b.get("data-attempt")) for b in _bars(tl.to_svg())]
        assert bars == [
            ("0", "succeeded", "1"),
            ("1", "retried", "1"),
            ("1", "backoff", "1"),
            ("1", "succeeded", "2"),
        ]
        ends = {(b.get("data-item"), b.get("data-status")): float(b.attrib["data-end"]) for b in _bars(tl.to_svg())}
        starts = {(b.get("data-item"), b.get("data-status")): float(b.attrib["data-start"]) for b in _bars(tl.to_svg())}
        assert ends[("1", "retried")] == starts[("1", "backoff")]
        assert ends[("1", "backoff")] == pytest.approx(starts[("1", "succeeded")], abs=0.01)  # real time on asyncio
