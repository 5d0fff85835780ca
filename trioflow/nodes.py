"""Parallel node execution: the node-executor API on trioflow's engine.

Nodes are objects with ``async def run(self, ctx)`` that work on a
:class:`RunContext` and return the next node, :class:`End`, or a list of nodes
to fan out. :class:`ParallelExecutor` runs independent nodes concurrently, each
on its own deep copy of the context, on :func:`trioflow.gather` (so limits,
cancellation and result order are the engine's); :func:`merge_states` merges
their results; :func:`run_graph` runs a whole graph of nodes.

Exceptions::

    TrioflowError
     +-- ParallelExecutionError (ExceptionGroup)   ALL_SUCCESS and some nodes failed
     +-- MergeError                                no node succeeded: nothing to merge
"""

from __future__ import annotations

from ._nodes import BaseNode as BaseNode
from ._nodes import End as End
from ._nodes import MergeError as MergeError
from ._nodes import MergeStrategy as MergeStrategy
from ._nodes import NodeResult as NodeResult
from ._nodes import ParallelExecutionError as ParallelExecutionError
from ._nodes import ParallelExecutor as ParallelExecutor
from ._nodes import RunContext as RunContext
from ._nodes import StateT as StateT
from ._nodes import canonical as canonical
from ._nodes import merge_states as merge_states
from ._nodes import run_graph as run_graph

__all__ = [
    "BaseNode",
    "End",
    "MergeError",
    "MergeStrategy",
    "NodeResult",
    "ParallelExecutionError",
    "ParallelExecutor",
    "RunContext",
    "canonical",
    "merge_states",
    "run_graph",
]

# Documented (and pickled) under their public path, like trio's public names.
for _name in [*__all__, "StateT"]:
    globals()[_name].__module__ = __name__
del _name
