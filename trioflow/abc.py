"""Protocols for extending trioflow: stores and codecs.

Implement these to plug in your own storage (Redis, Postgres, S3 …) or
serialization. Nothing here needs subclassing: any object with the right
methods works (:pep:`544` structural typing).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ._codec import Codec
from ._records import ItemRecord, RunHeader, RunInfo, RunRecords, StepRecord
from ._results import RunResult

__all__ = ["Codec", "ItemRecord", "RunHeader", "RunRecords", "RunSession", "StepRecord", "Store"]

# The records a store receives and returns are part of this protocol: show them
# (in reprs, tracebacks and the docs) under their public home.
for _record in (Codec, ItemRecord, RunHeader, RunRecords, StepRecord):
    _record.__module__ = __name__
del _record


class RunSession(Protocol):
    """One run's connection to a store, from :meth:`Store.open_run`.

    A session may also offer ``hooks(codec, errors, stop)``, returning the two
    functions the scheduler calls with the raw values when a step or a map
    item finishes; the built-in stores' sessions do, to record without making
    record objects (``stop()``, callable from any thread, stops the run when
    the store can no longer record it). Without it, the scheduler's results
    reach the session as :class:`StepRecord` and :class:`ItemRecord` objects,
    and a :meth:`record_step` or :meth:`record_item` that raises stops the run.
    """

    @property
    def previous(self) -> RunRecords:
        """What earlier runs with this id recorded (empty for a new run)."""
        ...

    def record_step(self, record: StepRecord) -> None:
        """Record a step's final status. Called synchronously from the scheduler:
        it must not block (buffer, and write later or from a thread) and must
        not raise (keep the error and raise it when the session closes)."""
        ...

    def record_item(self, record: ItemRecord) -> None:
        """Record one finished map item; same rules as :meth:`record_step`."""
        ...

    def finish(self, status: str, started_at: float, finished_at: float) -> None:
        """Record how the run ended (``"succeeded"``, ``"failed"``, ``"cancelled"``)."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where runs are recorded (:class:`trioflow.MemoryStore`, :class:`trioflow.SQLiteStore`)."""

    @property
    def codec(self) -> Codec:
        """The codec values are written with."""
        ...

    def open_run(self, header: RunHeader) -> AbstractAsyncContextManager[RunSession]:
        """Start or resume the run ``header.run_id``.

        Entering checks ``header`` against what is recorded under the same id
        and raises :class:`trioflow.StoreError` if the flow, its structure or
        its inputs differ. Leaving writes every record durably (also when the
        run is cancelled) before it returns.
        """
        ...

    async def runs(self) -> Sequence[RunInfo]:
        """Every recorded run, oldest first."""
        ...

    async def load(self, run_id: str) -> RunResult:
        """The recorded result of run ``run_id``."""
        ...

    async def forget(self, run_id: str) -> bool:
        """Delete run ``run_id`` and its records; ``False`` if there was none."""
        ...
