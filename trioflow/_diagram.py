"""Diagrams of a flow's graph: :meth:`Flow.to_mermaid` and :meth:`Flow.to_dot`.

Both draw the same picture from a compiled :class:`~trioflow._graph.Plan`:

* a box per step, in declaration order; a map step is drawn as a double box
  (mermaid's subroutine shape, graphviz's ``peripheries=2``) labelled with what
  it maps over and its own ``max_concurrent``;
* a step that takes limiters names them in its label (``limiter: llm``) and has
  the ``limited`` class (mermaid) or a bold outline (graphviz);
* flow inputs are parallelograms, with an edge to each step that reads them;
* a data edge (a parameter names the upstream step) is a solid arrow; an
  order-only edge (``after=``) is a dashed arrow labelled ``after``.

Pure and synchronous: nothing here runs a flow.
"""

from __future__ import annotations

from ._graph import Node, Plan


def _step_lines(node: Node) -> list[str]:
    spec = node.spec
    lines = [spec.name]
    if spec.map_over is not None:
        each = f"map over {spec.map_over}"
        if spec.max_concurrent is not None:
            each += f", {spec.max_concurrent} at once"
        lines.append(each)
    if spec.limiters:
        lines.append(f"limiter: {', '.join(spec.limiters)}")
    return lines


def _inputs(plan: Plan) -> list[tuple[str, bool, list[int]]]:
    """(input name, optional, indexes of the steps that read it), in first-use order."""
    found: dict[str, tuple[bool, list[int]]] = {}
    for node in plan.nodes:
        for p in node.inputs:
            optional, readers = found.setdefault(p.key, (True, []))
            readers.append(node.index)
            found[p.key] = (optional and p.has_default, readers)
    return [(name, optional, readers) for name, (optional, readers) in found.items()]


def _edges(node: Node) -> list[tuple[int, bool]]:
    """(upstream index, is a data edge) for each dependency of ``node``, sorted."""
    data = {dep for _, dep in node.data_deps}
    return [(dep, dep in data) for dep in node.deps]


def _mermaid_text(lines: list[str]) -> str:
    def escape(line: str) -> str:
        for char, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
            line = line.replace(char, entity)
        return line

    return "<br/>".join(escape(line) for line in lines)


def to_mermaid(flow_name: str, plan: Plan) -> str:
    """The flow as a mermaid ``flowchart`` (see the module docstring for the notation)."""
    out = ["flowchart TD", f"    %% flow {flow_name!r}: {len(plan.nodes)} steps"]
    classes: dict[str, list[str]] = {"input": [], "map": [], "limited": []}
    for i, (name, optional, _) in enumerate(_inputs(plan)):
        label = _mermaid_text([name + (" (optional)" if optional else "")])
        out.append(f'    in{i}[/"{label}"/]')
        classes["input"].append(f"in{i}")
    for node in plan.nodes:
        label = _mermaid_text(_step_lines(node))
        nid = f"s{node.index}"
        if node.spec.map_over is not None:
            out.append(f'    {nid}[["{label}"]]')
            classes["map"].append(nid)
        else:
            out.append(f'    {nid}["{label}"]')
        if node.spec.limiters:
            classes["limited"].append(nid)
    for i, (_, _, readers) in enumerate(_inputs(plan)):
        for r in readers:
            out.append(f"    in{i} --> s{r}")
    for node in plan.nodes:
        for dep, is_data in _edges(node):
            arrow = "-->" if is_data else "-. after .->"
            out.append(f"    s{dep} {arrow} s{node.index}")
    out.append("    classDef input fill:#f4f4f4,stroke:#888,color:#333")
    out.append("    classDef map fill:#e8f0fe,stroke:#3367d6,stroke-width:2px")
    out.append("    classDef limited stroke:#b06000,stroke-width:2px")
    for cls, ids in classes.items():
        if ids:
            out.append(f"    class {','.join(ids)} {cls}")
    return "\n".join(out) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(flow_name: str, plan: Plan) -> str:
    """The flow as a graphviz ``digraph`` (see the module docstring for the notation)."""
    out = [
        f"digraph {_dot_quote(flow_name)} {{",
        "    rankdir=TB;",
        f"    label={_dot_quote(f'flow {flow_name}')}; labelloc=t;",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    inputs = _inputs(plan)
    for name, optional, _ in inputs:
        label = name + (" (optional)" if optional else "")
        out.append(
            f"    {_dot_quote('input:' + name)} [label={_dot_quote(label)}, shape=parallelogram, "
            f'style=filled, fillcolor="#f4f4f4", color="#888888"];'
        )
    for node in plan.nodes:
        attrs = [f"label={_dot_quote(chr(10).join(_step_lines(node)))}"]
        if node.spec.map_over is not None:
            attrs.append('peripheries=2, fillcolor="#e8f0fe", color="#3367d6"')
        if node.spec.limiters:
            attrs.append('penwidth=2, color="#b06000"' if node.spec.map_over is None else "penwidth=2")
        out.append(f"    {_dot_quote('step:' + node.spec.name)} [{', '.join(attrs)}];")
    for name, _, readers in inputs:
        for r in readers:
            out.append(
                f"    {_dot_quote('input:' + name)} -> {_dot_quote('step:' + plan.nodes[r].spec.name)} "
                f'[color="#888888"];'
            )
    for node in plan.nodes:
        for dep, is_data in _edges(node):
            edge = f"    {_dot_quote('step:' + plan.nodes[dep].spec.name)} -> {_dot_quote('step:' + node.spec.name)}"
            out.append(edge + (";" if is_data else ' [style=dashed, label="after"];'))
    out.append("}")
    return "\n".join(out) + "\n"
