"""Stores, where durable runs are recorded: one private module per concept.

- ``_base``: what every store shares, and the recording hooks a session gives the scheduler;
- ``_memory``: :class:`MemoryStore`;
- ``_journal``: the journal records and the writer thread (group commit) shared by the
  database stores;
- ``_sqlite``: :class:`SQLiteStore`;
- ``_runlock``: SQLiteStore's run locks across processes;
- ``_postgres``: :class:`PostgresStore` (psycopg 3, imported on first use).

Every store encodes values with a codec (JSON by default), so a value that
:class:`MemoryStore` accepts is one that the database stores accept too.
"""

from .._public import public_home
from ._memory import MemoryStore as MemoryStore
from ._postgres import PostgresStore as PostgresStore
from ._sqlite import SQLiteStore as SQLiteStore

__all__ = ["MemoryStore", "PostgresStore", "SQLiteStore"]


public_home(MemoryStore, PostgresStore, SQLiteStore)  # trioflow imports them when first used
