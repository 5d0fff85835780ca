"""Flow files (issue 15): the format, templates, validation messages, and the step kinds."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

from trioflow import FlowError, StepStatus
from trioflow._flowfile import FlowFile, FlowFileError, load_flow_file
from trioflow._stepkinds import CommandError

HERE = Path(__file__).parent


def write(tmp_path: Path, text: str, name: str = "flow.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(FlowFileError) as info:
        load_flow_file(path, **kwargs)
    return [p.replace(str(path), "FILE") for p in info.value.problems]


async def run(ff: FlowFile, inputs: dict[str, Any] | None = None, **options: Any) -> Any:
    return await ff.run(ff.run_inputs(inputs or {}), **options)


# -- loading and running ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_shell_steps_templates_and_data_dependencies(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [flow]
        name = "demo"

        [inputs]
        topic = { default = "cats" }

        [steps.hello]
        kind = "shell"
        argv = ["echo", "hello ${inputs.topic}"]

        [steps.upper]
        kind = "shell"
        shell = true
        command = "printf '%s\\n\\n' '${steps.hello.output}' | tr a-z A-Z"

        [steps.count]
        kind = "shell"
        argv = ["wc", "-c"]
        stdin = "${steps.hello.output}"
    """)
    ff = load_flow_file(path)
    assert ff.flow.name == "demo"
    assert ff.flow.steps == ("hello", "upper", "count")
    result = await run(ff, {"topic": "dogs"})
    # stdout as text without its one trailing newline
    assert result["hello"] == "hello dogs"
    assert result["upper"] == "HELLO DOGS\n"
    assert result["count"].strip() == "10"
    assert (await run(ff))["hello"] == "hello cats"


@pytest.mark.anyio
async def test_whole_templates_keep_their_type_and_reach_into_outputs(tmp_path: Path) -> None:
    (tmp_path / "helpers_a.py").write_text(textwrap.dedent("""
        import anyio

        def data(n):
            return {"rows": [{"id": i, "name": f"row{i}"} for i in range(n)], "n": n}

        async def echo(**kwargs):
            await anyio.sleep(0)
            return kwargs
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_a"]

        [inputs]
        n = { default = 3 }

        [steps.data]
        kind = "python"
        function = "helpers_a:data"
        args = { n = "${inputs.n}" }

        [steps.pick]
        kind = "python"
        function = "helpers_a:echo"
        args = { whole = "${steps.data.output}", row = "${steps.data.output.rows[1]}", name = "${steps.data.output.rows[-1].name}", text = "n=${steps.data.output.n}!", quoted = "${steps.data.output['n']}", literal = "$${not.a.template} $5" }
    """)
    ff = load_flow_file(path)
    result = await run(ff, {"n": 4})
    out = result["pick"]
    assert out["whole"]["n"] == 4
    assert out["row"] == {"id": 1, "name": "row1"}
    assert out["name"] == "row3"
    assert out["text"] == "n=4!"
    assert out["quoted"] == 4
    assert out["literal"] == "${not.a.template} $5"


@pytest.mark.anyio
async def test_python_sync_functions_run_in_a_thread_async_on_the_loop(tmp_path: Path) -> None:
    (tmp_path / "helpers_b.py").write_text(textwrap.dedent("""
        import threading

        def where():
            return threading.current_thread() is threading.main_thread()

        async def where_async():
            return threading.current_thread() is threading.main_thread()
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_b"]
        [steps.sync]
        kind = "python"
        function = "helpers_b:where"
        [steps.async]
        kind = "python"
        function = "helpers_b:where_async"
    """)
    result = await run(load_flow_file(path))
    assert result["sync"] is False
    assert result["async"] is True


@pytest.mark.anyio
async def test_a_failing_command_names_its_exit_code_and_the_end_of_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.bad]
        kind = "shell"
        shell = true
        command = "echo first >&2; echo oops >&2; exit 3"
    """)
    with pytest.raises(FlowError) as info:
        await run(load_flow_file(path))
    error = info.value.exceptions[0]
    assert isinstance(error, CommandError)
    assert error.returncode == 3
    assert str(error) == "command ['/bin/sh', '-c', 'echo first >&2; echo oops >&2; exit 3'] exited with code 3: first\noops"


@pytest.mark.anyio
async def test_env_adds_to_the_environment_and_cwd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(tmp_path, """
        [inputs]
        greeting = { default = "hi" }
        [steps.env]
        kind = "shell"
        shell = true
        command = "echo $GREETING-$HOME_SET-$(basename $(pwd))"
        env = { GREETING = "${inputs.greeting}", HOME_SET = 1 }
        cwd = "SUB"
    """.replace("SUB", str(tmp_path / "sub")))
    result = await run(load_flow_file(path))
    assert result["env"] == "hi-1-sub"
    assert os.environ.get("GREETING") is None


@pytest.mark.anyio
async def test_cancelling_a_shell_step_kills_its_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    path = write(tmp_path, f"""
        [steps.long]
        kind = "shell"
        shell = true
        command = "sleep 300 & echo $! > {pid_file}; wait"
    """)
    ff = load_flow_file(path)

    def wait_for_pid() -> int:
        for _ in range(2000):  # real time: the child process starts outside the test's clock
            if pid_file.exists() and pid_file.read_text().strip():
                return int(pid_file.read_text())
            time.sleep(0.01)
        raise AssertionError("the command never started")

    async with anyio.create_task_group() as tg:
        async def run_it() -> None:
            await run(ff)

        tg.start_soon(run_it)
        pid = await anyio.to_thread.run_sync(wait_for_pid)
        assert _alive(pid)
        tg.cancel_scope.cancel()
    assert gone(pid)  # the background child went with its group


def gone(pid: int) -> bool:
    """Whether ``pid`` ends within a few seconds (a SIGKILL takes effect asynchronously)."""
    for _ in range(500):
        if not _alive(pid):
            return True
        time.sleep(0.01)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of an ended shell may be a zombie until init reaps it
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


@pytest.mark.anyio
async def test_batch_maps_the_step_over_items_in_item_order(tmp_path: Path) -> None:
    (tmp_path / "helpers_c.py").write_text(textwrap.dedent("""
        import anyio

        async def slow_upper(word, delay):
            await anyio.sleep(delay)
            return word.upper()
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_c"]
        [inputs]
        words = { default = [["a", 3], ["b", 1], ["c", 2]] }
        [steps.up]
        kind = "python"
        function = "helpers_c:slow_upper"
        args = { word = "${w[0]}", delay = "${w[1]}" }
        batch = { items = "${inputs.words}", as = "w", max_concurrent = 3 }
        [steps.echo]
        kind = "shell"
        argv = ["echo", "${item}"]
        batch = { items = "${steps.up.output}", parallel = false }
    """)
    result = await run(load_flow_file(path))
    assert result["up"] == ["A", "B", "C"]
    assert result["echo"] == ["A", "B", "C"]


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_batch_limits_retries_and_waits_in_virtual_time(tmp_path: Path) -> None:
    (tmp_path / "helpers_d.py").write_text(textwrap.dedent("""
        import trio

        attempts = {}

        async def work(i):
            attempts[i] = attempts.get(i, 0) + 1
            await trio.sleep(1)
            if i == 2 and attempts[i] < 3:
                raise ConnectionError("flaky")
            return i * 10
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_d"]
        [steps.work]
        kind = "python"
        function = "helpers_d:work"
        args = { i = "${item}" }
        batch = { items = [0, 1, 2, 3], max_concurrent = 2, max_retries = 3, retry_wait = 0.5 }
    """)
    ff = load_flow_file(path)
    start = trio.current_time()
    result = await run(ff)
    assert result["work"] == [0, 10, 20, 30]
    # items 0,1 in [0,1]; 2 and 3 start at 1; 2 fails at 2, waits 0.5, fails at 3.5,
    # waits 0.5, succeeds at 5
    assert trio.current_time() - start == 5
    assert sys.modules["helpers_d"].attempts == {0: 1, 1: 1, 2: 3, 3: 1}


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_batch_error_handling_continue_gives_null_for_failed_items(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "helpers_e.py").write_text(textwrap.dedent("""
        import trio

        seen = []

        async def work(i):
            await trio.sleep(i)
            seen.append(i)
            if i == 1:
                raise ValueError(f"bad item {i}")
            return i
    """))
    body = """
        [flow]
        allow = ["helpers_e"]
        [steps.work]
        kind = "python"
        function = "helpers_e:work"
        args = { i = "${item}" }
        batch = { items = [0, 1, 2, 3], max_retries = 2, retry_wait = 1, error_handling = "EH" }
        [steps.after_work]
        kind = "shell"
        argv = ["echo", "${steps.work.output}"]
    """
    # the batch node's continue: every item is tried, a failed one's output is null
    ff = load_flow_file(write(tmp_path, body.replace("EH", "continue")))
    start = trio.current_time()
    with caplog.at_level("WARNING", logger="trioflow.flowfile"):
        result = await run(ff)
    assert result["work"] == [0, None, 2, 3]
    assert result["after_work"] == "[0, None, 2, 3]"
    seen = sys.modules["helpers_e"].seen
    assert sorted(seen) == [0, 1, 1, 2, 3]  # item 1 had its two attempts
    assert trio.current_time() - start == 3  # item 1: 1 s, wait 1 s, 1 s; item 3: 3 s
    assert [r.getMessage() for r in caplog.records] == [
        "step 'work': item 1 failed after 2 attempts, so its output is null "
        "(batch error_handling = continue): ValueError: bad item 1"
    ]
    seen.clear()
    fail_fast = body.replace("EH", "fail_fast").replace("max_retries = 2", "max_retries = 1")
    ff = load_flow_file(write(tmp_path, fail_fast, "ff.toml"))
    with pytest.raises(FlowError) as info:
        await run(ff)
    assert sorted(seen) == [0, 1]  # items 2 and 3 were cancelled mid-sleep
    assert info.value.result.failed == ["work"]
    assert info.value.result.steps["after_work"].status is StepStatus.CANCELLED


@pytest.mark.anyio
async def test_after_orders_without_passing_data(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    path = write(tmp_path, f"""
        [steps.second]
        kind = "shell"
        shell = true
        command = "echo second >> {log}"
        after = "first"
        [steps.first]
        kind = "shell"
        shell = true
        command = "echo first >> {log}"
    """)
    await run(load_flow_file(path))
    assert log.read_text().split() == ["first", "second"]


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_limiters_timeout_and_retry(tmp_path: Path) -> None:
    (tmp_path / "helpers_f.py").write_text(textwrap.dedent("""
        import trio

        calls = []

        async def sleep(s):
            calls.append(s)
            await trio.sleep(s)
            return s
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_f"]
        error_handling = "continue"
        [limiters]
        one = 1
        [steps.a]
        kind = "python"
        function = "helpers_f:sleep"
        args = { s = 2 }
        limiter = "one"
        [steps.b]
        kind = "python"
        function = "helpers_f:sleep"
        args = { s = 2 }
        limiter = ["one"]
        [steps.c]
        kind = "python"
        function = "helpers_f:sleep"
        args = { s = 10 }
        timeout = 1
        retry = { max_attempts = 2, wait = 3 }
    """)
    ff = load_flow_file(path)
    with pytest.raises(FlowError) as info:
        await run(ff)
    result = info.value.result
    assert result.steps["b"].finished_at - result.started_at == 4  # waited for a
    assert isinstance(info.value.exceptions[0], TimeoutError)
    assert result.steps["c"].attempts == 2
    assert result.steps["c"].finished_at - result.started_at == 5  # 1 + 3 + 1


@pytest.mark.anyio
async def test_json_flow_files_work_the_same(tmp_path: Path) -> None:
    doc = {
        "flow": {"name": "j"},
        "inputs": {"who": {}},
        "steps": {"hi": {"kind": "shell", "argv": ["echo", "hi ${inputs.who}"]}},
    }
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(doc, indent=2))
    ff = load_flow_file(path)
    assert (await run(ff, {"who": "you"}))["hi"] == "hi you"


def test_step_names_with_dashes(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.fetch-page]
        kind = "shell"
        argv = ["echo", "x"]
        [steps.use-it]
        kind = "shell"
        argv = ["echo", "${steps.fetch-page.output}"]
    """)
    result = trio.run(run, load_flow_file(path))
    assert result["use-it"] == "x"
    assert result.steps["use-it"].status is StepStatus.SUCCEEDED


def test_inputs_declared_required_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [inputs]
        a = {}
        b = { default = 2 }
        unused = { default = 0 }
        [steps.s]
        kind = "shell"
        argv = ["echo", "${inputs.a}", "${inputs.b}"]
    """)
    ff = load_flow_file(path)
    assert ff.run_inputs({"a": 1}) == {"a": 1, "b": 2}
    with pytest.raises(FlowFileError) as info:
        ff.run_inputs({"bb": 3})
    assert info.value.problems == [
        f"{path}: input 'bb' is not declared in [inputs] (declared: a, b, unused); did you mean 'b'?",
        f"{path}: input 'a' is required (it has no default); pass it with -i a=VALUE",
    ]


# -- validation messages -----------------------------------------------------------------------


def test_unknown_kinds_and_keys_with_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [flow]
        name = "x"
        max_concurent = 3

        [steps.fetch]
        kind = "htp"
        url = "http://x"

        [steps.run]
        kind = "shell"
        argvs = ["ls"]
        argv = ["ls"]
        retry = { max_attempts = 3, wiat = 1 }
    """)
    assert problems(path) == [
        "FILE:3: flow.max_concurent: unknown key (set to 3); did you mean 'max_concurrent'?",
        "FILE:6: steps.fetch.kind: must be one of 'shell', 'http', 'python' (got 'htp'); did you mean 'http'?",
        "FILE:11: steps.run.argvs: unknown key (set to ['ls']); did you mean 'argv'?",
        "FILE:13: steps.run.retry.wiat: unknown key (set to 1); did you mean 'wait'?",
    ]


def test_templates_naming_no_step_or_input(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [inputs]
        topic = {}

        [steps.fetch]
        kind = "shell"
        argv = ["echo", "${inputs.topik}"]

        [steps.parse]
        kind = "shell"
        argv = ["echo", "${steps.fetc.output}", "${steps.nothing_like_it.output}"]
        stdin = "${item}"

        [steps.bad]
        kind = "shell"
        argv = ["echo", "${steps.fetch}", "${oops"]

        [steps.each]
        kind = "shell"
        argv = ["echo", "${doc}", "${HOME}", "$${HOME}"]
        batch = { items = [1], as = "doc" }
        stdin = "${dc}"
    """)
    assert problems(path) == [
        "FILE:6: steps.fetch.argv: ${inputs.topik} names no input; did you mean 'topic'?",
        "FILE:10: steps.parse.argv: ${steps.fetc.output} names no step; did you mean 'fetch'?",
        "FILE:10: steps.parse.argv: ${steps.nothing_like_it.output} names no step (steps: fetch, parse, bad, each)",
        "FILE:11: steps.parse.stdin: ${item} names nothing here: a batch item exists only in a "
        "step with batch = { items = ... }; use ${inputs.NAME} or ${steps.NAME.output}; write $${ "
        "for a literal ${ (as in a shell variable)",
        "FILE:15: steps.bad.argv.1: template ${steps.fetch} in '${steps.fetch}' must read the step's "
        "output: ${steps.fetch.output}",
        "FILE:15: steps.bad.argv.2: '${oops' has a '${' with no closing '}'; write $${ for a literal ${",
        "FILE:19: steps.each.argv: ${HOME} names nothing: this batch's items are ${doc}; write $${ "
        "for a literal ${ (as in a shell variable)",
        "FILE:21: steps.each.stdin: ${dc} names nothing: this batch's items are ${doc}; did you mean 'doc'?",
    ]


def test_cycles_show_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.a]
        kind = "shell"
        argv = ["echo", "${steps.c.output}"]
        [steps.b]
        kind = "shell"
        argv = ["echo", "${steps.a.output}"]
        [steps.c]
        kind = "shell"
        argv = ["echo"]
        after = ["b"]
    """)
    assert problems(path) == [
        "FILE:1: steps.a: cycle: a -> b -> c -> a; remove one of these dependencies (a template or an after)",
    ]


def test_out_of_range_batch_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps.s]
        kind = "shell"
        argv = ["echo", "${item}"]
        batch = { items = [1], max_concurrent = 101, max_retries = 0, retry_wait = -1, error_handling = "stop", parallel = "yes" }
        [steps.t]
        kind = "shell"
        argv = ["echo"]
        batch = { items = "not a template" }
    """)
    assert problems(path) == [
        "FILE:4: steps.s.batch.parallel: must be true or false (got 'yes')",
        "FILE:4: steps.s.batch.max_concurrent: must be a whole number from 1 to 100 (got 101)",
        "FILE:4: steps.s.batch.max_retries: must be a whole number from 1 to 10 (got 0); it counts "
        "attempts: 1 tries each item once",
        "FILE:4: steps.s.batch.retry_wait: must be a number >= 0 (got -1)",
        "FILE:4: steps.s.batch.error_handling: must be one of 'fail_fast', 'continue' (got 'stop')",
        "FILE:8: steps.t.batch.items: must be one template, as in items = \"${steps.NAME.output}\", "
        "or a list (got 'not a template')",
    ]


def test_disallowed_and_missing_modules(tmp_path: Path) -> None:
    (tmp_path / "mypkg.py").write_text("def f():\n    return 1\n")
    (tmp_path / "mypkgevil.py").write_text("def f():\n    return 2\n")
    path = write(tmp_path, """
        [flow]
        allow = ["mypkg"]
        [steps.ok]
        kind = "python"
        function = "mypkg:f"
        [steps.evil]
        kind = "python"
        function = "mypkgevil:f"
        [steps.os]
        kind = "python"
        function = "os:system"
        [steps.typo]
        kind = "python"
        function = "mypkg:g"
        [steps.form]
        kind = "python"
        function = "mypkg.f"
    """)
    assert problems(path) == [
        "FILE:8: steps.evil.function: module 'mypkgevil' is not allowed; add 'mypkgevil' to allow in "
        "[flow] (allow = [\"mypkgevil\"]) or pass --allow-module mypkgevil",
        "FILE:11: steps.os.function: module 'os' is not allowed; add 'os' to allow in [flow] "
        "(allow = [\"os\"]) or pass --allow-module os",
        "FILE:14: steps.typo.function: module 'mypkg' has no 'g'",
        "FILE:17: steps.form.function: needs function = \"module:attr\", as in function = "
        "\"mypkg.tools:summarize\" (got 'mypkg.f')",
    ]
    assert "evil" not in str(problems(path, allow_modules=["mypkgevil", "os"]))


def test_submodules_of_an_allowed_prefix(tmp_path: Path) -> None:
    pkg = tmp_path / "toolbox"
    (pkg / "inner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "inner" / "__init__.py").write_text("async def f():\n    return 'deep'\n")
    path = write(tmp_path, """
        [steps.deep]
        kind = "python"
        function = "toolbox.inner:f"
    """)
    assert (trio.run(run, load_flow_file(path, allow_modules=["toolbox"])))["deep"] == "deep"


def test_shell_http_and_common_field_errors(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [limiters]
        llm = 2
        api = 0

        [steps.a]
        kind = "shell"
        command = "ls"
        timeout = 0
        limiter = "lm"
        after = ["zz"]

        [steps.b]
        kind = "shell"
        shell = true
        argv = ["ls"]

        [steps.c]
        kind = "http"
        method = "FETCH"
        json = { a = 1 }
        body = "x"

        [steps.d]
        kind = "python"
        function = 3
    """)
    assert problems(path) == [
        "FILE:3: limiters.api: must be a whole number >= 1 (got 0); or a rate limit: api = "
        "{ calls = 100, per = 60 }",
        "FILE:5: steps.a: needs argv, a non-empty list of strings, as in argv = [\"echo\", \"hi\"] (got None)",
        "FILE:7: steps.a.command: a command string runs only with shell = true; add it, or give "
        "argv = [\"prog\", \"arg\"] instead",
        "FILE:8: steps.a.timeout: must be a number > 0 (got 0)",
        "FILE:9: steps.a.limiter: names no limiter: 'lm'; did you mean 'llm'? (declared: llm)",
        "FILE:10: steps.a.after: names no step: 'zz'",
        "FILE:12: steps.b.command: shell = true needs a command string, as in command = \"ls | wc -l\" "
        "(got None)",
        "FILE:15: steps.b.argv: give either argv (no shell) or shell = true with a command string, not both",
        "FILE:17: steps.c: needs url, a string, as in url = \"https://example.com/api\" (got None)",
        "FILE:19: steps.c.method: must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS (got 'FETCH')",
        "FILE:21: steps.c.body: give json (sent as JSON) or body (sent as text), not both",
        "FILE:25: steps.d.function: needs function = \"module:attr\", as in function = "
        "\"mypkg.tools:summarize\" (got 3)",
    ]


def test_file_level_errors(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.toml") == [
        "FILE: no such file; give the path of a .toml or .json flow file"
    ]
    bad = write(tmp_path, "[steps.a]\nkind = \n", "bad.toml")
    assert problems(bad) == ["FILE:2: not valid TOML: Invalid value (at line 2, column 8)"]
    js = tmp_path / "bad.json"
    js.write_text('{"steps": {\n  "a": }\n}')
    assert problems(js) == ["FILE:2: not valid JSON: Expecting value (line 2, column 8)"]
    other = write(tmp_path, "x", "flow.yaml")
    assert problems(other) == ["FILE: unknown file type '.yaml'; name a flow file *.toml or *.json"]
    empty = write(tmp_path, "[flow]\nname = 'e'\n", "empty.toml")
    assert problems(empty) == [
        "FILE: steps: the file has no steps; add one, as in [steps.hello] kind = \"shell\" "
        "argv = [\"echo\", \"hello\"]"
    ]
    clash = write(tmp_path, """
        [inputs]
        x = 3
        s = {}
        [steps.s]
        kind = "shell"
        argv = ["echo"]
    """, "clash.toml")
    assert problems(clash) == [
        "FILE:2: inputs.x: must be a table: x = { default = 3 } for an optional input, x = {} "
        "for a required one (got 3)",
        "FILE:4: steps.s: a step and an input are both named 's'; rename one of them",
    ]


def test_json_files_name_the_line_of_the_key(tmp_path: Path) -> None:
    doc = {"steps": {"fetch": {"kind": "shell", "argv": ["ls"], "retry": {"max_attempts": 0}}}}
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(doc, indent=2))
    assert problems(path) == [
        "FILE:9: steps.fetch.retry.max_attempts: must be a whole number >= 1 (got 0)",
    ]


def test_rate_limits_need_calls_and_per(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [limiters]
        api = { calls = 10 }
        web = { calls = 0, per = -1 }
        [steps.a]
        kind = "shell"
        argv = ["echo"]
    """)
    assert problems(path)[:3] == [
        "FILE:2: limiters.api: a rate limit needs calls and per, as in api = { calls = 100, per = 60 } "
        "(got {'calls': 10})",
        "FILE:3: limiters.web.calls: must be a number > 0 (got 0)",
        "FILE:3: limiters.web.per: must be a number > 0 (got -1)",
    ]


def test_a_changed_step_changes_the_flow_structure(tmp_path: Path) -> None:
    text = """
        [flow]
        name = "same-name"
        [steps.a]
        kind = "shell"
        argv = ["echo", "ARG"]
    """
    one = load_flow_file(write(tmp_path, text.replace("ARG", "1"), "one.toml"))
    two = load_flow_file(write(tmp_path, text.replace("ARG", "2"), "two.toml"))
    same = load_flow_file(write(tmp_path, text.replace("ARG", "1"), "same.toml"))
    assert one.flow.plan().fingerprint == same.flow.plan().fingerprint
    assert one.flow.plan().fingerprint != two.flow.plan().fingerprint


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_each_batch_item_holds_the_steps_limiters(tmp_path: Path) -> None:
    (tmp_path / "helpers_g.py").write_text(textwrap.dedent("""
        import trio

        now = 0
        peak = 0

        async def call(i):
            global now, peak
            now += 1
            peak = max(peak, now)
            await trio.sleep(1)
            now -= 1
            return i
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_g"]
        [limiters]
        llm = 2
        [steps.many]
        kind = "python"
        function = "helpers_g:call"
        args = { i = "${item}" }
        limiter = "llm"
        batch = { items = [0, 1, 2, 3, 4], max_concurrent = 10 }
        [steps.single]
        kind = "python"
        function = "helpers_g:call"
        args = { i = 9 }
        limiter = "llm"
    """)
    ff = load_flow_file(path)
    start = trio.current_time()
    result = await run(ff)
    assert result["many"] == [0, 1, 2, 3, 4]
    assert sys.modules["helpers_g"].peak == 2
    # six one-second calls, two at a time: three seconds
    assert trio.current_time() - start == 3
    with pytest.raises(FlowError) as info:
        await ff.flow.run(limiters={"llm": 2})  # not through FlowFile.run: no limiters to hold
    assert "runs only through FlowFile.run()" in str(info.value.exceptions[0])


@pytest.mark.anyio
async def test_batch_item_limits_hold_on_both_backends(tmp_path: Path) -> None:
    (tmp_path / "helpers_h.py").write_text(textwrap.dedent("""
        import anyio

        now = 0
        peak = 0

        async def call(i):
            global now, peak
            now += 1
            peak = max(peak, now)
            await anyio.sleep(0.01)
            now -= 1
            return i * i
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_h"]
        [limiters]
        llm = 2
        [steps.many]
        kind = "python"
        function = "helpers_h:call"
        args = { i = "${item}" }
        limiter = "llm"
        batch = { items = [0, 1, 2, 3, 4, 5, 6], max_concurrent = 10 }
    """)
    module = sys.modules.pop("helpers_h", None)
    del module
    result = await run(load_flow_file(path))
    assert result["many"] == [0, 1, 4, 9, 16, 25, 36]
    assert sys.modules["helpers_h"].peak == 2


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_rate_limits_in_flow_files(tmp_path: Path) -> None:
    # issue 13's rule: RateLimit(calls=2, per=1.0) lets six ready starts go at 0, 0,
    # 0.5, 1.0, 1.5, 2.0; here a plain step and a batch's items share the bucket
    (tmp_path / "helpers_i.py").write_text(textwrap.dedent("""
        import trio

        async def stamp(i):
            return trio.current_time()
    """))
    path = write(tmp_path, """
        [flow]
        allow = ["helpers_i"]
        [limiters]
        api = { calls = 2, per = 1 }
        [steps.many]
        kind = "python"
        function = "helpers_i:stamp"
        args = { i = "${item}" }
        limiter = "api"
        batch = { items = [0, 1, 2, 3, 4] }
        [steps.single]
        kind = "python"
        function = "helpers_i:stamp"
        args = { i = 9 }
        limiter = "api"
    """)
    ff = load_flow_file(path)
    start = trio.current_time()
    result = await run(ff)
    starts = sorted([t - start for t in result["many"]] + [result["single"] - start])
    assert starts == [0, 0, 0.5, 1.0, 1.5, 2.0]


def test_a_batch_step_may_use_one_rate_limit(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [limiters]
        a = { calls = 1, per = 1 }
        b = { calls = 5, per = 60, burst = 2 }
        c = 3
        [steps.s]
        kind = "shell"
        argv = ["echo", "${item}"]
        limiter = ["a", "b", "c"]
        batch = { items = [1] }
    """)
    assert problems(path) == [
        "FILE:8: steps.s.limiter: a batch step can use one rate limit, not 2 (a, b); keep one of them",
    ]


def test_inputs_bound_with_bind_are_shown_by_their_own_name() -> None:
    # flow files wire steps with bind=; describe() and the diagrams named a bound
    # input by the parameter (v0) instead of the input
    from trioflow import Flow

    flow = Flow("bound")

    async def shout(v0: str) -> str:
        return v0.upper()

    flow.add(shout, bind={"v0": "my-topic"})
    assert "(no dependencies; inputs: my-topic)" in flow.describe()
    assert '[/"my-topic"/]' in flow.to_mermaid()
    assert 'label="my-topic"' in flow.to_dot()
    assert "v0" not in flow.to_mermaid() + flow.to_dot()
    assert trio.run(flow.run, {"my-topic": "hi"})["shout"] == "HI"


@pytest.mark.trio_only
@pytest.mark.anyio
async def test_max_concurrent_from_the_file_and_its_override(tmp_path: Path) -> None:
    (tmp_path / "helpers_j.py").write_text(textwrap.dedent("""
        import trio

        async def nap():
            await trio.sleep(1)
    """))
    steps = "".join(f'[steps.s{i}]\nkind = "python"\nfunction = "helpers_j:nap"\n' for i in range(4))
    ff = load_flow_file(write(tmp_path, f'[flow]\nallow = ["helpers_j"]\nmax_concurrent = 2\n{steps}'))
    assert ff.max_concurrent == 2
    assert (await run(ff)).duration == 2  # four one-second steps, two at a time
    assert (await run(ff, max_concurrent=1)).duration == 4  # --max-concurrent 1
    assert (await run(ff, max_concurrent=4)).duration == 1


def test_lines_of_inline_tables_and_dotted_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [steps]
        a = { kind = "shel", argv = ["x"] }
        b = { kind = "shell", argv = ["echo"], retry = { max_attempts = 0 } }

        [steps.c]
        kind = "shell"
        argv = ["echo"]
        retry.wait = -1
    """)
    assert problems(path) == [
        "FILE:2: steps.a.kind: must be one of 'shell', 'http', 'python' (got 'shel'); did you mean 'shell'?",
        "FILE:3: steps.b.retry.max_attempts: must be a whole number >= 1 (got 0)",
        "FILE:8: steps.c.retry.wait: must be a number >= 0 (got -1)",
    ]
