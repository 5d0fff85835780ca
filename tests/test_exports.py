"""``trioflow.__all__`` is sorted and names exactly the public API."""

from __future__ import annotations
import __future__ as future_module

import types

import trioflow


def _public_names() -> set[str]:
    # dir(), not vars(): rarely used names are imported when first used (PEP 562)
    return {
        name
        for name in dir(trioflow)
        if not name.startswith("_")
        and not isinstance(getattr(trioflow, name), types.ModuleType)  # submodules such as trioflow.testing
        and not isinstance(getattr(trioflow, name), future_module._Feature)  # `from __future__ import annotations`
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


def _run_python(code: str) -> str:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout


def test_issue_16_importing_trioflow_leaves_the_rarely_used_parts_for_later() -> None:
    # stores, caches, codecs, timelines, tracing: imported when first used, not by `import trioflow`
    later = (
        "trioflow._stores", "trioflow._cache", "trioflow._codec", "trioflow._timeline", "trioflow._map", "sqlite3",
        "opentelemetry",
    )
    code = f"import sys, trioflow; print(sorted(m for m in {later!r} if m in sys.modules))"
    assert _run_python(code).strip() == "[]"


def test_issue_16_names_imported_when_first_used_show_their_public_home() -> None:
    # however their module was imported first: directly, or through trioflow.X
    code = (
        "import types, trioflow._codec, trioflow._stores._sqlite, trioflow\n"
        "assert trioflow._codec.CodecError.__module__ == 'trioflow'\n"
        "assert trioflow._stores._sqlite.SQLiteStore.__module__ == 'trioflow'\n"
        "for name in trioflow.__all__:\n"
        "    value = getattr(trioflow, name)\n"
        "    assert name in vars(trioflow), name  # kept once looked up\n"
        "    if not isinstance(value, types.UnionType):  # the Event union\n"
        "        assert value.__module__ == 'trioflow', (name, value.__module__)\n"
        "print('ok')"
    )
    assert _run_python(code).strip() == "ok"


def test_issue_16_an_unknown_name_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="module 'trioflow' has no attribute 'Flwo'"):
        trioflow.Flwo  # type: ignore[attr-defined]  # noqa: B018
    assert "SQLiteStore" in dir(trioflow)
