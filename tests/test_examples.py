"""The scripts in ``examples/`` run, in virtual time, and show what they claim."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

import trioflow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(path: Path) -> ModuleType:
    name = f"_trioflow_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def run_virtual(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_example_main_succeeds(path: Path) -> None:
    module = load(path)
    assert inspect.iscoroutinefunction(module.main), f"{path.name} needs an async main()"
    lines: list[str] = []
    code = run_virtual(module.main, lambda *parts: lines.append(" ".join(map(str, parts))))
    assert code == 0, "\n".join(lines)
    assert lines


@pytest.fixture(scope="module")
def jokes() -> ModuleType:
    return load(EXAMPLES / "jokes.py")


def test_jokes_parallel_speedup_is_exact_in_virtual_time(jokes: ModuleType) -> None:
    demo = run_virtual(jokes.demo)
    # sequential: every call one after the other, the failed translation attempt
    # and its 0.05 s backoff included
    assert demo.sequential.duration == pytest.approx(
        0.12 + 0.12 + 0.08 + 0.05 + 6 * 0.12 + 0.1 + (0.05 + 0.05 + 0.05 + 0.1) + 0.12 + 0.05
    )
    # parallel: the critical path, with the six drafts in two waves of three
    # (limiters={"llm": 3}): brainstorm, 2 x draft, pick_best, translate, publish
    assert demo.parallel.duration == pytest.approx(0.12 + 2 * 0.12 + 0.1 + 0.25 + 0.05)
    assert demo.speedup == pytest.approx(1.61 / 0.76)
    assert demo.speedup > 2


def test_jokes_sequential_and_parallel_agree(jokes: ModuleType) -> None:
    demo = run_virtual(jokes.demo)
    assert demo.identical
    assert demo.sequential.ok
    assert demo.parallel.ok
    assert dict(demo.sequential.outputs) == dict(demo.parallel.outputs)
    assert list(demo.parallel.outputs) == list(jokes.flow.steps)
    assert len(demo.parallel["draft"]) == 6
    assert demo.parallel["publish"]["translation"].startswith("[French] ")
    for result in (demo.sequential, demo.parallel):
        assert result.steps["translate"].attempts == 2
        assert result.usage == {"llm_calls": 9, "tokens": result.usage["tokens"], "http_requests": 3}


def test_jokes_parallel_run_respects_the_llm_limiter(jokes: ModuleType) -> None:
    demo = run_virtual(jokes.demo)
    llm_steps = {"brainstorm", "draft", "pick_best", "illustrate"}
    in_flight = 0
    peak = 0
    for event in demo.events:
        if getattr(event, "step", None) not in llm_steps:
            continue
        if isinstance(event, trioflow.StepStarted):
            in_flight += 1
        elif isinstance(event, trioflow.StepSucceeded | trioflow.StepFailed):
            in_flight -= 1
        peak = max(peak, in_flight)
    assert peak == 3


def test_jokes_timeline_draws_every_step_and_item(jokes: ModuleType) -> None:
    demo = run_virtual(jokes.demo)
    chart = demo.parallel.timeline().to_text()
    lines = []
    assert run_virtual(jokes.main, lambda *parts: lines.append(" ".join(map(str, parts)))) == 0
    assert chart in "\n".join(lines)  # main() prints the library's timeline
    rows = [line.split("|")[0][2:].strip() for line in chart.splitlines()[1:]]
    assert rows == [
        "brainstorm", "search_news", "style_guide", "audience",
        *(f"draft[{i}]" for i in range(6)),
        "pick_best", "translate", "illustrate", "publish",
        "llm (3)", "http (2)",
    ]
    translate = next(line for line in chart.splitlines() if line.startswith("* translate"))
    # a failed attempt (x), the backoff (.), the successful attempt (#)
    bar = translate.split("|")[1].strip()
    assert bar == "x" * bar.count("x") + "." * bar.count(".") + "#" * bar.count("#")
    assert min(bar.count("x"), bar.count("."), bar.count("#")) > 0
    assert translate.endswith("| 0.46-0.71s")
    llm = next(line for line in chart.splitlines() if line.startswith("  llm (3)"))
    assert llm.endswith("| peak 3")


def test_jokes_main_prints_the_speedup(jokes: ModuleType) -> None:
    lines: list[str] = []
    assert run_virtual(jokes.main, lambda *parts: lines.append(" ".join(map(str, parts)))) == 0
    assert lines[-1] == "sequential 1.61 s, parallel 0.76 s: 2.1x"
