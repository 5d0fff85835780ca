"""Templates in flow files (issue 15): parsing, types kept or formatted, and errors."""

from __future__ import annotations

import pytest

from trioflow._templates import Ref, TemplateError, parse, refs, resolve

SCOPE = {
    "inputs": {"topic": "cats", "n": 3, "tags": ["a", "b"]},
    "steps": {"fetch": {"items": [{"url": "u0"}, {"url": "u1"}], "a b": 1}, "count": 7},
    "item": {"id": 5},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("${inputs.n}", 3),  # a whole template keeps the type
        ("${inputs.tags}", ["a", "b"]),
        ("${steps.fetch.output.items[1].url}", "u1"),
        ("${steps.fetch.output.items[-1]}", {"url": "u1"}),
        ("${steps.fetch.output['a b']}", 1),
        ("${ item.id }", 5),
        ("n=${inputs.n}, tags=${inputs.tags}", "n=3, tags=['a', 'b']"),  # formatted with str()
        ("$${inputs.n} costs $5", "${inputs.n} costs $5"),
        ("plain", "plain"),
    ],
)
def test_resolve(source: str, expected: object) -> None:
    assert resolve(parse(source), SCOPE) == expected


def test_refs_name_their_root_and_path() -> None:
    tree = {"a": [parse("${steps.fetch.output.items[0]} ${inputs.topic}")], "b": parse("${item}")}
    assert list(refs(tree)) == [
        Ref("${steps.fetch.output.items[0]}", "steps", "fetch", ("items", 0)),
        Ref("${inputs.topic}", "inputs", "topic", ()),
        Ref("${item}", "item", "item", ()),
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("${inputs}", "template ${inputs} in '${inputs}' must name an input: ${inputs.NAME}"),
        ("${steps.fetch}", "template ${steps.fetch} in '${steps.fetch}' must read the step's "
                           "output: ${steps.fetch.output}"),
        ("${steps.fetch.outputs}", "template ${steps.fetch.outputs} in '${steps.fetch.outputs}' "
                                   "must read the step's output: ${steps.fetch.output}"),
        ("${1x}", "template ${1x} in '${1x}' must start with inputs., steps. or a batch item's name, "
                  "as in ${inputs.topic}, ${steps.fetch.output} or ${item}"),
        ("${item..x}", "template ${item..x} in '${item..x}': cannot read '..x'; use .key or [index] "
                       "to reach into a value, as in ${steps.fetch.output.items[0]}"),
        ("a ${b", "'a ${b' has a '${' with no closing '}'; write $${ for a literal ${"),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(source)
    assert str(info.value) == message


def test_resolve_errors_say_what_the_value_is() -> None:
    with pytest.raises(TemplateError) as info:
        resolve(parse("${steps.fetch.output.items[5]}"), SCOPE)
    assert str(info.value) == (
        "${steps.fetch.output.items[5]}: ${steps.fetch.output.items} has no [5] "
        "(it is [{'url': 'u0'}, {'url': 'u1'}], of type list)"
    )
    with pytest.raises(TemplateError) as info:
        resolve(parse("x ${steps.count.output.total}"), SCOPE)
    assert str(info.value) == (
        "${steps.count.output.total}: ${steps.count.output} has no .total (it is 7, of type int)"
    )
    with pytest.raises(TemplateError) as info:
        resolve(parse("${item.name}"), SCOPE)
    assert str(info.value) == "${item.name}: ${item} has no .name (it is {'id': 5}, of type dict)"
