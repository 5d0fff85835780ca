"""A map over a set of strings, recorded and resumed in separate processes (tests/test_store_items.py).

    python tests/set_map_flow.py DATABASE RUN_ID [FAILING_WORD]

Prints one JSON line: the iteration order of the set in this process, the
items the map step ran, and the result (``shout``) or ``null`` if it failed;
then the result of an uninterrupted run without a store, in this process.
"""

from __future__ import annotations

import asyncio
import json
import sys

import trioflow

WORDS = frozenset(
    ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi"]
)


def build(ran: list[str], failing: str | None) -> trioflow.Flow:
    flow = trioflow.Flow("set-map")

    @flow.step(map_over="words")
    async def shout(words: str) -> str:
        ran.append(words)
        if words == failing:
            raise ValueError(f"{words} failed")
        return words.upper()

    return flow


async def main(database: str, run_id: str, failing: str | None) -> None:
    words = set(WORDS)
    ran: list[str] = []
    store = trioflow.SQLiteStore(database)
    try:
        result: list[str] | None = (
            await build(ran, failing).run({"words": words}, store=store, run_id=run_id, error_handling="continue")
        )["shout"]
    except trioflow.FlowError:
        result = None
    store.close()
    fresh = (await build([], None).run({"words": words}))["shout"]
    print(json.dumps({"order": list(words), "ran": ran, "result": result, "fresh": fresh}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
