"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``docs``, ``bench``, ``fuzz``, ``distributed``, ``browser``, ``postgres``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = False

# pydantic: trioflow.nodes states may be pydantic models, and the tests check that
# rich: the live ProgressDisplay and the docs' picture of it; opentelemetry-sdk: the
# in-memory exporter that checks the spans (it brings opentelemetry-api, the otel extra)
# starlette, uvicorn: the web-service recipe is served for real in a test (httpx: the http extra)
TEST_DEPS = [
    "pytest>=8", "pytest-trio>=0.8", "hypothesis>=6.100", "pydantic>=2", "rich>=13", "opentelemetry-sdk>=1.20",
    "starlette>=0.37", "uvicorn>=0.30",
]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (trio and asyncio backends) against the installed package."""
    session.install(".[process,http]", *TEST_DEPS)  # http: the flow files' http steps are tested too
    session.run("pytest", *session.posargs)


# the oldest trio the engine and the harness are tested with, and the newest release
OLDEST_TRIO = "0.26.2"


@nox.session
@nox.parametrize("trio", ["oldest", "newest"])
def trio_range(session: nox.Session, trio: str) -> None:
    """The test suite on the oldest and on the newest supported trio."""
    pin = f"trio=={OLDEST_TRIO}" if trio == "oldest" else "trio"
    # process: runner="process" on trio goes through trio-parallel (anyio's process
    # workers time their start-up, which trio's virtual clock in the tests cuts short)
    session.install(".[process,http]", *TEST_DEPS)
    session.install("--upgrade", "anyio[trio]>=4.4,<5", pin)  # with anyio's matching version
    session.run("python", "-c", "from importlib.metadata import version as v; print('trio', v('trio'), 'anyio', v('anyio'))")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The timeline page in headless Chromium (needs Debian's chromium package; .ci/run installs it)."""
    session.install(".", *TEST_DEPS)
    session.run("pytest", "browser_tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def distributed(session: nox.Session) -> None:
    """The Dask runner's tests against a real LocalCluster (slow, so not in ``tests``)."""
    session.install(".[dask,process,http]", *TEST_DEPS)  # http: every test module imports
    session.run("pytest", "-m", "distributed", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def postgres(session: nox.Session) -> None:
    """The store suite and the crash test against a real PostgreSQL server (Debian's postgresql package)."""
    session.install(".[postgres,http]", *TEST_DEPS)  # http: every test module imports
    session.run("pytest", "-m", "postgres", "-p", "no:cacheprovider", *session.posargs)


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
    session.run("ruff", "check", "trioflow", "tests", "browser_tests", "fuzz", "bench", "examples", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package; pyright's type completeness of the public API."""
    # every extra: mypy checks the code that uses rich, OpenTelemetry and httpx too;
    # pyright's nodejs extra brings Node as a wheel from PyPI (no download from nodejs.org)
    session.install(
        ".[process,dask,rich,otel,http,postgres]", "mypy>=1.10", "hypothesis>=6.100", "pyright[nodejs]>=1.1.380",
        "pytest>=8",
    )
    session.run("mypy", "--strict", "trioflow")
    # the overloads that type result[step_function] (issue 11 item 3)
    session.run("mypy", "--strict", "tests/test_typed_results.py")
    session.run("pyright", "tests/test_typed_results.py")
    # fails below 100%: every public symbol has a known, declared type
    session.run("pyright", "--verifytypes", "trioflow", "--ignoreexternal")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with nitpicky references and warnings as errors."""
    session.install(".", "-r", "docs/requirements.txt")
    session.run("sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: what a step costs, as ratios to hand-written baselines from the same process.

    ``nox -s bench -- --quick`` (5 repetitions, the smaller sizes of the standalone
    cases) takes a few minutes on a 2-core machine; other arguments go to bench/run.py
    (``--rst``, ``--only CASE ...``, ``-n N``).
    """
    # rich, otel and the OpenTelemetry SDK: what the observers cost (bench/observers_case.py);
    # process, dask: the runners (bench/runners_case.py); postgres: bench/store_case.py
    # (pytest: the loopback PostgreSQL server of tests/_postgres.py imports it)
    session.install(".[process,dask,rich,otel,postgres]", "opentelemetry-sdk>=1.20", "pytest")
    quick = "--quick" in session.posargs
    session.run("python", "bench/run.py", *session.posargs)
    # the testing harness: schedules per second against plain trio.run
    session.run("python", "bench/harness_case.py", *(["--quick"] if quick else []))
    # cancelling a large run from outside, against letting it finish, at scale (issue 9 item 21)
    session.run("python", "bench/cancel_case.py", *(["10000"] if quick else []))
    # trioflow.map's retained memory beside the results (issue 9 item 20)
    session.run("python", "bench/map_memory_case.py", *(["100000"] if quick else []))
