"""The racy flow of ``examples/racy_flow.py`` and the examples of ``docs/testing.rst``.

The harness must find the lost update that plain ``trio.run`` never shows,
and shrink it to the schedule the docs page prints. Every ``python`` code
block of the page runs here, in order, in one namespace.
"""

from __future__ import annotations

import collections
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import settings

from trioflow.testing import NonDeterminismError, check_deterministic, run_deterministic

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.rst"
sys.path.insert(0, str(ROOT / "examples"))

from racy_flow import final_balance  # noqa: E402

# What a deterministic, database-free Hypothesis run of the page's test shrinks to.
SHRUNK = "schedule=[2, 2]"


def code_blocks(language: str) -> Iterator[str]:
    text = PAGE.read_text(encoding="utf-8")
    pattern = rf"^\.\. code-block:: {language}\n(?:   :\w+:.*\n)*\n((?:   .*\n|\n)+)"
    for match in re.finditer(pattern, text, flags=re.MULTILINE):
        yield textwrap.dedent(match.group(1))


def reproducible(test: Callable[..., Any]) -> Callable[..., Any]:
    return settings(database=None, derandomize=True, deadline=None)(test)


def test_plain_trio_never_sees_the_race() -> None:
    outcomes = collections.Counter(trio.run(final_balance) for _ in range(300))
    assert outcomes == {120: 300}


def test_fifo_does_not_see_it_either() -> None:
    assert run_deterministic(final_balance).value == 120


def test_check_deterministic_finds_the_lost_update() -> None:
    with pytest.raises(
        NonDeterminismError, match="the first difference is value is 120 vs "
    ) as info:
        check_deterministic(final_balance)
    assert run_deterministic(final_balance, schedule=info.value.schedule).value == info.value.got


def test_the_docs_page_examples_run_and_show_what_the_page_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace: dict[str, Any] = {"__name__": "testing_page"}
    blocks = list(code_blocks("python"))
    assert len(blocks) == 7
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)

    # the racy flow's test fails, with the shrunk schedule the page shows
    racy_test = reproducible(namespace["test_the_balance_does_not_depend_on_the_schedule"])
    with pytest.raises(AssertionError) as info:
        racy_test()
    report = "\n".join(getattr(info.value, "__notes__", []))
    assert f"test_the_balance_does_not_depend_on_the_schedule(\n    {SHRUNK},\n)" in report
    text = PAGE.read_text(encoding="utf-8")
    assert f"E           {SHRUNK}," in text
    assert run_deterministic(final_balance, schedule=[2, 2]).value == 70
    assert "E       assert 70 == 120" in text

    # the traced replay printed the flow's step events, each with its task
    printed = capsys.readouterr().out
    assert "start    deposit (attempt 1)" in printed
    assert "start    withdraw (attempt 1)" in printed

    # the user's own strategy found the race in its first run
    assert "run 1 by NewestFirst: 150" in printed

    # the user's own flow is schedule independent, and exactly timed
    reproducible(namespace["test_report_is_schedule_independent"])()

    # the user's own trio code: conserved under every schedule
    namespace["test_money_is_conserved_under_every_schedule"]()
    reproducible(namespace["test_money_is_conserved"])()


def test_the_text_blocks_match_real_messages() -> None:
    texts = list(code_blocks("text"))
    with pytest.raises(NonDeterminismError) as info:
        check_deterministic(final_balance)
    first_line = str(info.value).splitlines()[0]
    assert any(first_line in block for block in texts)
