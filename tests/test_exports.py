"""``trioflow.__all__`` is sorted and names exactly the public API."""

from __future__ import annotations
import __future__ as future_module

import types

import trioflow


def _public_names() -> set[str]:
    return {
        name
        for name, value in vars(trioflow).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules such as trioflow.testing
        and not isinstance(value, future_module._Feature)  # `from __future__ import annotations`
    }


def test_all_is_sorted_without_duplicates() -> None:
    assert trioflow.__all__ == sorted(trioflow.__all__)
    assert len(set(trioflow.__all__)) == len(trioflow.__all__)


def test_all_equals_the_public_names() -> None:
    assert set(trioflow.__all__) == _public_names()


def test_all_equals_the_public_names_after_importing_testing() -> None:
    import trioflow.testing  # a public submodule, not a name in __all__

    assert set(trioflow.__all__) == _public_names()


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from trioflow import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(trioflow.__all__)


def test_public_names_come_from_trioflow() -> None:
    for name in trioflow.__all__:
        value = getattr(trioflow, name)
        if isinstance(value, types.UnionType):  # the Event union: check its members
            assert all(t.__module__.startswith("trioflow") for t in value.__args__), name
            continue
        module = value.__module__
        assert module.startswith("trioflow"), (name, module)


def test_core_names_are_exported() -> None:
    core = {
        "Flow",
        "FlowError",
        "GraphError",
        "Retry",
        "RunResult",
        "StepResult",
        "StepStatus",
        "StoreError",
        "TrioflowError",
        "current_step",
    }
    assert core <= set(trioflow.__all__)


def test_limits_routing_and_races_are_exported() -> None:
    # issue 13
    assert {"KeyedLimiter", "RateLimit", "race"} <= set(trioflow.__all__)


def test_version() -> None:
    assert isinstance(trioflow.__version__, str)


def test_runner_names_are_exported() -> None:
    # issue 14: runner="thread" | "process" take strings; the Dask runner is a class
    assert "DaskRunner" in trioflow.__all__
    assert trioflow.DaskRunner.__module__ == "trioflow"


def test_store_names_are_exported() -> None:
    # issue 14 item 4: PostgresStore beside SQLiteStore and MemoryStore; importing it needs no psycopg
    assert {"MemoryStore", "PostgresStore", "SQLiteStore"} <= set(trioflow.__all__)
    assert trioflow.PostgresStore.__module__ == "trioflow"


def test_issue_16_importing_trioflow_imports_neither_pytest_nor_trio_testing() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, trioflow; "
        "print(sorted(m for m in ('pytest', 'trio.testing', 'hypothesis') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert out.strip() == "[]"
