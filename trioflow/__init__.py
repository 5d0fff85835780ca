"""trioflow: run graphs of async steps with every independent step in parallel.

Built on trio's structured concurrency (and anyio, so flows also run on
asyncio). The documentation (``docs/``) has a tutorial, how-to pages and the
reference.
"""

from __future__ import annotations

import typing

from ._context import StepContext as StepContext
from ._context import current_step as current_step
from ._exceptions import FlowError as FlowError
from ._exceptions import GraphError as GraphError
from ._exceptions import StoreError as StoreError
from ._exceptions import TrioflowError as TrioflowError
from ._flow import Flow as Flow
from ._limits import KeyedLimiter as KeyedLimiter
from ._limits import RateLimit as RateLimit
from ._public import public_home as _public_home
from ._results import RunResult as RunResult
from ._results import StepResult as StepResult
from ._results import StepStatus as StepStatus
from ._retry import Retry as Retry

if typing.TYPE_CHECKING:  # imported on first use, see __getattr__ below
    from ._cache import Cache as Cache
    from ._cache import CacheStatistics as CacheStatistics
    from ._codec import CodecError as CodecError
    from ._codec import JSONCodec as JSONCodec
    from ._codec import PickleCodec as PickleCodec
    from ._events import BatchStarted as BatchStarted
    from ._events import Event as Event
    from ._events import MapStarted as MapStarted
    from ._events import RunFinished as RunFinished
    from ._events import RunStarted as RunStarted
    from ._events import StepCancelled as StepCancelled
    from ._events import StepFailed as StepFailed
    from ._events import StepRetrying as StepRetrying
    from ._events import StepSkipped as StepSkipped
    from ._events import StepStarted as StepStarted
    from ._events import StepSucceeded as StepSucceeded
    from ._map import gather as gather
    from ._map import map as map
    from ._open_run import RunHandle as RunHandle
    from ._progress import ProgressDisplay as ProgressDisplay
    from ._race import race as race
    from ._records import RecordedError as RecordedError
    from ._records import RunInfo as RunInfo
    from ._runner_dask import DaskRunner as DaskRunner
    from ._stores import MemoryStore as MemoryStore
    from ._stores import PostgresStore as PostgresStore
    from ._stores import SQLiteStore as SQLiteStore
    from ._timeline import Timeline as Timeline

__version__ = "0.1.0"

__all__ = [
    "BatchStarted",
    "Cache",
    "CacheStatistics",
    "CodecError",
    "DaskRunner",
    "Event",
    "Flow",
    "FlowError",
    "GraphError",
    "JSONCodec",
    "KeyedLimiter",
    "MapStarted",
    "MemoryStore",
    "PickleCodec",
    "PostgresStore",
    "ProgressDisplay",
    "RateLimit",
    "RecordedError",
    "Retry",
    "RunFinished",
    "RunHandle",
    "RunInfo",
    "RunResult",
    "RunStarted",
    "SQLiteStore",
    "StepCancelled",
    "StepContext",
    "StepFailed",
    "StepResult",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepStatus",
    "StepSucceeded",
    "StoreError",
    "Timeline",
    "TrioflowError",
    "current_step",
    "gather",
    "map",
    "race",
]


# Rarely used names, imported when first used (PEP 562), so that ``import
# trioflow`` costs little more than ``import trio``: name -> private module.
# Each of these modules gives its names their public home when imported.
_LAZY = {
    "BatchStarted": "._events",
    "Cache": "._cache",
    "CacheStatistics": "._cache",
    "CodecError": "._codec",
    "DaskRunner": "._runner_dask",
    "Event": "._events",
    "JSONCodec": "._codec",
    "MapStarted": "._events",
    "MemoryStore": "._stores",
    "PickleCodec": "._codec",
    "PostgresStore": "._stores",
    "ProgressDisplay": "._progress",
    "RecordedError": "._records",
    "RunFinished": "._events",
    "RunHandle": "._open_run",
    "RunInfo": "._records",
    "RunStarted": "._events",
    "SQLiteStore": "._stores",
    "StepCancelled": "._events",
    "StepFailed": "._events",
    "StepRetrying": "._events",
    "StepSkipped": "._events",
    "StepStarted": "._events",
    "StepSucceeded": "._events",
    "Timeline": "._timeline",
    "gather": "._map",
    "map": "._map",
    "race": "._race",
}

_public_home(*(value for name, value in globals().items() if name in __all__))

if not typing.TYPE_CHECKING:  # type checkers read the imports above, and flag unknown names

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value  # found directly from now on
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


del typing
