"""Flow files: a flow described in TOML or JSON, checked, then built with :class:`Flow`.

:func:`load_flow_file` reads a file, checks all of it before anything runs
(each problem names the file, the line where one can be found, the key path
and the value, and says what to do), and builds a :class:`Flow` through its
public API (``Flow.add``). Each step's fields become a template tree
(``_templates``); the templates give the data dependencies, ``after`` the
order-only ones. What a step does lives in ``_stepkinds``.

The file format is documented in ``docs/flowfiles.rst``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from ._exceptions import GraphError
from ._filelines import Problems
from ._flow import Flow
from ._flowstep import RUN_LIMITERS, Batch, StepDef
from ._graph import did_you_mean
from ._limits import RateLimit
from ._results import RunResult
from ._retry import Retry
from ._stepkinds import load_httpx
from ._templates import Ref, Template, TemplateError, parse, refs

__all__ = ["FlowFile", "FlowFileError", "load_flow_file"]


class FlowFileError(GraphError):
    """A flow file that cannot be run; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


_TOP = ("flow", "inputs", "limiters", "steps")
_FLOW_KEYS = ("name", "description", "max_concurrent", "error_handling", "allow")
_INPUT_KEYS = ("default", "description")
_RATE_KEYS = ("calls", "per", "burst")
_COMMON = ("kind", "description", "after", "limiter", "timeout", "retry", "batch")
_KINDS: dict[str, tuple[str, ...]] = {
    "shell": ("argv", "shell", "command", "stdin", "cwd", "env"),
    "http": ("method", "url", "headers", "json", "body"),
    "python": ("function", "args"),
}
_RETRY_KEYS = ("max_attempts", "wait", "backoff", "max_wait", "jitter")
_BATCH_KEYS = ("items", "as", "parallel", "max_concurrent", "max_retries", "retry_wait", "error_handling")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_ERROR_HANDLING = ("fail_fast", "continue")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the model -------------------------------------------------------------------------------


@attrs.frozen
class _Input:
    required: bool
    default: Any = None


@attrs.frozen
class FlowFile:
    """A checked flow file: the :class:`Flow` and how to run it."""

    path: str
    flow: Flow
    inputs: Mapping[str, _Input]
    used_inputs: frozenset[str]
    limiters: Mapping[str, Any]
    max_concurrent: int | None
    error_handling: str
    description: str = ""
    step_limiters: frozenset[str] = frozenset()  # the limiters that steps hold as a whole

    def run_limiters(self) -> dict[str, Any]:
        """Fresh limiter objects for one run (a rate limit object is shared by the runs)."""
        return {
            name: anyio.CapacityLimiter(value) if isinstance(value, int) else value
            for name, value in self.limiters.items()
        }

    async def run(
        self,
        inputs: Mapping[str, Any],
        *,
        max_concurrent: int | None = None,
        on_event: Callable[[Any], object] | None = None,
        store: Any = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run the flow with the file's options; ``inputs`` come from :meth:`run_inputs`.

        A batch step's limiters are held by each of its items, not by the step.
        """
        limiters = self.run_limiters()
        token = RUN_LIMITERS.set(limiters)
        try:
            return await self.flow.run(
                inputs,
                max_concurrent=max_concurrent if max_concurrent is not None else self.max_concurrent,
                limiters={n: v for n, v in limiters.items() if n in self.step_limiters},
                error_handling=self.error_handling,  # type: ignore[arg-type]
                on_event=on_event,
                store=store,
                run_id=run_id,
            )
        finally:
            RUN_LIMITERS.reset(token)

    def run_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs to run with: ``given`` (from ``-i``) plus defaults.

        Raises:
            FlowFileError: an input the file does not declare, or a required one missing.
        """
        problems = []
        for name in given:
            if name not in self.inputs:
                known = ", ".join(self.inputs) or "none"
                problems.append(
                    f"{self.path}: input {name!r} is not declared in [inputs] (declared: {known})"
                    f"{did_you_mean(name, self.inputs)}"
                )
        for name, spec in self.inputs.items():
            if spec.required and name not in given:
                problems.append(
                    f"{self.path}: input {name!r} is required (it has no default); "
                    f"pass it with -i {name}=VALUE"
                )
        if problems:
            raise FlowFileError(problems)
        values = {name: spec.default for name, spec in self.inputs.items() if not spec.required}
        values.update(given)
        return {name: values[name] for name in self.inputs if name in self.used_inputs}


# -- loading ---------------------------------------------------------------------------------


def _read(path: Path, shown: str) -> tuple[Mapping[str, Any], str, bool]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlowFileError([f"{shown}: no such file; give the path of a .toml or .json flow file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowFileError([f"{shown}: cannot read the file: {exc}"]) from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
            where = f"{shown}:{m.group(1)}" if m else shown
            raise FlowFileError([f"{where}: not valid TOML: {exc}"]) from None
        return data, text, True  # type: ignore[return-value]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlowFileError(
                [f"{shown}:{exc.lineno}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
            ) from None
        if not isinstance(data, dict):
            raise FlowFileError(
                [f"{shown}:1: a flow file holds an object with \"flow\" and \"steps\" (got {_show(data)})"]
            )
        return data, text, False
    raise FlowFileError(
        [f"{shown}: unknown file type {suffix or '(no suffix)'!r}; name a flow file *.toml or *.json"]
    )


class _Loader:
    def __init__(self, path: str, data: Mapping[str, Any], text: str, is_toml: bool,
                 allow_modules: Sequence[str]) -> None:
        self.path = path
        self.data = data
        self.p = Problems(path, text, is_toml)
        self.allow_modules = list(allow_modules)
        self.folder = str(Path(path).resolve().parent)

    # small checks, each adding a problem and returning whether the value is good

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: list[str], what: str) -> None:
        for key, value in table.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"; {what} takes: {', '.join(allowed)}"
                self.p.add([*where, key], f"unknown key (set to {_show(value)}){hint}")

    def table(self, value: object, where: list[str], example: str) -> bool:
        if isinstance(value, Mapping):
            return True
        self.p.add(where, f"must be a table, as in {example} (got {_show(value)})")
        return False

    def integer(self, value: object, where: list[str], low: int, high: int | None = None) -> bool:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high
        ):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            self.p.add(where, f"must be a whole number {span} (got {_show(value)})")
            return False
        return True

    def number(self, value: object, where: list[str], low: float, strict: bool = False) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value or (
            value <= low if strict else value < low
        ) or value == float("inf"):
            self.p.add(where, f"must be a number {'>' if strict else '>='} {low:g} (got {_show(value)})")
            return False
        return True

    def choice(self, value: object, where: list[str], choices: Sequence[str]) -> bool:
        if value in choices:
            return True
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        self.p.add(where, f"must be one of {', '.join(repr(c) for c in choices)} (got {_show(value)}){hint}")
        return False

    def names(self, value: object, where: list[str], what: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        self.p.add(where, f"must be a {what} name or a list of {what} names (got {_show(value)})")
        return []

    def compile(self, value: Any, where: list[str]) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            try:
                return parse(value)
            except TemplateError as exc:
                self.p.add(where, str(exc))
                return value
        if isinstance(value, Mapping):
            return {k: self.compile(v, [*where, str(k)]) for k, v in value.items()}
        if isinstance(value, list):
            return [self.compile(v, [*where, str(i)]) for i, v in enumerate(value)]
        return value

    # sections

    def load(self) -> FlowFile:
        data = self.data
        self.keys(data, _TOP, [], "a flow file")
        flow_table = data.get("flow", {})
        name = Path(self.path).stem or "flow"
        max_concurrent: int | None = None
        error_handling = "fail_fast"
        allow: list[str] = []
        description = ""
        if self.table(flow_table, ["flow"], '[flow] name = "my-flow"'):
            self.keys(flow_table, _FLOW_KEYS, ["flow"], "[flow]")
            if "name" in flow_table:
                if isinstance(flow_table["name"], str) and flow_table["name"]:
                    name = flow_table["name"]
                else:
                    self.p.add(["flow", "name"], f"must be a non-empty string (got {_show(flow_table['name'])})")
            if "description" in flow_table and not isinstance(flow_table["description"], str):
                self.p.add(["flow", "description"], f"must be a string (got {_show(flow_table['description'])})")
            elif "description" in flow_table:
                description = flow_table["description"]
            if "max_concurrent" in flow_table and self.integer(
                flow_table["max_concurrent"], ["flow", "max_concurrent"], 1
            ):
                max_concurrent = flow_table["max_concurrent"]
            if "error_handling" in flow_table and self.choice(
                flow_table["error_handling"], ["flow", "error_handling"], _ERROR_HANDLING
            ):
                error_handling = flow_table["error_handling"]
            if "allow" in flow_table:
                allow = self.names(flow_table["allow"], ["flow", "allow"], "module")
                for i, module in enumerate(allow):
                    if not _MODULE.match(module):
                        self.p.add(["flow", "allow", str(i)],
                                   f"must be a module name such as 'mypkg' or 'mypkg.tools' (got {module!r})")
        self.allow_modules = allow + self.allow_modules
        inputs = self.load_inputs(data.get("inputs", {}))
        limiters = self.load_limiters(data.get("limiters", {}))
        steps = data.get("steps")
        if steps is None or (isinstance(steps, Mapping) and not steps):
            self.p.add(["steps"], 'the file has no steps; add one, as in [steps.hello] kind = "shell" '
                                  'argv = ["echo", "hello"]')
            raise FlowFileError(self.p.sorted())
        if not self.table(steps, ["steps"], '[steps.hello] kind = "shell"'):
            raise FlowFileError(self.p.sorted())
        for step_name in steps:
            if step_name in inputs:
                self.p.add(["steps", step_name],
                           f"a step and an input are both named {step_name!r}; rename one of them")
        built = [self.load_step(n, s, steps, inputs, limiters) for n, s in steps.items()]
        self.check_cycles(built)
        if self.p.items:
            raise FlowFileError(self.p.sorted())
        flow = Flow(name)
        used: set[str] = set()
        step_limiters: set[str] = set()
        for b in built:
            assert b is not None
            used |= b.inputs
            fn, bind = b.make()
            held = None if b.batch is not None else b.limiters or None  # batch items hold them
            step_limiters |= set(held or ())
            try:
                flow.add(fn, name=b.name, after=b.after or None, limiter=held, bind=bind,
                         retry=b.retry, timeout=b.timeout, description=b.description)
            except (GraphError, TypeError) as exc:
                self.p.add(["steps", b.name], str(exc))
        if not self.p.items:
            try:
                flow.plan()
            except GraphError as exc:
                self.p.add(["steps"], str(exc))
        if self.p.items:
            raise FlowFileError(self.p.sorted())
        return FlowFile(self.path, flow, inputs, frozenset(used), limiters, max_concurrent,
                        error_handling, description, frozenset(step_limiters))

    def load_inputs(self, table: object) -> dict[str, _Input]:
        inputs: dict[str, _Input] = {}
        if not self.table(table, ["inputs"], "[inputs] topic = { default = \"cats\" }"):
            return inputs
        assert isinstance(table, Mapping)
        for name, spec in table.items():
            where = ["inputs", name]
            if not _NAME.match(name):
                self.p.add(where, "an input name must start with a letter or '_' and hold only "
                                  "letters, digits, '_' and '-'")
            if not isinstance(spec, Mapping):
                self.p.add(where, f"must be a table: {name} = {{ default = {json.dumps(spec, default=str)} }} "
                                  f"for an optional input, {name} = {{}} for a required one "
                                  f"(got {_show(spec)})")
                continue
            self.keys(spec, _INPUT_KEYS, where, "an input")
            inputs[name] = _Input("default" not in spec, spec.get("default"))
        return inputs

    def load_limiters(self, table: object) -> dict[str, Any]:
        limiters: dict[str, Any] = {}
        if not self.table(table, ["limiters"], "[limiters] llm = 2"):
            return limiters
        assert isinstance(table, Mapping)
        for name, spec in table.items():
            where = ["limiters", name]
            if isinstance(spec, Mapping):
                self.keys(spec, _RATE_KEYS, where, "a rate limit")
                ok = "calls" in spec and "per" in spec
                if not ok:
                    self.p.add(where, f"a rate limit needs calls and per, as in {name} = "
                                      f"{{ calls = 100, per = 60 }} (got {_show(dict(spec))})")
                    continue
                ok = self.number(spec["calls"], [*where, "calls"], 0, strict=True)
                ok = self.number(spec["per"], [*where, "per"], 0, strict=True) and ok
                if "burst" in spec:
                    ok = self.integer(spec["burst"], [*where, "burst"], 1) and ok
                if not ok:
                    continue
                try:
                    limiters[name] = RateLimit(**{k: spec[k] for k in _RATE_KEYS if k in spec})
                except (GraphError, TypeError, ValueError) as exc:
                    self.p.add(where, str(exc))
            elif self.integer(spec, where, 1):
                limiters[name] = spec
            else:
                self.p.items[-1] += f"; or a rate limit: {name} = {{ calls = 100, per = 60 }}"
        return limiters

    def load_step(self, name: str, raw: object, steps: Mapping[str, Any],
                  inputs: Mapping[str, _Input], limiters: Mapping[str, Any]) -> StepDef | None:
        where = ["steps", name]
        if not _NAME.match(name):
            self.p.add(where, "a step name must start with a letter or '_' and hold only letters, "
                              "digits, '_' and '-'")
        if not self.table(raw, where, f'[steps.{name}] kind = "shell"'):
            return None
        assert isinstance(raw, Mapping)
        kind = raw.get("kind")
        if kind is None:
            self.p.add(where, f"has no kind; add kind = one of {', '.join(repr(k) for k in _KINDS)}")
            return None
        if not self.choice(kind, [*where, "kind"], tuple(_KINDS)):
            return None
        allowed = _COMMON + _KINDS[kind]
        self.keys(raw, allowed, where, f"a {kind} step")
        step = StepDef(name=name, kind=kind, raw=raw, folder=self.folder)
        if "description" in raw:
            if isinstance(raw["description"], str):
                step.description = raw["description"]
            else:
                self.p.add([*where, "description"], f"must be a string (got {_show(raw['description'])})")
        if "after" in raw:
            step.after = self.names(raw["after"], [*where, "after"], "step")
            for i, other in enumerate(step.after):
                if other not in steps:
                    self.p.add([*where, "after"], f"names no step: {other!r}{did_you_mean(other, steps)}")
                elif other == name:
                    self.p.add([*where, "after"], f"names the step itself ({other!r}); remove it")
                del i
        if "limiter" in raw:
            step.limiters = self.names(raw["limiter"], [*where, "limiter"], "limiter")
            for lname in step.limiters:
                if lname not in limiters and not self.p_has(["limiters", lname]):
                    declared = ", ".join(limiters) or "none"
                    hint = did_you_mean(lname, limiters) or f"; declare it in [limiters]: {lname} = 2"
                    self.p.add([*where, "limiter"],
                               f"names no limiter: {lname!r}{hint} (declared: {declared})")
        if "timeout" in raw and self.number(raw["timeout"], [*where, "timeout"], 0, strict=True):
            step.timeout = float(raw["timeout"])
        if "retry" in raw:
            step.retry = self.load_retry(raw["retry"], [*where, "retry"])
        if "batch" in raw:
            step.batch = self.load_batch(raw["batch"], [*where, "batch"])
            rates = [n for n in step.limiters if n in limiters and not isinstance(limiters[n], int)]
            if len(rates) > 1:
                self.p.add([*where, "limiter"], f"a batch step can use one rate limit, not {len(rates)} "
                                                f"({', '.join(rates)}); keep one of them")
        fields = {k: v for k, v in raw.items() if k in _KINDS[kind]}
        if kind == "shell":
            self.check_shell(fields, where)
        elif kind == "http":
            self.check_http(fields, where)
        else:
            step.function = self.check_python(fields, where)
            fields.pop("function", None)
        step.tree = {k: self.compile(v, [*where, k]) for k, v in fields.items()}
        self.check_refs(step, steps, inputs)
        if not step.description:
            step.description = _describe(kind, raw)
            if isinstance(raw.get("batch"), Mapping) and "items" in raw["batch"]:
                step.description += f" (batch over {raw['batch']['items']})"
        return step

    def p_has(self, keys: Sequence[str]) -> bool:
        prefix = f": {'.'.join(keys)}:"
        return any(prefix in item for item in self.p.items)

    def load_retry(self, raw: object, where: list[str]) -> Retry | None:
        if not self.table(raw, where, "retry = { max_attempts = 3, wait = 1 }"):
            return None
        assert isinstance(raw, Mapping)
        self.keys(raw, _RETRY_KEYS, where, "retry")
        ok = True
        if "max_attempts" in raw:
            ok = self.integer(raw["max_attempts"], [*where, "max_attempts"], 1) and ok
        for key in ("wait", "max_wait", "jitter"):
            if key in raw:
                ok = self.number(raw[key], [*where, key], 0) and ok
        if "backoff" in raw:
            ok = self.number(raw["backoff"], [*where, "backoff"], 1) and ok
        if not ok:
            return None
        return Retry(**{k: raw[k] for k in _RETRY_KEYS if k in raw})

    def load_batch(self, raw: object, where: list[str]) -> Batch | None:
        if not self.table(raw, where, 'batch = { items = "${steps.list.output}" }'):
            return None
        assert isinstance(raw, Mapping)
        self.keys(raw, _BATCH_KEYS, where, "batch")
        ok = True
        items = raw.get("items")
        tree: Any = []
        if "items" not in raw:
            self.p.add(where, 'has no items; add items = "${steps.NAME.output}" (or a list)')
            ok = False
        elif isinstance(items, list):
            tree = self.compile(items, [*where, "items"])
        else:
            tree = self.compile(items, [*where, "items"]) if isinstance(items, str) else None
            if not (isinstance(tree, Template) and tree.whole is not None):
                if not (isinstance(items, str) and self.p_has([*where, "items"])):
                    self.p.add([*where, "items"], 'must be one template, as in items = '
                               f'"${{steps.NAME.output}}", or a list (got {_show(items)})')
                ok = False
                tree = []
        as_name = raw.get("as", "item")
        if not isinstance(as_name, str) or not _NAME.match(as_name) or as_name in ("inputs", "steps"):
            self.p.add([*where, "as"], "must be a name other than 'inputs' and 'steps', as in "
                                       f'as = "doc" (got {_show(as_name)})')
            ok = False
        parallel = raw.get("parallel", True)
        if not isinstance(parallel, bool):
            self.p.add([*where, "parallel"], f"must be true or false (got {_show(parallel)})")
            ok = False
        mc = raw.get("max_concurrent", 10)
        ok = self.integer(mc, [*where, "max_concurrent"], 1, 100) and ok
        retries = raw.get("max_retries", 1)
        if not self.integer(retries, [*where, "max_retries"], 1, 10):
            self.p.items[-1] += "; it counts attempts: 1 tries each item once"
            ok = False
        wait = raw.get("retry_wait", 0)
        ok = self.number(wait, [*where, "retry_wait"], 0) and ok
        eh = raw.get("error_handling", "fail_fast")
        ok = self.choice(eh, [*where, "error_handling"], _ERROR_HANDLING) and ok
        # checked or not, the batch is kept so that its templates are checked too
        if not isinstance(as_name, str):
            as_name = "item"
        return Batch(tree, as_name, parallel is True, mc if ok else 1, retries if ok else 1,
                      float(wait) if ok else 0.0, eh)

    def check_shell(self, fields: Mapping[str, Any], where: list[str]) -> None:
        use_shell = fields.get("shell", False)
        if not isinstance(use_shell, bool):
            self.p.add([*where, "shell"], f"must be true or false (got {_show(use_shell)})")
            return
        if use_shell:
            if "argv" in fields:
                self.p.add([*where, "argv"], "give either argv (no shell) or shell = true with a "
                                             "command string, not both")
            if not isinstance(fields.get("command"), str):
                self.p.add([*where, "command"], "shell = true needs a command string, as in "
                                                f'command = "ls | wc -l" (got {_show(fields.get("command"))})')
        else:
            if "command" in fields:
                self.p.add([*where, "command"], "a command string runs only with shell = true; add it, "
                                                'or give argv = ["prog", "arg"] instead')
            argv = fields.get("argv")
            if not isinstance(argv, list) or not argv or not all(
                isinstance(a, str | int | float) and not isinstance(a, bool) for a in argv
            ):
                self.p.add([*where, "argv"] if "argv" in fields else where,
                           f'needs argv, a non-empty list of strings, as in argv = ["echo", "hi"] '
                           f"(got {_show(argv)})")
        for key in ("stdin", "cwd"):
            if key in fields and not isinstance(fields[key], str):
                self.p.add([*where, key], f"must be a string (got {_show(fields[key])})")
        if "env" in fields:
            env = fields["env"]
            if not isinstance(env, Mapping) or not all(
                isinstance(v, str | int | float) and not isinstance(v, bool) for v in env.values()
            ):
                self.p.add([*where, "env"], "must be a table of strings, as in env = { LANG = \"C\" } "
                                            f"(got {_show(env)})")

    def check_http(self, fields: Mapping[str, Any], where: list[str]) -> None:
        try:
            load_httpx()
        except ImportError as exc:
            self.p.add([*where, "kind"], str(exc))
        if not isinstance(fields.get("url"), str):
            self.p.add([*where, "url"] if "url" in fields else where,
                       f'needs url, a string, as in url = "https://example.com/api" '
                       f"(got {_show(fields.get('url'))})")
        method = fields.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            self.p.add([*where, "method"], f"must be one of {', '.join(_METHODS)} (got {_show(method)})")
        if "headers" in fields and not (
            isinstance(fields["headers"], Mapping)
            and all(isinstance(v, str | int | float) for v in fields["headers"].values())
        ):
            self.p.add([*where, "headers"], "must be a table of strings, as in headers = "
                                            f'{{ Accept = "application/json" }} (got {_show(fields["headers"])})')
        if "json" in fields and "body" in fields:
            self.p.add([*where, "body"], "give json (sent as JSON) or body (sent as text), not both")
        elif "body" in fields and not isinstance(fields["body"], str):
            self.p.add([*where, "body"], f"must be a string; use json = ... for structured data "
                                         f"(got {_show(fields['body'])})")

    def check_python(self, fields: Mapping[str, Any], where: list[str]) -> Callable[..., Any] | None:
        target = fields.get("function")
        key = [*where, "function"] if "function" in fields else where
        if not isinstance(target, str) or target.count(":") != 1:
            self.p.add(key, f'needs function = "module:attr", as in function = "mypkg.tools:summarize" '
                            f"(got {_show(target)})")
            return None
        module_name, attr = target.split(":")
        if not _MODULE.match(module_name) or not all(p.isidentifier() for p in attr.split(".")):
            self.p.add(key, f'must be "module:attr", as in "mypkg.tools:summarize" (got {target!r})')
            return None
        if "args" in fields and not isinstance(fields["args"], Mapping):
            self.p.add([*where, "args"], "must be a table of keyword arguments, as in "
                                         f"args = {{ text = \"hi\" }} (got {_show(fields['args'])})")
        if not any(module_name == p or module_name.startswith(p + ".") for p in self.allow_modules):
            top = module_name.split(".")[0]
            self.p.add(key, f"module {module_name!r} is not allowed; add {top!r} to allow in [flow] "
                            f'(allow = ["{top}"]) or pass --allow-module {top}')
            return None
        for folder in (self.folder, os.getcwd()):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:
            self.p.add(key, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}")
            return None
        for part in attr.split("."):
            if not hasattr(obj, part):
                self.p.add(key, f"module {module_name!r} has no {attr!r}"
                                f"{did_you_mean(part, [n for n in dir(obj) if not n.startswith('_')])}")
                return None
            obj = getattr(obj, part)
        if not callable(obj):
            self.p.add(key, f"{target!r} is not a function (it is a {type(obj).__name__})")
            return None
        return obj  # type: ignore[no-any-return]

    def check_refs(self, step: StepDef, steps: Mapping[str, Any], inputs: Mapping[str, _Input]) -> None:
        where = ["steps", step.name]
        trees: list[tuple[list[str], Any]] = [([*where, k], v) for k, v in step.tree.items()]
        if step.batch is not None:
            for ref in refs(step.batch.items):
                if ref.root not in ("inputs", "steps"):
                    self.p.add([*where, "batch", "items"],
                               f"{ref.text}: the items must come from ${{steps.NAME.output}} or "
                               f"${{inputs.NAME}}")
            trees.append(([*where, "batch", "items"], step.batch.items))
        for keys, tree in trees:
            for ref in refs(tree):
                self.check_ref(ref, keys, step, steps, inputs)

    def check_ref(self, ref: Ref, keys: list[str], step: StepDef, steps: Mapping[str, Any],
                  inputs: Mapping[str, _Input]) -> None:
        if ref.root == "inputs":
            if ref.name not in inputs:
                hint = did_you_mean(ref.name, inputs) or f"; declare it in [inputs]: {ref.name} = {{}}"
                self.p.add(keys, f"{ref.text} names no input{hint}")
            else:
                step.inputs.add(ref.name)
        elif ref.root == "steps":
            if ref.name == step.name:
                self.p.add(keys, f"{ref.text}: a step cannot use its own output")
            elif ref.name not in steps:
                hint = did_you_mean(ref.name, steps) or f" (steps: {', '.join(steps)})"
                self.p.add(keys, f"{ref.text} names no step{hint}")
            else:
                step.deps.add(ref.name)
        elif step.batch is None or ref.root != step.batch.name:
            literal = "; write $${ for a literal ${ (as in a shell variable)"
            if step.batch is None:
                self.p.add(keys, f"{ref.text} names nothing here: a batch item exists only in a step "
                                 "with batch = { items = ... }; use ${inputs.NAME} or "
                                 f"${{steps.NAME.output}}{literal}")
            else:
                hint = did_you_mean(ref.root, [step.batch.name]) or literal
                self.p.add(keys, f"{ref.text} names nothing: this batch's items are "
                                 f"${{{step.batch.name}}}{hint}")

    def check_cycles(self, built: Sequence[StepDef | None]) -> None:
        graph = {b.name: sorted(b.deps) + [a for a in b.after if a not in b.deps] for b in built if b}
        state: dict[str, int] = {}
        for start in graph:
            if state.get(start):
                continue
            stack: list[tuple[str, int]] = [(start, 0)]
            path: list[str] = []
            while stack:
                node, i = stack.pop()
                if i == 0:
                    state[node] = 1
                    path.append(node)
                edges = graph.get(node, [])
                if i < len(edges):
                    stack.append((node, i + 1))
                    nxt = edges[i]
                    if state.get(nxt) == 1:
                        cycle = path[path.index(nxt):]
                        # dependencies point backwards: show it in execution order
                        order = [*reversed(cycle)]
                        order = order[-1:] + order[:-1]
                        text = " -> ".join([*order, order[0]])
                        self.p.add(["steps", nxt], f"cycle: {text}; remove one of these dependencies "
                                                   "(a template or an after)")
                        return
                    if not state.get(nxt):
                        stack.append((nxt, 0))
                else:
                    state[node] = 2
                    path.pop()


def _describe(kind: str, raw: Mapping[str, Any]) -> str:
    if kind == "shell":
        text = raw.get("command") if raw.get("shell") else " ".join(map(str, raw.get("argv") or []))
        return f"shell: {text}"
    if kind == "http":
        return f"http: {str(raw.get('method', 'GET')).upper()} {raw.get('url')}"
    return f"python: {raw.get('function')}"


def load_flow_file(path: str | os.PathLike[str], *, allow_modules: Sequence[str] = ()) -> FlowFile:
    """Read, check and build a flow file.

    Args:
        path: a ``.toml`` or ``.json`` file.
        allow_modules: module prefixes ``python`` steps may import, besides the
            file's own ``allow`` list.

    Raises:
        FlowFileError: every problem found, one per line, each naming the file,
            the line, the key path and the value.
    """
    shown = os.fspath(path)
    data, text, is_toml = _read(Path(shown), shown)
    return _Loader(shown, data, text, is_toml, allow_modules).load()
