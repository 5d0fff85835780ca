"""The examples in the README and the docs run and print what the text shows.

Each page is one doctest: its ``>>>`` examples run in order, sharing a
namespace. Pages that keep their examples elsewhere (or have none) are not
listed here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import trioflow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCTESTED_PAGES = [
    "index.rst", "tutorial.rst", "errors.rst", "design.rst", "watching.rst", "scaling.rst", "limits.rst",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class PublicNamesChecker(doctest.OutputChecker):
    """Compare output with exception names shown by their public path.

    ``trioflow._exceptions.GraphError`` in a traceback matches
    ``trioflow.GraphError`` in the docs, which is how users import it.
    """

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        got = re.sub(r"\btrioflow\._\w+\.", "trioflow.", got)
        return super().check_output(want, got, optionflags)


def run_doctest(text: str, name: str, path: Path) -> None:
    test = doctest.DocTestParser().get_doctest(text, {"__name__": name}, name, str(path), 0)
    assert test.examples, f"{path.name} has no examples"
    runner = doctest.DocTestRunner(checker=PublicNamesChecker(), optionflags=FLAGS)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


@pytest.mark.parametrize("page", DOCTESTED_PAGES)
def test_docs_page_examples(page: str) -> None:
    path = DOCS / page
    run_doctest(path.read_text(encoding="utf-8"), page, path)


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    expected = re.search(r"^```text\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                         flags=re.MULTILINE | re.DOTALL)
    if expected is not None:
        assert out == expected.group(1)


def test_reference_documents_every_public_name() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.rst"))
    documented = set(
        re.findall(r"^\.\. (?:auto)?(?:class|function|exception|data|decorator)::\s+(?:trioflow\.)?(\w+)",
                   text, flags=re.MULTILINE)
    )
    missing = sorted(set(trioflow.__all__) - documented)
    assert not missing, f"add these to docs/reference.rst: {missing}"


def documented_modules() -> list[str]:
    """Public modules, and private ones that define a name in ``trioflow.__all__``."""
    defining = {getattr(getattr(trioflow, name), "__module__", None) for name in trioflow.__all__}
    names = ["trioflow"]
    for info in pkgutil.walk_packages(trioflow.__path__, "trioflow."):
        if info.name.startswith("trioflow.testing.strategies"):
            continue  # needs Hypothesis
        public = not any(part.startswith("_") for part in info.name.split("."))
        if public or info.name in defining:
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", documented_modules())
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(checker=PublicNamesChecker(), optionflags=FLAGS)
    failures: list[str] = []
    for test in doctest.DocTestFinder().find(module, module_name):
        if test.examples and (test.filename is None or test.filename == module.__file__):
            runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
