"""The examples on the "coming from ..." docs pages run and print what the pages show.

Each page is one doctest: its ``>>>`` examples run in order, in one namespace.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["coming-from-batch-node.rst", "coming-from-node-executor.rst", "coming-from-plans.rst"]


class PublicNames(doctest.OutputChecker):
    """``trioflow._exceptions.GraphError`` in a traceback matches ``trioflow.GraphError``."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        got = re.sub(r"\btrioflow\._\w+\.", "trioflow.", got)
        return super().check_output(want, got, optionflags)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples(page: str) -> None:
    path = DOCS / page
    text = path.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(text, {"__name__": page}, page, str(path), 0)
    assert test.examples, f"{page} has no examples"
    runner = doctest.DocTestRunner(
        checker=PublicNames(), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


@pytest.mark.parametrize("page", PAGES)
def test_page_documents_its_api(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert re.search(r"^\.\. auto(function|class|method)::", text, flags=re.MULTILINE)


@pytest.mark.parametrize("module", ["trioflow._map", "trioflow._nodes", "trioflow._plan"])
def test_docstring_examples(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    runner = doctest.DocTestRunner(checker=PublicNames(), optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    for test in doctest.DocTestFinder().find(mod):
        runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
