"""Shared resources (issue 11 item 1) and declared inputs with typo marks (issue 11 item 2)."""

from __future__ import annotations

import re
import threading
from typing import Any

import anyio
import pytest

import trioflow
from trioflow import Flow, GraphError
from trioflow._inputs import damerau_levenshtein, one_edit_away

pytestmark = pytest.mark.anyio


def raises(exc: type[BaseException], message: str) -> Any:
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


class Client:
    """Something a step shares and must never get a copy of (deepcopy fails on the lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []

    async def get(self, url: str) -> str:
        await anyio.sleep(0.01)
        self.calls.append(url)
        return f"page {url}"


def client_flow(**flow_options: Any) -> Flow:
    flow = Flow("crawl", **flow_options)

    @flow.step
    async def urls(site: str) -> list[str]:
        return [f"{site}/a", f"{site}/b"]

    @flow.step(map_over="urls")
    async def pages(urls: str, client: Client) -> str:
        return await client.get(urls)

    @flow.step
    async def who(client: Client) -> int:
        return id(client)

    return flow


# -- issue 11 item 1: resources= ----------------------------------------------------------


async def test_issue_11_item_1_a_resource_is_the_very_object_in_every_step() -> None:
    client = Client()
    result = await client_flow().run({"site": "s"}, resources={"client": client})
    assert result["pages"] == ["page s/a", "page s/b"]
    assert result["who"] == id(client)
    assert sorted(client.calls) == ["s/a", "s/b"]


async def test_issue_11_item_1_resources_are_never_copied_even_with_isolation_copy() -> None:
    flow = Flow("f")
    seen: list[object] = []

    @flow.step(isolation="copy")
    async def a(pool: dict[str, int]) -> None:
        seen.append(pool)
        pool["a"] = 1

    @flow.step(isolation="copy", after="a")
    async def b(pool: dict[str, int], settings: dict[str, int]) -> int:
        seen.append(pool)
        settings["x"] = 2  # an input: a copy
        return pool["a"]

    pool: dict[str, int] = {}
    settings: dict[str, int] = {}
    result = await flow.run({"settings": settings}, resources={"pool": pool})
    assert result["b"] == 1
    assert seen == [pool, pool]
    assert all(s is pool for s in seen)
    assert settings == {}


async def test_issue_11_item_1_a_resource_replaces_a_parameter_default() -> None:
    flow = Flow("f")

    @flow.step
    async def a(client: object = None) -> object:
        return client

    marker = object()
    assert (await flow.run(resources={"client": marker}))["a"] is marker
    assert (await flow.run())["a"] is None


async def test_issue_11_item_1_a_resource_that_is_a_step_or_an_input_is_a_graph_error() -> None:
    flow = client_flow()
    with raises(
        GraphError,
        "resource 'urls' names a step of flow 'crawl'; a parameter named 'urls' receives the "
        "step's output, so rename the resource or the step",
    ):
        await flow.run({"site": "s"}, resources={"client": Client(), "urls": []})
    with raises(
        GraphError,
        "'site' is given as a resource but is also an input of flow 'crawl'; an input is copied "
        "for each step, a resource is shared: pass it as one of them",
    ):
        await flow.run({"site": "s"}, resources={"client": Client(), "site": "t"})


async def test_issue_11_item_1_misspelt_resource_names_and_wrong_types() -> None:
    flow = client_flow()
    with pytest.raises(GraphError, match=r"missing input 'client' \(needed by 'pages', 'who'\); did you mean 'clinet'\?"):
        await flow.run({"site": "s"}, resources={"clinet": Client()})
    # resources no step uses are fine: an application passes one set to every flow
    result = await flow.run({"site": "s"}, resources={"client": Client(), "db": object()})
    assert result["pages"] == ["page s/a", "page s/b"]
    with raises(
        TypeError,
        "flow.run(resources=...) takes a mapping of parameter names to shared objects, for "
        "example resources={'client': client} (got ['client'] that is a list)",
    ):
        await flow.run({"site": "s"}, resources=["client"])  # type: ignore[arg-type]
    with raises(
        TypeError,
        "flow.run(resources=...) keys must be parameter names (strings), got 1 that is a int",
    ):
        await flow.run({"site": "s"}, resources={1: Client()})  # type: ignore[dict-item]


async def test_issue_11_item_1_a_missing_resource_is_a_missing_input_with_a_hint() -> None:
    with pytest.raises(GraphError, match="missing input 'client'"):
        await client_flow().run({"site": "s"})


async def test_issue_11_item_1_mapping_over_a_resource_is_refused() -> None:
    flow = Flow("f")

    @flow.step(map_over="pool")
    async def each(pool: int) -> int:
        return pool

    with pytest.raises(GraphError, match="maps over 'pool', which is given as a resource"):
        await flow.run(resources={"pool": [1, 2]})


async def test_issue_11_item_1_resources_are_not_recorded_nor_part_of_a_resumed_run() -> None:
    store = trioflow.MemoryStore()
    first, second = Client(), Client()
    flow = client_flow()
    await flow.run({"site": "s"}, resources={"client": first}, store=store, run_id="r")
    # another client object for the same run id: no "different inputs" error, nothing re-run
    result = await flow.run({"site": "s"}, resources={"client": second}, store=store, run_id="r")
    assert result["pages"] == ["page s/a", "page s/b"]
    assert second.calls == []


async def test_issue_11_item_1_a_resource_that_cannot_be_encoded_works_with_sqlite(tmp_path: Any) -> None:
    store = trioflow.SQLiteStore(tmp_path / "runs.db", threaded=False)
    try:
        result = await client_flow().run({"site": "s"}, resources={"client": Client()}, store=store, run_id="r")
        assert result["pages"] == ["page s/a", "page s/b"]
    finally:
        store.close()


async def test_issue_11_item_1_a_cache_key_leaves_resources_out() -> None:
    flow = Flow("f")
    cache = trioflow.Cache()
    calls: list[str] = []

    @flow.step(cache=cache)
    async def fetch(url: str, client: Client) -> str:
        calls.append(url)
        return await client.get(url)

    assert (await flow.run({"url": "u"}, resources={"client": Client()}))["fetch"] == "page u"
    assert (await flow.run({"url": "u"}, resources={"client": Client()}))["fetch"] == "page u"
    assert calls == ["u"]


async def test_issue_11_item_1_declared_resources_must_be_given() -> None:
    flow = client_flow(resources=("client",))
    with raises(
        GraphError,
        "flow 'crawl' is missing resource 'client' (needed by 'pages', 'who'); pass it in "
        "flow.run(resources={'client': ...})",
    ):
        await flow.run({"site": "s"})
    assert "client" not in flow.plan().required_inputs


# -- issue 11 item 2: Flow(name, inputs=, resources=) and typo marks ------------------


def typo_flow(**flow_options: Any) -> Flow:
    flow = Flow("jokes", **flow_options)

    @flow.step
    async def joke(topic: str) -> str:
        return topic

    @flow.step
    async def french(jok: str) -> str:  # meant: joke
        return jok

    return flow


def test_issue_11_item_2_declared_inputs_catch_a_typo_at_plan_time() -> None:
    flow = typo_flow(inputs=("topic",))
    message = (
        "step 'french' has parameter 'jok' that names no step, declared input or declared "
        "resource of flow 'jokes'; did you mean 'joke'?; fix the name, or add it to "
        "Flow(inputs=...) or Flow(resources=...)"
    )
    with raises(GraphError, message):
        flow.plan()
    with raises(GraphError, message):
        flow.describe()


async def test_issue_11_item_2_declared_inputs_are_checked_before_any_run() -> None:
    ran: list[str] = []
    flow = Flow("f", inputs=("topic",))

    @flow.step
    async def first(topic: str) -> str:
        ran.append("first")
        return topic

    @flow.step
    async def second(tpoic: str = "x") -> str:
        ran.append("second")
        return tpoic

    with pytest.raises(GraphError, match=r"'tpoic' .*\(it has a default, .*did you mean 'topic'\?"):
        await flow.run({"topic": "cats"})
    assert ran == []


async def test_issue_11_item_2_declared_optional_inputs_and_resources_work() -> None:
    flow = Flow("f", inputs=("topic", "style"), resources=("client",))

    @flow.step
    async def joke(topic: str, client: Client, style: str = "dry") -> str:
        return f"{style} {topic} {type(client).__name__}"

    assert (await flow.run({"topic": "cats"}, resources={"client": Client()}))["joke"] == "dry cats Client"
    out = await flow.run({"topic": "cats", "style": "wet"}, resources={"client": Client()})
    assert out["joke"] == "wet cats Client"
    assert "(no dependencies; inputs: topic, style; resources: client)" in flow.describe()
    with raises(
        GraphError,
        "'topic' is given as a resource but is also an input of flow 'f'; an input is copied for "
        "each step, a resource is shared: pass it as one of them",
    ):
        await flow.run({}, resources={"client": Client(), "topic": "x"})


async def test_issue_11_item_2_an_unused_declared_input_may_be_passed() -> None:
    flow = Flow("f", inputs=("topic", "later"))

    @flow.step
    async def joke(topic: str) -> str:
        return topic

    assert (await flow.run({"topic": "t", "later": 1}))["joke"] == "t"
    with pytest.raises(GraphError, match="input 'other' is not used by any step"):
        await flow.run({"topic": "t", "other": 1})


def test_issue_11_item_2_bad_declarations() -> None:
    with raises(
        TypeError,
        "Flow(inputs=...) takes a tuple of parameter names, for example inputs=('topic',) "
        "(got 5 that is a int)",
    ):
        Flow("f", inputs=5)  # type: ignore[arg-type]
    with raises(
        TypeError,
        "Flow(resources=...) takes parameter names, which are identifier strings (got 'a b' in ['a b'])",
    ):
        Flow("f", resources=["a b"])
    with raises(
        GraphError,
        "Flow(): 'x' is declared both as an input and as a resource; an input is copied for "
        "each step, a resource is shared: choose one",
    ):
        Flow("f", inputs=("x",), resources=("x",))
    assert Flow("f", inputs="topic")._declared.inputs == frozenset({"topic"})
    flow = typo_flow(inputs=("topic", "jok", "joke"))
    with raises(
        GraphError,
        "flow 'jokes' declares input 'joke', but 'joke' is also a step; a parameter named "
        "'joke' receives the step's output, so rename one of them",
    ):
        flow.plan()


def test_issue_11_item_2_describe_marks_likely_typos_without_declarations() -> None:
    text = typo_flow().describe()
    assert "inputs: jok (likely a typo of step 'joke'?)" in text
    assert "inputs: topic)" in text  # two or more edits from every step: no mark

    flow = Flow("f")

    @flow.step
    async def summary() -> str:
        return ""

    @flow.step
    async def a(sumamry: str, summaries: str, sumary: str, summray: str) -> str:
        return ""

    text = flow.describe()
    assert "sumamry (likely a typo of step 'summary'?)" in text  # swap of two adjacent letters
    assert "sumary (likely a typo of step 'summary'?)" in text  # deletion
    assert "summray (likely a typo of step 'summary'?)" in text  # swap
    assert "summaries," in text
    assert "summaries (likely" not in text


def test_issue_11_item_2_declared_inputs_turn_marks_off() -> None:
    flow = typo_flow(inputs=("topic", "jok"))
    assert "likely a typo" not in flow.describe()


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("joke", "joke", 0),
        ("jok", "joke", 1),
        ("jokes", "joke", 1),
        ("jike", "joke", 1),
        ("ojke", "joke", 1),
        ("ca", "abc", 3),  # optimal string alignment: no edit of a swapped pair
        ("", "ab", 2),
        ("kitten", "sitting", 3),
    ],
)
def test_issue_11_item_2_damerau_levenshtein(a: str, b: str, distance: int) -> None:
    assert damerau_levenshtein(a, b) == distance
    assert damerau_levenshtein(b, a) == distance
    assert one_edit_away(a, b) == (distance == 1)
