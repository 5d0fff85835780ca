"""``flow.to_mermaid()`` and ``flow.to_dot()`` (issue 12 item 4)."""

from __future__ import annotations

import re

import pytest

from trioflow import Flow, GraphError


def _flow() -> Flow:
    flow = Flow("docs")

    @flow.step(limiter="http")
    async def fetch(url: str) -> list[str]:
        return [url]

    @flow.step(map_over="fetch", max_concurrent=4, limiter=["llm", "gpu"])
    async def summary(fetch: str, style: str = "short") -> str:
        return fetch

    @flow.step
    async def report(summary: list[str]) -> str:
        return "".join(summary)

    @flow.step(after="report")
    async def notify() -> None:
        pass

    return flow


def _mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    return {
        (m[1], m[2], m[3])
        for m in re.finditer(r"^    (\w+) (-->|-\. after \.->) (\w+)$", text, flags=re.MULTILINE)
    }


def test_issue_12_item_4_mermaid_nodes_edges_and_marks() -> None:
    text = _flow().to_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert '    in0[/"url"/]' in lines
    assert '    in1[/"style (optional)"/]' in lines
    assert '    s0["fetch<br/>limiter: http"]' in lines
    assert '    s1[["summary<br/>map over fetch, 4 at once<br/>limiter: llm, gpu"]]' in lines
    assert '    s2["report"]' in lines
    assert '    s3["notify"]' in lines
    # data edges are solid, the order-only edge is dashed and says so
    assert _mermaid_edges(text) == {
        ("in0", "-->", "s0"),
        ("in1", "-->", "s1"),
        ("s0", "-->", "s1"),
        ("s1", "-->", "s2"),
        ("s2", "-. after .->", "s3"),
    }
    assert "    class s1 map" in lines
    assert "    class s0,s1 limited" in lines
    assert "    class in0,in1 input" in lines
    assert text.endswith("\n")


def test_issue_12_item_4_dot_nodes_edges_and_marks() -> None:
    text = _flow().to_dot()
    assert text.startswith('digraph "docs" {\n')
    assert text.endswith("}\n")
    assert '"step:summary" [label="summary\\nmap over fetch, 4 at once\\nlimiter: llm, gpu", peripheries=2' in text
    assert '"input:style" [label="style (optional)", shape=parallelogram' in text
    edges = set(re.findall(r'^    "([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.MULTILINE))
    assert edges == {
        ("input:url", "step:fetch", ' [color="#888888"];'),
        ("input:style", "step:summary", ' [color="#888888"];'),
        ("step:fetch", "step:summary", ";"),
        ("step:summary", "step:report", ";"),
        ("step:report", "step:notify", ' [style=dashed, label="after"];'),
    }
    # balanced braces and brackets, every statement ends with ';'
    body = text.splitlines()[1:-1]
    assert all(line.rstrip().endswith(";") for line in body)
    assert text.count("[") == text.count("]")


def test_issue_12_item_4_names_are_escaped() -> None:
    flow = Flow('say "hi"')

    async def odd() -> None:
        pass

    flow.add(odd, name='a "quoted" <b> & c\\d')
    mermaid = flow.to_mermaid()
    assert '    s0["a #quot;quoted#quot; #lt;b#gt; #amp; c\\d"]' in mermaid.splitlines()
    dot = flow.to_dot()
    assert 'digraph "say \\"hi\\"" {' in dot
    assert '"step:a \\"quoted\\" <b> & c\\\\d" [label="a \\"quoted\\" <b> & c\\\\d"];' in dot


def test_issue_12_item_4_invalid_flow_is_a_graph_error() -> None:
    flow = Flow("bad")

    @flow.step(after="nope")
    async def a() -> None:
        pass

    with pytest.raises(GraphError, match="nope"):
        flow.to_mermaid()
    with pytest.raises(GraphError, match="nope"):
        flow.to_dot()
