"""The ``trioflow`` command (issue 15), run in subprocesses: exit codes, stdout/stderr, --json."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trioflow._flowfile import load_flow_file

ROOT = Path(__file__).resolve().parent.parent


def trioflow_cmd(*args: str | Path, cwd: Path | None = None, timeout: float = 120,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trioflow ARGS`` with this checkout's trioflow first on the path."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "trioflow", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout, check=False,
    )


def write(tmp_path: Path, text: str, name: str = "flow.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


HELLO = """
    [flow]
    name = "hello"

    [inputs]
    who = { default = "world" }
    n = { default = 2 }

    [steps.greet]
    kind = "shell"
    argv = ["echo", "hello ${inputs.who}"]

    [steps.repeat]
    kind = "shell"
    argv = ["echo", "${steps.greet.output} x${inputs.n}"]
"""


def test_run_prints_a_summary_and_the_progress_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    done = trioflow_cmd("run", path, "-i", "who=cli")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("flow 'hello' succeeded in ")
    assert done.stdout.splitlines()[1:] == ["  repeat: hello cli x2"]
    assert "greet" in done.stderr  # the progress display (plain lines: not a terminal)


def test_run_json_document_and_input_values_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    done = trioflow_cmd("run", path, "--json", "-i", "n=[1, 2]", "-i", "who=\"quoted\"")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ok": True,
        "outputs": {"greet": "hello quoted", "repeat": "hello quoted x[1, 2]"},
        "failed": [],
        "errors": {},
        "run_id": None,
    }
    assert "greet" in done.stderr


def test_a_failed_flow_exits_1_with_the_errors(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [flow]
        name = "broken"
        error_handling = "continue"
        [steps.bad]
        kind = "shell"
        shell = true
        command = "echo to-stderr >&2; exit 4"
        [steps.after_bad]
        kind = "shell"
        argv = ["echo", "${steps.bad.output}"]
        [steps.fine]
        kind = "shell"
        argv = ["echo", "fine"]
    """)
    done = trioflow_cmd("run", path, "--json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc == {
        "ok": False,
        "outputs": {"fine": "fine"},
        "failed": ["bad"],
        "errors": {"bad": "CommandError: command ['/bin/sh', '-c', 'echo to-stderr >&2; exit 4'] "
                          "exited with code 4: to-stderr"},
        "run_id": None,
    }
    plain = trioflow_cmd("run", path)
    assert plain.returncode == 1
    assert plain.stdout.splitlines()[0].startswith("flow 'broken' failed in ")
    assert "trioflow: flow 'broken' failed\n  step 'bad': CommandError: command" in plain.stderr
    assert "  skipped: after_bad" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = trioflow_cmd("run", path, "--debug")
    assert debug.returncode == 1
    assert "trioflow: traceback of step 'bad':\nTraceback (most recent call last):" in debug.stderr
    assert "run_shell" in debug.stderr


def test_an_invalid_file_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.fetch]
        kind = "shel"
        [steps.parse]
        kind = "shell"
        argv = ["echo", "${steps.fetc.output}"]
    """)
    for command in ("run", "validate", "plan"):
        done = trioflow_cmd(command, path)
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr == (
            f"trioflow: error: {path}:2: steps.fetch.kind: must be one of 'shell', 'http', 'python' "
            f"(got 'shel'); did you mean 'shell'?\n"
            f"{path}:5: steps.parse.argv: ${{steps.fetc.output}} names no step; did you mean 'fetch'?\n"
        )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    unknown = trioflow_cmd("run", path, "-i", "whoo=x")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        f"trioflow: error: {path}: input 'whoo' is not declared in [inputs] (declared: who, n); "
        f"did you mean 'who'?\n"
    )
    assert trioflow_cmd("run", path, "-i", "novalue").returncode == 2
    assert trioflow_cmd("run", path, "--max-concurrent", "0").returncode == 2
    assert trioflow_cmd("frobnicate").returncode == 2
    assert trioflow_cmd("run", path, "--run-id", "x").stderr == (
        "trioflow: error: --run-id needs --store PATH: a run can be resumed only from where it "
        "was recorded\n"
    )
    missing = trioflow_cmd("validate", tmp_path / "nope.toml")
    assert missing.returncode == 2
    assert "nope.toml: no such file" in missing.stderr


def test_validate_and_plan(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    done = trioflow_cmd("validate", path)
    assert (done.returncode, done.stdout) == (0, f"{path}: ok, flow 'hello' with 2 steps\n")
    plan = trioflow_cmd("plan", path)
    assert plan.returncode == 0
    assert plan.stdout.splitlines() == [
        "Plan for flow 'hello': 2 steps",
        "  1. greet - shell: echo hello ${inputs.who} (no dependencies; inputs: who)",
        "  2. repeat - shell: echo ${steps.greet.output} x${inputs.n} (depends on: greet; inputs: n)",
        "Stages (steps in one stage can run together):",
        "  stage 1 (1 step): greet",
        "  stage 2 (1 step): repeat",
    ]


def test_graph(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    ff = load_flow_file(path)
    for fmt, expected in (("mermaid", ff.flow.to_mermaid()), ("dot", ff.flow.to_dot())):
        done = trioflow_cmd("graph", path, "--format", fmt)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected + "\n"
        assert "greet" in done.stdout
        assert "repeat" in done.stdout
    assert trioflow_cmd("graph", path).stdout == ff.flow.to_mermaid() + "\n"  # the default
    assert trioflow_cmd("graph", path, "--format", "png").returncode == 2


def test_help_and_version() -> None:
    done = trioflow_cmd("--help")
    assert done.returncode == 0
    for command in ("run", "validate", "plan", "graph", "runs", "timeline"):
        assert f"  {command} " in done.stdout
    version = trioflow_cmd("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("trioflow ")


def test_the_console_script_is_declared() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"trioflow": "trioflow._cli:main"}
    from trioflow._cli import main

    assert callable(main)


def test_python_steps_need_an_allowed_module(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text("def double(x):\n    return 2 * x\n")
    path = write(tmp_path, """
        [steps.d]
        kind = "python"
        function = "mytools:double"
        args = { x = 21 }
    """)
    refused = trioflow_cmd("run", path, cwd=tmp_path)
    assert refused.returncode == 2
    assert "module 'mytools' is not allowed" in refused.stderr
    done = trioflow_cmd("run", path, "--json", "--allow-module", "mytools", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"d": 42}


# -- http steps against a real server on the loopback interface --------------------------------


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/json"):
                self.reply(200, json.dumps({"path": self.path, "items": [1, 2, 3],
                                            "agent": self.headers.get("X-Agent")}).encode(),
                           "application/json")
            elif self.path.startswith("/missing"):
                self.reply(404, b"no such thing", "text/plain")
            else:
                self.reply(200, b"plain text", "text/plain; charset=utf-8")

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            self.reply(200, json.dumps({"got": data.decode(),
                                        "type": self.headers["Content-Type"]}).encode(),
                       "application/json")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_http_steps(tmp_path: Path, server: str) -> None:
    path = write(tmp_path, f"""
        [inputs]
        base = {{ default = "{server}" }}

        [steps.get]
        kind = "http"
        url = "${{inputs.base}}/json/a"
        headers = {{ X-Agent = "trioflow-test" }}

        [steps.text]
        kind = "http"
        method = "get"
        url = "${{inputs.base}}/plain"

        [steps.post]
        kind = "http"
        method = "POST"
        url = "${{inputs.base}}/echo"
        json = {{ first = "${{steps.get.output.items[0]}}", all = "${{steps.get.output.items}}" }}

        [steps.body]
        kind = "http"
        method = "POST"
        url = "${{inputs.base}}/echo"
        body = "text ${{steps.text.output}}"

        [steps.each]
        kind = "http"
        url = "${{inputs.base}}/json/${{item}}"
        batch = {{ items = "${{steps.get.output.items}}", max_concurrent = 2 }}
    """)
    done = trioflow_cmd("run", path, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)["outputs"]
    assert out["get"] == {"path": "/json/a", "items": [1, 2, 3], "agent": "trioflow-test"}
    assert out["text"] == "plain text"
    assert json.loads(out["post"]["got"]) == {"first": 1, "all": [1, 2, 3]}
    assert out["post"]["type"] == "application/json"
    assert out["body"]["got"] == "text plain text"
    assert [e["path"] for e in out["each"]] == ["/json/1", "/json/2", "/json/3"]


def test_a_non_2xx_status_fails_the_step_with_the_status(tmp_path: Path, server: str) -> None:
    path = write(tmp_path, f"""
        [steps.missing]
        kind = "http"
        url = "{server}/missing"
    """)
    done = trioflow_cmd("run", path, "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["errors"]["missing"]
    assert error.startswith(f"HTTPStatusError: Client error '404 Not Found' for url '{server}/missing'")


# -- stores: records, resume, SIGINT, runs commands ---------------------------------------------


COUNTED = """
    [flow]
    name = "counted"
    error_handling = "continue"

    [steps.one]
    kind = "shell"
    shell = true
    command = "echo one >> LOG; echo 1"

    [steps.two]
    kind = "shell"
    shell = true
    command = "echo two >> LOG; if [ -e GATE ]; then echo 2; else echo closed >&2; exit 1; fi"

    [steps.three]
    kind = "shell"
    argv = ["echo", "${steps.one.output}+${steps.two.output}"]
"""


def test_store_resume_and_runs_commands(tmp_path: Path) -> None:
    log, gate, db = tmp_path / "log.txt", tmp_path / "gate", tmp_path / "runs.db"
    path = write(tmp_path, COUNTED.replace("LOG", str(log)).replace("GATE", str(gate)))
    first = trioflow_cmd("run", path, "--store", db, "--run-id", "r1", "--json")
    assert first.returncode == 1
    assert json.loads(first.stdout)["run_id"] == "r1"
    gate.touch()
    second = trioflow_cmd("run", path, "--store", db, "--run-id", "r1", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["outputs"]["three"] == "1+2"
    assert sorted(log.read_text().split()) == ["one", "two", "two"]  # one was not run again

    listed = trioflow_cmd("runs", "list", "--store", db, "--json")
    assert listed.returncode == 0
    [info] = json.loads(listed.stdout)
    assert (info["run_id"], info["flow"], info["status"]) == ("r1", "counted", "succeeded")
    table = trioflow_cmd("runs", "list", "--store", db)
    assert table.stdout.splitlines()[0].split() == ["RUN", "ID", "FLOW", "STATUS", "UPDATED", "DURATION"]
    assert table.stdout.splitlines()[1].split()[:3] == ["r1", "counted", "succeeded"]

    shown = trioflow_cmd("runs", "show", "r1", "--store", db, "--json")
    assert shown.returncode == 0
    doc = json.loads(shown.stdout)
    assert [(s["step"], s["status"], s["attempts"]) for s in doc["steps"]] == [
        ("one", "succeeded", 1), ("two", "succeeded", 1), ("three", "succeeded", 1)]
    text = trioflow_cmd("runs", "show", "r1", "--store", db)
    assert text.stdout.startswith("run r1 of flow 'counted': succeeded")
    assert "STEP" in text.stdout
    assert "three" in text.stdout

    changed = write(tmp_path, COUNTED.replace("LOG", str(log)).replace("GATE", str(gate))
                    .replace('"echo", ', '"echo", "changed", '), "changed.toml")
    refused = trioflow_cmd("run", changed, "--store", db, "--run-id", "r1")
    assert refused.returncode == 2
    assert "run 'r1' was recorded with a different structure of flow 'counted'" in refused.stderr
    assert refused.stderr.rstrip().endswith(f"trioflow runs forget r1 --store {db}")

    forgot = trioflow_cmd("runs", "forget", "r1", "--store", db)
    assert (forgot.returncode, forgot.stdout) == (0, "forgot run r1\n")
    again = trioflow_cmd("runs", "forget", "r1", "--store", db)
    assert again.returncode == 2
    assert again.stderr == (f"trioflow: error: the store {db} has no run 'r1'; trioflow runs list "
                            f"--store {db} lists the recorded runs\n")
    assert trioflow_cmd("runs", "show", "r1", "--store", db).returncode == 2
    assert trioflow_cmd("runs", "list", "--store", tmp_path / "none.db").returncode == 2


def test_resuming_with_other_inputs_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    db = tmp_path / "runs.db"
    assert trioflow_cmd("run", path, "--store", db, "--run-id", "r", "-i", "who=a").returncode == 0
    assert trioflow_cmd("run", path, "--store", db, "--run-id", "r", "-i", "who=a").returncode == 0
    other = trioflow_cmd("run", path, "--store", db, "--run-id", "r", "-i", "who=b")
    assert other.returncode == 2
    assert "run 'r' was recorded with different inputs" in other.stderr


def test_a_generated_run_id_is_printed(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    db = tmp_path / "runs.db"
    done = trioflow_cmd("run", path, "--store", db, "--json")
    run_id = json.loads(done.stdout)["run_id"]
    assert f"trioflow: run id {run_id} (resume with --store {db} --run-id {run_id})" in done.stderr


def test_sigint_cancels_cleanly_then_resume_runs_no_recorded_step_again(tmp_path: Path) -> None:
    log, gate, db = tmp_path / "log.txt", tmp_path / "gate", tmp_path / "runs.db"
    pid_file = tmp_path / "child.pid"
    path = write(tmp_path, f"""
        [flow]
        name = "interrupted"

        [steps.fast]
        kind = "shell"
        shell = true
        command = "echo fast >> {log}; echo F"

        [steps.slow]
        kind = "shell"
        shell = true
        after = ["fast"]  # so that `fast` has surely finished when the interrupt comes
        command = "echo slow >> {log}; if [ -e {gate} ]; then echo S; else sleep 300 & echo $! > {pid_file}; wait; fi"

        [steps.join]
        kind = "shell"
        argv = ["echo", "${{steps.fast.output}}${{steps.slow.output}}"]
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "trioflow", "run", str(path), "--store", str(db), "--run-id", "r"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        for _ in range(3000):  # real time: wait until the slow step's child runs
            if pid_file.exists() and pid_file.read_text().strip():
                break
            time.sleep(0.01)
        child = int(pid_file.read_text())
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert err.splitlines()[-1] == (
        f"trioflow: interrupted: the run was cancelled; the steps that finished are recorded; "
        f"resume with: trioflow run {path} --store {db} --run-id r"
    )
    assert "Traceback" not in err
    assert _gone(child)  # the slow step's process group was killed
    shown = json.loads(trioflow_cmd("runs", "show", "r", "--store", db, "--json").stdout)
    statuses = {s["step"]: s["status"] for s in shown["steps"]}
    assert statuses == {"fast": "succeeded", "slow": "cancelled", "join": "cancelled"}

    gate.touch()
    resumed = trioflow_cmd("run", path, "--store", db, "--run-id", "r", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["outputs"]["join"] == "FS"
    assert sorted(log.read_text().split()) == ["fast", "slow", "slow"]  # fast ran once


def _gone(pid: int) -> bool:
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[1].startswith("Z"):
            return True
        time.sleep(0.01)
    return False


def test_timeline(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    db = tmp_path / "runs.db"
    assert trioflow_cmd("run", path, "--store", db, "--run-id", "t").returncode == 0
    bad = trioflow_cmd("timeline", "t", "--store", db, "-o", tmp_path / "x.png")
    assert bad.returncode == 2
    assert "must end in .html, .svg or .txt" in bad.stderr
    nowhere = trioflow_cmd("timeline", "t", "--store", db, "-o", tmp_path / "no" / "t.svg")
    assert nowhere.returncode == 2
    assert nowhere.stderr == (f"trioflow: error: -o {str(tmp_path / 'no' / 't.svg')!r}: the folder "
                              f"{str(tmp_path / 'no')!r} does not exist\n")
    unknown = trioflow_cmd("timeline", "nope", "--store", db, "-o", tmp_path / "n.svg")
    assert unknown.returncode == 2
    assert "the store has no run 'nope'" in unknown.stderr
    for suffix in ("txt", "svg", "html"):
        out = tmp_path / f"t.{suffix}"
        done = trioflow_cmd("timeline", "t", "--store", db, "-o", out)
        assert (done.returncode, done.stdout) == (0, f"wrote {out}\n"), done.stderr
        assert "greet" in out.read_text()
    assert 'data-step="repeat"' in (tmp_path / "t.svg").read_text()


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    db = tmp_path / "runs.db"
    assert trioflow_cmd("run", path, "--store", db, "--run-id", "d").returncode == 0
    plain = trioflow_cmd("run", path, "--store", db, "--run-id", "d", "-i", "who=x")
    debug = trioflow_cmd("--debug", "run", path, "--store", db, "--run-id", "d", "-i", "who=x")
    after = trioflow_cmd("run", path, "--store", db, "--run-id", "d", "-i", "who=x", "--debug")
    assert plain.returncode == debug.returncode == after.returncode == 2
    assert "Traceback (most recent call last)" in after.stderr
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert "StoreError" in debug.stderr


# -- the example flow files ---------------------------------------------------------------------

EXAMPLE_FILES = sorted((ROOT / "examples").glob("*.toml"))


def test_there_is_an_example_per_kind_a_batch_and_an_llm_pipeline() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {"shell.toml", "http.toml", "python.toml", "batch.toml", "llm_pipeline.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_flow_files_run(path: Path, tmp_path: Path) -> None:
    done = trioflow_cmd("run", path, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    outputs = doc["outputs"]
    if path.name == "shell.toml":
        assert outputs["report"] == "HELLO WORLD! (2 words)"
    elif path.name == "python.toml":
        assert outputs["words"] == 5
    elif path.name == "batch.toml":
        assert [s["word"] for s in outputs["scores"]] == [
            "nursery", "cancel", "scope", "checkpoint", "limiter", "clock", "deadline", "channel"]
        assert outputs["best"] == max(outputs["scores"], key=lambda s: s["score"])["word"]
    elif path.name == "http.toml":
        assert outputs["ask"]["text"].startswith("(model) Explain cancellation in trio")
    elif path.name == "llm_pipeline.toml":
        assert outputs["outline"]["sections"] == [
            "Why it matters", "The basic idea", "A worked example", "Pitfalls", "Testing it"]
        assert len(outputs["drafts"]) == 5
        assert outputs["report"].startswith("A short guide to structured concurrency\n")
        assert "retry" in done.stderr  # the fake server's first outline answer is a 503


# -- the docs page's examples -------------------------------------------------------------------


def doc_blocks(kind: str) -> list[str]:
    import re

    text = (ROOT / "docs" / "flowfiles.rst").read_text()
    return [textwrap.dedent(b) for b in re.findall(rf"\.\. code-block:: {kind}\n\n((?:   .*\n|\n)+)", text)]


def test_the_docs_first_flow_runs_as_shown(tmp_path: Path) -> None:
    hello, batch = doc_blocks("toml")
    write(tmp_path, hello, "hello.toml")
    [console] = doc_blocks("console")
    command, *shown = console.strip().splitlines()
    assert command == "$ trioflow run hello.toml -i who=trio"
    done = trioflow_cmd(*command.split()[2:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = done.stdout.splitlines()
    assert got[0].startswith("flow 'hello' succeeded in ")
    assert got[1:] == shown[1:]
    (tmp_path / "mytools.py").write_text("def sizes(pages):\n    return [len(p) for p in pages]\n")
    checked = trioflow_cmd("validate", write(tmp_path, batch, "batch.toml"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_the_readme_flow_file_runs_and_resumes(tmp_path: Path) -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    [toml] = re.findall(r"^```toml\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    [console] = re.findall(r"^```console\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    write(tmp_path, toml, "flow.toml")
    results = []
    for line in console.strip().splitlines():
        args = line.split("#")[0].split()[2:]
        results.append(trioflow_cmd(*args, cwd=tmp_path))
        assert results[-1].returncode == 0, (line, results[-1].stderr)
    doc = json.loads(results[3].stdout)
    assert doc["outputs"]["greet"] == "hello you"
    assert doc["outputs"]["each"] == ["a", "b", "c"]
    assert "succeeded" in results[4].stdout


def test_with_json_what_python_steps_print_goes_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "noisy.py").write_text("def talk():\n    print('chatter')\n    return 1\n")
    path = write(tmp_path, """
        [flow]
        allow = ["noisy"]
        [steps.talk]
        kind = "python"
        function = "noisy:talk"
    """)
    done = trioflow_cmd("run", path, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"talk": 1}
    assert "chatter" in done.stderr


def test_a_store_path_that_cannot_be_a_database_exits_2_before_anything_runs(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    folder = trioflow_cmd("run", path, "--store", tmp_path)
    assert folder.returncode == 2
    assert folder.stderr == (
        f"trioflow: error: --store {str(tmp_path)!r} is a folder; give the path of a database "
        f"file, such as {str(tmp_path / 'runs.db')!r}\n"
    )
    missing = trioflow_cmd("run", path, "--store", tmp_path / "nowhere" / "runs.db")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"trioflow: error: --store {str(tmp_path / 'nowhere' / 'runs.db')!r}: the folder "
        f"{str(tmp_path / 'nowhere')!r} does not exist; create it first, or give another path\n"
    )


def test_without_httpx_the_http_kind_says_how_to_install_it(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.get]
        kind = "http"
        url = "http://127.0.0.1:9/"
    """)
    code = ("import sys; sys.modules['httpx'] = None\n"  # as if httpx were not installed
            "from trioflow._cli import main\n"
            f"main(['validate', {str(path)!r}])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"trioflow: error: {path}:2: steps.get.kind: the 'http' kind needs httpx, which is not "
        f"installed; install it with pip install 'trioflow[http]'\n"
    )


def test_a_continue_batch_reports_failed_items_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.each]
        kind = "shell"
        shell = true
        command = "test ${item} != 2 || { echo no two >&2; exit 7; }; echo ${item}"
        batch = { items = [1, 2, 3], error_handling = "continue" }
    """)
    done = trioflow_cmd("run", path, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"each": ["1", None, "3"]}
    assert (
        "trioflow: step 'each': item 1 failed after 1 attempt, so its output is null (batch "
        "error_handling = continue): CommandError: command ['/bin/sh', '-c', 'test 2 != 2 || "
        "{ echo no two >&2; exit 7; }; echo 2'] exited with code 7: no two\n"
    ) in done.stderr
