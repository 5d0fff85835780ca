"""``result[step_function]`` and ``result.steps[step_function]`` (issue 11 item 3)."""

from __future__ import annotations

import re
from typing import assert_type

import pytest

import trioflow
from trioflow import FlowError

pytestmark = pytest.mark.anyio


async def test_issue_11_item_3_results_are_indexed_by_the_step_function() -> None:
    flow = trioflow.Flow("jokes")

    @flow.step
    async def joke(topic: str) -> str:
        return f"a joke about {topic}"

    @flow.step(name="length")
    async def count(joke: str) -> int:
        return len(joke)

    result = await flow.run({"topic": "cats"})
    assert_type(result[joke], str)
    assert_type(result[count], int)
    assert result[joke] == "a joke about cats"
    assert result[count] == len("a joke about cats")  # declared under another name
    assert result.steps[count].name == "length"
    assert result.steps[joke] is result.steps["joke"]
    assert joke in result  # type: ignore[comparison-overlap]
    assert count in result.steps  # type: ignore[comparison-overlap]


async def test_issue_11_item_3_works_with_a_cached_step_and_in_a_flow_error() -> None:
    flow = trioflow.Flow("f")

    @flow.step(cache=trioflow.Cache())
    async def a() -> int:
        return 1

    @flow.step
    async def b() -> int:
        raise ValueError("no")

    with pytest.raises(FlowError) as info:
        await flow.run(error_handling="continue")
    assert info.value.result[a] == 1
    with pytest.raises(KeyError, match="step 'b' has no output: its status is 'failed'"):
        info.value.result[b]


async def test_issue_11_item_3_unknown_and_ambiguous_functions_are_key_errors() -> None:
    flow = trioflow.Flow("f")

    async def fetch() -> str:
        return "page"

    async def other() -> str:
        return "x"

    flow.add(fetch)
    flow.add(fetch, name="again")
    result = await flow.run()
    with pytest.raises(
        KeyError,
        match=re.escape(
            "test_issue_11_item_3_unknown_and_ambiguous_functions_are_key_errors.<locals>.fetch is the "
            "function of several steps ('fetch', 'again'); index by step name"
        ),
    ):
        result[fetch]
    with pytest.raises(KeyError, match=r"<locals>.other is not the function of any step of this flow"):
        result.steps[other]
    assert other not in result  # type: ignore[comparison-overlap]
    assert result["again"] == "page"
