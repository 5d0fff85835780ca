"""A planner's JSON plan, run as a flow: every step as soon as its dependencies are done.

An LLM planner typically writes a plan like ``PLAN`` below: steps with a
``step_id``, a ``description``, the ``tool`` to call, the steps it
``depends_on``, and a ``parallel_group`` hint. ``Flow.from_plan`` turns it
into a flow (checking tools, dependencies, cycles and groups first),
``describe()`` prints it, and running it with an ``on_event`` printer shows
each parallel batch as it starts ("Executing N steps in parallel: ...").

The tools are simulated with ``trio.sleep``, so this runs offline. The
``search`` tool runs three queries at once with :func:`trioflow.gather` (the
planner's ``call_tools_parallel``).

Run it with ``python examples/plan_example.py``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import trio

import trioflow

PLAN = {
    "goal": "Write a short report on structured concurrency",
    "steps": [
        {"step_id": "search_papers", "description": "Find papers on structured concurrency",
         "tool": "search", "depends_on": [], "parallel_group": "research"},
        {"step_id": "search_web", "description": "Find blog posts about trio nurseries",
         "tool": "search", "depends_on": [], "parallel_group": "research"},
        {"step_id": "fetch_guidelines", "description": "Fetch the house style guide",
         "tool": "http_get", "depends_on": [], "parallel_group": "research"},
        {"step_id": "outline", "description": "Outline the report",
         "tool": "llm", "depends_on": ["search_papers", "search_web"], "parallel_group": "prepare"},
        {"step_id": "cite", "description": "Format the citations",
         "tool": "format_citations", "depends_on": ["search_papers", "search_web"],
         "parallel_group": "prepare"},
        {"step_id": "draft", "description": "Write the report",
         "tool": "llm", "depends_on": ["outline", "cite", "fetch_guidelines"]},
    ],
}


async def query(engine: str, text: str) -> str:
    await trio.sleep(0.3)
    trioflow.current_step().add_usage(searches=1)
    return f"{engine}:{text[:12]}"


async def search(description: str) -> list[Any]:
    """Three search engines at once: one step, three concurrent tool calls."""
    return await trioflow.gather(
        *(functools.partial(query, engine, description) for engine in ("arxiv", "scholar", "web"))
    )


async def http_get(description: str) -> str:
    await trio.sleep(0.2)
    return "style: short sentences"


async def llm(description: str, *inputs: Any) -> str:
    await trio.sleep(0.3)
    trioflow.current_step().add_usage(llm_calls=1)
    return f"{description} (from {len(inputs)} inputs)"


async def format_citations(description: str, papers: list[str], posts: list[str]) -> list[str]:
    await trio.sleep(0.15)
    return sorted(papers + posts)


TOOLS = {"search": search, "http_get": http_get, "llm": llm, "format_citations": format_citations}


async def main(out: Callable[..., object] = print) -> int:
    flow = trioflow.Flow.from_plan(PLAN, TOOLS, name="report")
    out(flow.describe())
    out()
    parallel = await flow.run(on_event=out)
    sequential = await flow.run(max_concurrent=1)
    if dict(parallel.outputs) != dict(sequential.outputs):
        out("sequential and parallel runs disagree")
        return 1
    out()
    out(f"draft: {parallel['draft']}")
    out(f"usage: {dict(parallel.usage)}")
    out(f"done in {parallel.duration:.3f} s (sequential would take {sequential.duration:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
