"""trioflow: run graphs of async steps with every independent step in parallel.

Built on trio's structured concurrency (and anyio, so flows also run on
asyncio). The documentation (``docs/``) has a tutorial, how-to pages and the
reference.
"""

from __future__ import annotations

from ._cache import Cache as Cache
from ._cache import CacheStatistics as CacheStatistics
from ._codec import CodecError as CodecError
from ._codec import JSONCodec as JSONCodec
from ._codec import PickleCodec as PickleCodec
from ._context import StepContext as StepContext
from ._context import current_step as current_step
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
from ._exceptions import FlowError as FlowError
from ._exceptions import GraphError as GraphError
from ._exceptions import StoreError as StoreError
from ._exceptions import TrioflowError as TrioflowError
from ._flow import Flow as Flow
from ._limits import KeyedLimiter as KeyedLimiter
from ._limits import RateLimit as RateLimit
from ._map import gather as gather
from ._map import map as map
from ._open_run import RunHandle as RunHandle
from ._progress import ProgressDisplay as ProgressDisplay
from ._race import race as race
from ._records import RecordedError as RecordedError
from ._records import RunInfo as RunInfo
from ._results import RunResult as RunResult
from ._results import StepResult as StepResult
from ._results import StepStatus as StepStatus
from ._retry import Retry as Retry
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


def _fixup_module_metadata() -> None:
    # Show public names under their public home (trioflow.GraphError, not
    # trioflow._exceptions.GraphError) in reprs, tracebacks and the docs.
    namespace = globals()
    for name in __all__:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith("trioflow._"):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):  # e.g. a type alias
                pass


_fixup_module_metadata()
del _fixup_module_metadata
