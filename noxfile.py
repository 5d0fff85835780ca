"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``docs``, ``bench``, ``fuzz``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = False

# pydantic: trioflow.nodes states may be pydantic models, and the tests check that
TEST_DEPS = ["pytest>=8", "pytest-trio>=0.8", "hypothesis>=6.100", "pydantic>=2"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (trio and asyncio backends) against the installed package."""
    session.install(".[process,http]", *TEST_DEPS)  # http: the flow files' http steps are tested too
    session.run("pytest", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Long schedule-fuzzing run of the engine's properties (not in the default set)."""
    session.install(".", *TEST_DEPS)
    session.run(
        "pytest", "fuzz", "-p", "no:cacheprovider", *session.posargs,
        env={"TRIOFLOW_FUZZ_PROFILE": "long"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, including the flake8-async (ASYNC) rules."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "trioflow", "tests", "fuzz", "bench", "examples", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install(".[process,dask]", "mypy>=1.10", "hypothesis>=6.100")
    session.run("mypy", "--strict", "trioflow")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with nitpicky references and warnings as errors."""
    session.install(".", "-r", "docs/requirements.txt")
    session.run("sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: trioflow against hand-written raw trio, as ratios from the same process."""
    session.install(".")
    session.run("python", "bench/run.py", *session.posargs)
    # the testing harness: schedules per second against plain trio.run
    session.run("python", "bench/harness_case.py", *session.posargs)
