"""A flow with a race: two steps update one shared ledger across an await.

``deposit`` and ``withdraw`` both read the balance, await something (an audit
log call), then write the balance back. Whenever one of them reads before the
other has written, an update is lost. Under plain ``trio.run`` the steps stay in
lock-step (each runnable task runs once per scheduling batch, and ``withdraw``
does one more await before it reads), so every run looks fine; the
deterministic harness finds the interleaving that loses the deposit. See
``docs/testing.rst``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import trio

import trioflow


def make_flow(ledger: dict[str, int]) -> trioflow.Flow:
    """Build the buggy flow around a ledger that both steps share."""
    flow = trioflow.Flow("bank")

    async def audit(entry: str) -> None:
        await trio.lowlevel.checkpoint()  # stands for a call to an audit service

    @flow.step
    async def deposit() -> int:
        balance = ledger["balance"]
        await audit("deposit 50")
        ledger["balance"] = balance + 50
        return ledger["balance"]

    @flow.step
    async def withdraw() -> int:
        await audit("withdraw 30")
        balance = ledger["balance"]
        await audit("withdrew 30")
        ledger["balance"] = balance - 30
        return ledger["balance"]

    return flow


async def final_balance() -> int:
    """Run the flow once on a fresh ledger of 100 and return the balance it leaves."""
    ledger = {"balance": 100}
    await make_flow(ledger).run()
    return ledger["balance"]


async def main(out: Callable[..., object] = print) -> int:
    """Run the flow a few times the ordinary way: it always looks right."""
    for run in range(1, 4):
        out(f"run {run}: final balance {await final_balance()} (expected 120)")
    out("Looks fine. trioflow.testing finds the schedule that loses the deposit: see docs/testing.rst.")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
