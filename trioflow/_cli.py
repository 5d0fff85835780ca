"""The ``trioflow`` command: a thin layer over flow files, observers and stores.

Exit codes: 0 success, 1 the flow failed, 2 an invalid file or usage (click's
own usage errors are 2 too), 130 interrupted. Errors go to standard error as
one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO

import click

from . import __version__

if TYPE_CHECKING:
    from ._flowfile import FlowFile
    from ._progress import ProgressDisplay
    from ._results import RunResult

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Exit(Exception):
    """Stop with this exit code after printing ``message`` to standard error."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise _Exit(code, message)


def _load(path: str, allow_modules: Sequence[str] = ()) -> FlowFile:
    from ._flowfile import FlowFileError, load_flow_file

    try:
        return load_flow_file(path, allow_modules=allow_modules)
    except FlowFileError as exc:
        _fail("\n".join(exc.problems))


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            _fail(f"-i {pair!r}: give an input as NAME=VALUE, as in -i topic=cats or -i n=3")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def _store(path: str, *, must_exist: bool) -> Any:
    from ._exceptions import StoreError
    from ._stores import SQLiteStore

    if must_exist and not Path(path).exists():
        _fail(f"--store {path!r}: no such file; give the database a run was recorded in "
              f"(trioflow run FILE --store PATH)")
    if Path(path).is_dir():
        _fail(f"--store {path!r} is a folder; give the path of a database file, such as "
              f"{str(Path(path) / 'runs.db')!r}")
    if not Path(path).absolute().parent.is_dir():
        _fail(f"--store {path!r}: the folder {str(Path(path).absolute().parent)!r} does not "
              f"exist; create it first, or give another path")
    try:
        return SQLiteStore(path)
    except (StoreError, OSError) as exc:
        raise _Exit(EXIT_USAGE, f"--store {path!r}: {exc}") from exc


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))
    return value


def _error_text(error: BaseException | None) -> str:
    if error is None:
        return ""
    return f"{type(error).__name__}: {error}"


def _display(file: TextIO) -> ProgressDisplay:
    from ._progress import ProgressDisplay

    return ProgressDisplay(file=file)  # live on a terminal, one line per event otherwise


# -- the commands ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(version=__version__, prog_name="trioflow", message="%(prog)s %(version)s")
def cli(debug: bool) -> None:
    """Run, check, plan and inspect trioflow flow files (TOML or JSON).

    Exit status: 0 success, 1 the flow failed, 2 invalid file or usage,
    130 interrupted.
    """


_FILE = click.argument("file", type=click.Path(dir_okay=False))


@cli.command()
@_FILE
@click.option("-i", "--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A flow input; a VALUE that parses as JSON is that value, else a string.")
@click.option("--store", metavar="PATH", help="Record every step in this SQLite file, to resume.")
@click.option("--run-id", metavar="ID", help="The run's id in the store; the same id resumes it.")
@click.option("--max-concurrent", type=click.IntRange(min=1), metavar="N",
              help="At most N steps at once (overrides the file's max_concurrent).")
@click.option("--json", "as_json", is_flag=True,
              help="Print only a JSON document on stdout (the progress goes to stderr).")
@click.option("--allow-module", multiple=True, metavar="PREFIX",
              help="Let python steps import this module and its submodules.")
def run(file: str, inputs: tuple[str, ...], store: str | None, run_id: str | None,
        max_concurrent: int | None, as_json: bool, allow_module: tuple[str, ...]) -> None:
    """Run the flow in FILE."""
    flow_file = _load(file, allow_module)
    from ._flowfile import FlowFileError

    try:
        values = flow_file.run_inputs(_parse_inputs(inputs))
    except FlowFileError as exc:
        _fail("\n".join(exc.problems))
    if run_id is not None and store is None:
        _fail("--run-id needs --store PATH: a run can be resumed only from where it was recorded")
    opened = _store(store, must_exist=False) if store is not None else None
    if store is not None and run_id is None:
        run_id = uuid.uuid4().hex[:12]
        print(f"trioflow: run id {run_id} (resume with --store {store} --run-id {run_id})",
              file=sys.stderr, flush=True)
    try:
        code = _run(flow_file, file, values, opened, store, run_id, max_concurrent, as_json)
    finally:
        if opened is not None:
            _close(opened)
    if code:
        raise _Exit(code)


def _run(flow_file: FlowFile, file: str, values: dict[str, Any], store: Any, store_path: str | None,
         run_id: str | None, max_concurrent: int | None, as_json: bool) -> int:
    import trio

    from ._exceptions import FlowError, GraphError, StoreError

    display = _display(sys.stderr)
    outcome: dict[str, Any] = {}
    from ._flowstep import LOG  # batch items that failed under error_handling = "continue"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trioflow: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.WARNING)

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def on_sigint() -> None:
                    with trio.open_signal_receiver(signal.SIGINT) as signals:
                        async for _ in signals:
                            if outcome.get("interrupted"):  # a second Ctrl-C: stop waiting
                                print("trioflow: interrupted again: exiting without waiting for "
                                      "the steps to stop", file=sys.stderr, flush=True)
                                os._exit(EXIT_INTERRUPTED)
                            outcome["interrupted"] = True
                            print("trioflow: interrupted: cancelling the run (Ctrl-C again to "
                                  "exit at once)", file=sys.stderr, flush=True)
                            scope.cancel()

                nursery.start_soon(on_sigint)
                try:
                    outcome["result"] = await flow_file.run(
                        values, max_concurrent=max_concurrent, on_event=display, store=store,
                        run_id=run_id,
                    )
                except FlowError as exc:
                    outcome["result"] = exc.result
                except (GraphError, StoreError) as exc:  # before any step ran
                    outcome["invalid"] = exc
                finally:
                    nursery.cancel_scope.cancel()

    # with --json, standard output holds only the document: what steps print goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        trio.run(main)
    if "invalid" in outcome:
        exc = outcome["invalid"]
        hint = ""
        if isinstance(exc, StoreError) and store_path is not None and "store.forget(" in str(exc):
            hint = (f"; to start run {run_id!r} over from the command line: "
                    f"trioflow runs forget {run_id} --store {store_path}")
        raise _Exit(EXIT_USAGE, f"{file}: {exc}{hint}") from exc
    if outcome.get("interrupted") or "result" not in outcome:
        if store_path is not None:
            resume = (f"the steps that finished are recorded; resume with: trioflow run {file} "
                      f"--store {store_path} --run-id {run_id}")
        else:
            resume = "nothing was recorded; run with --store PATH to be able to resume"
        print(f"trioflow: interrupted: the run was cancelled; {resume}", file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "outputs": {}, "failed": [], "errors": {},
                              "run_id": run_id}))
        return EXIT_INTERRUPTED
    result: RunResult = outcome["result"]
    if not result.ok:
        lines = [f"trioflow: flow {flow_file.flow.name!r} failed"]
        lines += [f"  step {n!r}: {_error_text(result.steps[n].error)}" for n in result.failed]
        if result.skipped:
            lines.append(f"  skipped: {', '.join(result.skipped)}")
        cancelled = [n for n, s in result.steps.items() if str(getattr(s.status, "value", s.status)) == "cancelled"]
        if cancelled:
            lines.append(f"  cancelled: {', '.join(cancelled)}")
        if _debugging():
            for n in result.failed:
                error = result.steps[n].error
                if error is not None:
                    print(f"trioflow: traceback of step {n!r}:", file=sys.stderr)
                    traceback.print_exception(error, file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)
    if as_json:
        print(json.dumps(_document(result, run_id), indent=2))
    else:
        _summary(result, flow_file, sys.stdout)
    return EXIT_OK if result.ok else EXIT_FAILED


def _document(result: RunResult, run_id: str | None) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "outputs": {name: _jsonable(value) for name, value in result.outputs.items()},
        "failed": list(result.failed),
        "errors": {name: _error_text(result.steps[name].error) for name in result.failed},
        "run_id": run_id,
    }


def _summary(result: RunResult, flow_file: FlowFile, out: IO[str]) -> None:
    flow = flow_file.flow
    plan = flow.plan()
    leaves = [n.spec.name for n in plan.nodes if not n.children]
    status = "succeeded" if result.ok else "failed"
    print(f"flow {flow.name!r} {status} in {result.duration:.2f} s", file=out)
    for name in leaves:
        if name in result.outputs:
            value = result.outputs[name]
            text = value if isinstance(value, str) else json.dumps(_jsonable(value))
            print(f"  {name}: {text}", file=out)


@cli.command()
@_FILE
@click.option("--allow-module", multiple=True, metavar="PREFIX",
              help="Let python steps import this module and its submodules.")
def validate(file: str, allow_module: tuple[str, ...]) -> None:
    """Check FILE without running anything."""
    flow_file = _load(file, allow_module)
    count = len(flow_file.flow.steps)
    click.echo(f"{file}: ok, flow {flow_file.flow.name!r} with {count} step{'s' * (count != 1)}")


@cli.command()
@_FILE
@click.option("--allow-module", multiple=True, metavar="PREFIX",
              help="Let python steps import this module and its submodules.")
def plan(file: str, allow_module: tuple[str, ...]) -> None:
    """Print the steps of FILE, their dependencies, and what can run together."""
    click.echo(_load(file, allow_module).flow.describe())


@cli.command()
@_FILE
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True, help="The diagram language.")
@click.option("--allow-module", multiple=True, metavar="PREFIX",
              help="Let python steps import this module and its submodules.")
def graph(file: str, fmt: str, allow_module: tuple[str, ...]) -> None:
    """Print a diagram of FILE's steps and dependencies."""
    flow = _load(file, allow_module).flow
    click.echo(flow.to_mermaid() if fmt == "mermaid" else flow.to_dot())


@cli.group()
def runs() -> None:
    """List, show and forget the runs recorded in a store."""


_STORE = click.option("--store", required=True, metavar="PATH", help="The SQLite file of the runs.")


def _in_store(path: str, fn: Callable[[Any], Any]) -> Any:
    import trio

    from ._exceptions import StoreError

    store = _store(path, must_exist=True)
    try:
        return trio.run(fn, store)
    except StoreError as exc:
        raise _Exit(EXIT_USAGE, str(exc)) from exc
    finally:
        _close(store)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@runs.command("list")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def runs_list(store: str, as_json: bool) -> None:
    """List the recorded runs, latest first."""

    async def read(s: Any) -> Any:
        return await s.runs()

    infos = sorted(_in_store(store, read), key=lambda i: i.updated, reverse=True)
    if as_json:
        click.echo(json.dumps([
            {"run_id": i.run_id, "flow": i.flow, "status": i.status, "created": i.created,
             "updated": i.updated, "duration": _duration(i.started_at, i.finished_at)}
            for i in infos
        ], indent=2))
        return
    if not infos:
        click.echo(f"no runs recorded in {store}")
        return
    rows = [("RUN ID", "FLOW", "STATUS", "UPDATED", "DURATION")]
    for i in infos:
        d = _duration(i.started_at, i.finished_at)
        rows.append((i.run_id, i.flow, i.status, _when(i.updated), "-" if d is None else f"{d:.2f} s"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _duration(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


@runs.command("show")
@click.argument("run_id")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
def runs_show(run_id: str, store: str, as_json: bool) -> None:
    """Show a recorded run: each step's status, times, attempts and error."""

    async def read(s: Any) -> Any:
        return await s.load(run_id)

    result = _in_store(store, read)
    start = result.started_at
    steps = []
    for name, step in result.steps.items():
        steps.append({
            "step": name,
            "status": str(step.status.value if hasattr(step.status, "value") else step.status),
            "started": None if step.started_at is None else step.started_at - start,
            "finished": None if step.finished_at is None else step.finished_at - start,
            "attempts": step.attempts,
            "error": _error_text(step.error) or None,
        })
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "flow": result.flow, "ok": result.ok,
                               "duration": result.duration, "steps": steps}, indent=2))
        return
    click.echo(f"run {run_id} of flow {result.flow!r}: "
               f"{'succeeded' if result.ok else 'not succeeded'}, {result.duration:.3f} s")
    rows = [("STEP", "STATUS", "START", "END", "ATTEMPTS", "ERROR")]
    for s in steps:
        rows.append((s["step"], s["status"], _secs(s["started"]), _secs(s["finished"]),
                     str(s["attempts"]), s["error"] or ""))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@runs.command("forget")
@click.argument("run_id")
@_STORE
def runs_forget(run_id: str, store: str) -> None:
    """Delete what a run recorded (its id can then start a new run)."""

    async def forget(s: Any) -> Any:
        return await s.forget(run_id)

    if not _in_store(store, forget):
        _fail(f"the store {store} has no run {run_id!r}; trioflow runs list --store {store} "
              f"lists the recorded runs")
    click.echo(f"forgot run {run_id}")


@cli.command()
@click.argument("run_id")
@_STORE
@click.option("-o", "--output", required=True, metavar="FILE",
              help="Where to write the picture: .html, .svg or .txt.")
def timeline(run_id: str, store: str, output: str) -> None:
    """Draw a recorded run's timeline into FILE (.html, .svg or .txt)."""
    suffix = Path(output).suffix.lower()
    if suffix not in (".html", ".svg", ".txt"):
        _fail(f"-o {output!r}: the file must end in .html, .svg or .txt")
    if not Path(output).absolute().parent.is_dir():
        _fail(f"-o {output!r}: the folder {str(Path(output).absolute().parent)!r} does not exist")

    async def read(s: Any) -> Any:
        return await s.load(run_id)

    result = _in_store(store, read)
    result.timeline().save(output)
    click.echo(f"wrote {output}")


def main(argv: Sequence[str] | None = None) -> None:
    """The ``trioflow`` command's entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere: trioflow --debug run FILE, trioflow run FILE --debug
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        cli.main(args=args, prog_name="trioflow", standalone_mode=False)
    except _Exit as exc:
        if debug and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        if exc.message:
            prefix = "trioflow: error: " if exc.code == EXIT_USAGE else ""
            click.echo(prefix + exc.message, err=True)
        sys.exit(exc.code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("trioflow: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"trioflow: error: {type(exc).__name__}: {exc}"
                   f"{'' if debug else ' (--debug shows the traceback)'}", err=True)
        sys.exit(EXIT_FAILED)
