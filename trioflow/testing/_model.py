"""Random flows and their expected behaviour, computed without running them.

:class:`FlowCase` pairs a :class:`trioflow.Flow` built from a list of
:class:`StepModel` with everything a property test needs to judge a run of it:
the outputs, statuses, attempts and usage that running the steps one by one
in declaration (topological) order gives, the virtual-time critical path and
total work, each step's descendants, and observations made by the step
bodies during the last run (in-flight counts, cancellations, inputs seen).

This module does not import Hypothesis; :mod:`trioflow.testing.strategies`
draws the models.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import trio

import trioflow

__all__ = ["FlowCase", "Observations", "StepFailure", "StepModel"]

#: The flow input that map steps (and plain steps) may read; a list of ints.
ITEMS = "items"


class StepFailure(Exception):
    """The exception a generated step raises when it is drawn to fail."""


@attrs.frozen
class StepModel:
    """One generated step.

    Attributes:
        name: The step's name, ``"s0"``, ``"s1"``, … in declaration order.
        deps: Names of upstream steps (or ``"items"``) passed as parameters.
        after: Names of upstream steps that must finish first (order only).
        map_over: ``None``, or the name in ``deps`` whose items are mapped.
        durations: Virtual seconds each attempt sleeps; item ``i`` of a map step
            uses ``durations[i % len(durations)]``.
        checkpoints: Extra schedule points in each attempt.
        use_anyio: Sleep and checkpoint through anyio rather than trio.
        length: Length of a plain step's output list.
        fail_times: How many first attempts (of every item) raise
            :class:`StepFailure`; ``>= max_attempts`` means the step fails.
        max_attempts: The retry policy's ``max_attempts`` (1 = no retry).
        wait: Retry ``wait``.
        backoff: Retry ``backoff``.
        cost: The step's ``cost`` option.
        limiter: ``None`` or the name of a limiter the step uses.
        max_concurrent: A map step's own limit on items at once, or ``None``.
        timeout: The step's ``timeout`` option, or ``None``. Shorter than a
            duration means that attempt times out (a failure).
        mutate: The step appends to every list it was given, after using it.
        tokens: Usage reported per attempt, as ``tokens``.
        when: ``None``, or a step in ``deps`` whose value decides whether the
            step runs (``when=``): it runs when ``condition(value)`` (in this module) holds.
        optional: Steps in ``deps`` the step takes with a default of ``None``
            (optional dependencies: ``None`` when a condition skipped them).
        rate: Every attempt takes a token from the run's rate limit ``"rate"``.
        key_mod: ``0``, or the step uses the keyed limiter ``"keyed"`` with the
            key ``item % key_mod`` (a plain step: key ``0``).
    """

    name: str
    deps: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    map_over: str | None = None
    durations: tuple[float, ...] = (0.0,)
    checkpoints: int = 0
    use_anyio: bool = False
    length: int = 1
    fail_times: int = 0
    max_attempts: int = 1
    wait: float = 0.0
    backoff: float = 1.0
    cost: float = 1.0
    limiter: str | None = None
    max_concurrent: int | None = None
    timeout: float | None = None
    mutate: bool = False
    tokens: int = 1
    when: str | None = None
    optional: tuple[str, ...] = ()
    rate: bool = False
    key_mod: int = 0

    @property
    def fails(self) -> bool:
        """Whether every attempt up to ``max_attempts`` fails."""
        return self.fail_times >= self.max_attempts

    @property
    def attempts(self) -> int:
        """Attempts each unit (the step, or each map item) makes."""
        return self.max_attempts if self.fails else self.fail_times + 1

    def unit_time(self, item: int | None) -> float:
        """Virtual seconds one unit holds its slot: attempts plus retry waits."""
        d = self.durations[(item or 0) % len(self.durations)]
        if self.timeout is not None:
            d = min(d, self.timeout)
        waits = sum(min(60.0, self.wait * self.backoff ** (k - 1)) for k in range(1, self.attempts))
        return self.attempts * d + waits


def condition(value: Sequence[int]) -> bool:
    """The condition of a generated step with ``when``: holds for about half the values."""
    return (sum(value) + len(value)) % 2 == 0


def _value(model: StepModel, index: int, inputs: Mapping[str, Any], item: Any) -> Any:
    """The pure function every generated step computes."""
    h = 7 * index + 3
    for k, dep in enumerate(model.deps):
        if dep == model.map_over:
            continue
        given = inputs[dep] if inputs[dep] is not None else []  # an optional dependency skipped
        h += (k + 1) * (sum(given) + 11 * len(given))
    if model.map_over is not None:
        return (h + 31 * item) % 10007
    return [(h + j) % 10007 for j in range(model.length)]


@attrs.define(eq=False)
class Observations:
    """What the generated step bodies saw during the last run of a :class:`FlowCase`.

    Attributes:
        in_flight: Bodies running now, by key: ``"*"`` (all), the step name,
            and ``"limiter:<name>"``.
        max_in_flight: The most running at once, by the same keys.
        entered: Bodies started (one per attempt of a step or map item).
        exited: Bodies finished, however they ended.
        cancelled: ``(step, item)`` of every body that saw a cancellation.
        inputs_seen: ``(step, item, attempt)`` -> a deep copy of the arguments
            the body was called with.
        starts: ``(step, item, attempt, time)`` of every attempt, as it began.
    """

    in_flight: dict[str, int] = attrs.Factory(dict)
    max_in_flight: dict[str, int] = attrs.Factory(dict)
    entered: int = 0
    exited: int = 0
    cancelled: set[tuple[str, int | None]] = attrs.Factory(set)
    inputs_seen: dict[tuple[str, int | None, int], Any] = attrs.Factory(dict)
    starts: list[tuple[str, int | None, int, float]] = attrs.Factory(list)


@attrs.define(eq=False)
class FlowCase:
    """A generated flow, its inputs, and what a run of it must give.

    Attributes:
        flow: The :class:`trioflow.Flow`.
        inputs: The inputs to pass to ``flow.run``.
        models: The step models, in declaration order.
        limiter_sizes: Size of each named limiter the steps use.
        observations: Filled in by the step bodies during the last run.
        time_scale: Step bodies sleep their drawn durations times this; set it
            to 0 to run on a real clock (asyncio) without waiting.
        anyio_only: Step bodies sleep and checkpoint through anyio only, as
            they must on asyncio.
    """

    flow: trioflow.Flow
    inputs: dict[str, Any]
    models: tuple[StepModel, ...]
    limiter_sizes: dict[str, int]
    observations: Observations = attrs.Factory(Observations)
    time_scale: float = 1.0
    anyio_only: bool = False
    rate: tuple[float, float, int] | None = None  # (calls, per, burst) of the limit "rate"
    per_key: int = 0  # slots per key of the keyed limiter "keyed"

    @classmethod
    def build(
        cls,
        models: Sequence[StepModel],
        items: Sequence[int],
        limiter_sizes: Mapping[str, int],
        *,
        rate: tuple[float, float, int] | None = None,
        per_key: int = 0,
    ) -> FlowCase:
        """Build the flow for *models* (each one's deps must name earlier steps or ``"items"``)."""
        case = cls(
            trioflow.Flow("generated"), {ITEMS: list(items)}, tuple(models), dict(limiter_sizes),
            rate=rate, per_key=per_key,
        )
        for index, model in enumerate(models):
            case.flow.add(
                case._make_fn(index, model),
                name=model.name,
                after=list(model.after) or None,
                limiter=_limiter_names(model),
                **_gate_options(model),
                retry=trioflow.Retry(
                    max_attempts=model.max_attempts, wait=model.wait, backoff=model.backoff
                ),
                map_over=model.map_over,
                max_concurrent=model.max_concurrent,
                cost=model.cost,
                timeout=model.timeout,
            )
        if not any(ITEMS in m.deps for m in models):
            case.inputs = {}
        return case

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description from which :meth:`from_json` rebuilds the case."""
        return {
            "models": [attrs.asdict(m) for m in self.models],
            "items": list(self.inputs.get(ITEMS, [])),
            "limiter_sizes": dict(self.limiter_sizes),
            **({"rate": list(self.rate)} if self.rate is not None else {}),
            **({"per_key": self.per_key} if self.per_key else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FlowCase:
        """Rebuild a case saved with :meth:`to_json` (for example, by the fuzz suite)."""
        models = []
        for m in data["models"]:
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in m.items()
            }
            models.append(StepModel(**fields))
        rate = data.get("rate")
        return cls.build(
            models, data["items"], data["limiter_sizes"],
            rate=(rate[0], rate[1], rate[2]) if rate is not None else None,
            per_key=data.get("per_key", 0),
        )

    def _make_fn(self, index: int, model: StepModel) -> Any:
        params = ", ".join(f"{d}=None" if d in model.optional else d for d in model.deps)
        if model.optional:  # parameters with defaults last
            ordered = [d for d in model.deps if d not in model.optional]
            ordered += [f"{d}=None" for d in model.deps if d in model.optional]
            params = ", ".join(ordered)
        packed = ", ".join(f"{p!r}: {p}" for p in model.deps)
        source = f"async def {model.name}({params}):\n    return await _body({{{packed}}})\n"

        async def body(kwargs: dict[str, Any]) -> Any:
            return await self._body(index, model, kwargs)

        namespace: dict[str, Any] = {"_body": body, "__name__": __name__ + ".generated"}
        exec(source, namespace)  # a real signature, whatever way the engine reads it
        return namespace[model.name]

    async def _body(self, index: int, model: StepModel, kwargs: dict[str, Any]) -> Any:
        ctx = trioflow.current_step()
        obs = self.observations
        keys = ["*", model.name] + ([f"limiter:{model.limiter}"] if model.limiter else [])
        if model.key_mod:
            item_value = kwargs[model.map_over] if model.map_over is not None else 0
            keys.append(f"key:{item_value % model.key_mod}")
        obs.starts.append((model.name, ctx.item, ctx.attempt, anyio.current_time()))
        obs.entered += 1
        for key in keys:
            obs.in_flight[key] = obs.in_flight.get(key, 0) + 1
            obs.max_in_flight[key] = max(obs.max_in_flight.get(key, 0), obs.in_flight[key])
        use_anyio = model.use_anyio or self.anyio_only
        try:
            obs.inputs_seen[(model.name, ctx.item, ctx.attempt)] = copy.deepcopy(kwargs)
            for _ in range(model.checkpoints):
                if use_anyio:
                    await anyio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.checkpoint()
            ctx.add_usage(calls=1, tokens=model.tokens)
            duration = model.durations[(ctx.item or 0) % len(model.durations)] * self.time_scale
            if use_anyio:
                await anyio.sleep(duration)
            else:
                await trio.sleep(duration)
            if ctx.attempt <= model.fail_times:
                raise StepFailure(f"step {model.name!r} item {ctx.item} attempt {ctx.attempt}")
            item = kwargs[model.map_over] if model.map_over is not None else None
            value = _value(model, index, kwargs, item)
            if model.mutate:
                for arg in kwargs.values():
                    if isinstance(arg, list):
                        arg.append(-1)
            return value
        except anyio.get_cancelled_exc_class():
            obs.cancelled.add((model.name, ctx.item))
            raise
        finally:
            obs.exited += 1
            for key in keys:
                obs.in_flight[key] -= 1

    # -- running -------------------------------------------------------------------

    async def run(self, **options: Any) -> trioflow.RunResult:
        """Reset the observations and run the flow with its inputs and *options*.

        ``limiters`` defaults to :attr:`limiter_sizes`.
        """
        self.observations = Observations()
        options.setdefault("limiters", dict(self.limiter_sizes))
        options["limiters"] = {**options["limiters"], **self.gate_limiters()}
        return await self.flow.run(self.inputs, **options)

    def gate_limiters(self) -> dict[str, Any]:
        """A fresh rate limit ``"rate"`` and keyed limiter ``"keyed"`` for one run (each
        run gets its own bucket, so runs can be compared). On a real clock
        (``time_scale == 0``) the rate limit never holds anything back."""
        gates: dict[str, Any] = {}
        if self.rate is not None:
            calls, per, burst = self.rate
            if self.time_scale == 0:
                gates["rate"] = trioflow.RateLimit(calls=1e9, per=1.0)
            else:
                gates["rate"] = trioflow.RateLimit(calls=calls, per=per * self.time_scale, burst=burst)
        if self.per_key:
            gates["keyed"] = trioflow.KeyedLimiter(per_key=self.per_key)
        return gates

    def unlimited_limiters(self) -> dict[str, int]:
        """Named limiters too large to ever hold a step back."""
        return {name: 1_000_000 for name in self.limiter_sizes}

    async def run_settled(self, **options: Any) -> trioflow.RunResult:
        """Like :meth:`run`, but return the partial result when the run raises ``FlowError``."""
        try:
            return await self.run(**options)
        except trioflow.FlowError as exc:
            return exc.result

    # -- expectations --------------------------------------------------------------

    @staticmethod
    def summary(result: trioflow.RunResult) -> dict[str, tuple[str, Any, int, dict[str, float]]]:
        """name -> ``(status, value, attempts, usage)`` of a run, comparable with :meth:`sequential`."""
        return {
            name: (str(s.status), s.value if s.ok else None, s.attempts, dict(s.usage))
            for name, s in result.steps.items()
        }

    @staticmethod
    def details(result: trioflow.RunResult) -> dict[str, tuple[str | None, tuple[tuple[str, Any, int], ...]]]:
        """name -> ``(skip_reason, items)`` of a run, each item as ``(status, value,
        attempts)``; comparable with :meth:`expected_details`."""
        return {
            name: (s.skip_reason, tuple((str(i.status), i.value, i.attempts) for i in s.items))
            for name, s in result.steps.items()
        }

    def expected_details(self) -> dict[str, tuple[str | None, tuple[tuple[str, Any, int], ...]]]:
        """:meth:`details` of a run under ``error_handling="continue"``, by the rules
        without pipelining: a skipped step has the reason ``"condition"`` (its own
        ``when``) or ``"dependency"``, and no items; a map step that ran has one
        item per element of its list (a generated map step never fails)."""
        seq, by_condition = self._sequential()
        values: dict[str, Any] = {ITEMS: self.inputs.get(ITEMS, [])}
        out: dict[str, tuple[str | None, tuple[tuple[str, Any, int], ...]]] = {}
        for model in self.models:
            status, value, _attempts, _usage = seq[model.name]
            if status == "skipped":
                upstream = [d for d in (*model.deps, *model.after) if d != ITEMS]
                own = (
                    model.name in by_condition
                    and model.when is not None
                    and seq[model.when][0] != "skipped"
                    and all(seq[d][0] != "failed" and (seq[d][0] != "skipped" or d in by_condition)
                            for d in upstream)
                    and not any(d in by_condition and d not in (set(model.after) | set(model.optional))
                                for d in upstream)
                    and not condition(values[model.when])
                )
                out[model.name] = ("condition" if own else "dependency", ())
                continue
            values[model.name] = value
            if model.map_over is None or status != "succeeded":
                out[model.name] = (None, ())
                continue
            out[model.name] = (None, tuple(("succeeded", v, model.attempts) for v in value))
        return out

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def failing(self) -> frozenset[str]:
        """Steps drawn to fail (every attempt of some unit fails)."""
        return frozenset(n for n, r in self.sequential().items() if r[0] == "failed")

    def descendants(self, name: str) -> frozenset[str]:
        """Steps that depend on *name*, directly or not (data or ``after`` edges)."""
        found: set[str] = set()
        for model in self.models:
            if any(d == name or d in found for d in (*model.deps, *model.after)):
                found.add(model.name)
        return frozenset(found)

    def sequential(self) -> dict[str, tuple[str, Any, int, dict[str, float]]]:
        """Run the steps one by one in declaration order, as pure functions.

        Returns:
            name -> ``(status, value, attempts, usage)`` as under
            ``error_handling="continue"``: a step downstream of a failure is
            ``"skipped"`` with value ``None``.
        """
        return self._sequential()[0]

    def _sequential(
        self,
    ) -> tuple[dict[str, tuple[str, Any, int, dict[str, float]]], set[str]]:
        """:meth:`sequential`, and the steps skipped because of a condition (their
        own ``when``, or one upstream that a dependent could not do without)."""
        out: dict[str, tuple[str, Any, int, dict[str, float]]] = {}
        values: dict[str, Any] = {ITEMS: self.inputs.get(ITEMS, [])}
        by_condition: set[str] = set()
        for index, model in enumerate(self.models):
            ups = [d for d in (*model.deps, *model.after) if d != ITEMS]
            if any(out[d][0] == "failed" or (out[d][0] == "skipped" and d not in by_condition) for d in ups):
                out[model.name] = ("skipped", None, 0, {})
                continue
            tolerated = (set(model.after) | set(model.optional)) - {model.when}
            if any(d in by_condition and d not in tolerated for d in ups) or (
                model.when is not None and not condition(values[model.when])
            ):
                out[model.name] = ("skipped", None, 0, {})
                by_condition.add(model.name)
                continue
            kwargs: dict[str, Any] = {d: None if d in by_condition else values[d] for d in model.deps}
            units = len(kwargs[model.map_over]) if model.map_over is not None else 1
            calls = units * model.attempts
            usage: dict[str, float] = (
                {"calls": calls, "tokens": calls * model.tokens} if calls else {}
            )
            attempts = model.attempts if units else 0
            if model.fails and units:
                out[model.name] = ("failed", None, attempts, usage)
                continue
            if model.map_over is not None:
                value: Any = [_value(model, index, kwargs, x) for x in kwargs[model.map_over]]
            else:
                value = _value(model, index, kwargs, None)
            values[model.name] = value
            out[model.name] = ("succeeded", value, attempts, usage)
        return out, by_condition

    def finish_times(self) -> dict[str, float]:
        """Virtual finish time of every step that runs, with unlimited capacity.

        Map items start in item order as the step's own ``max_concurrent`` allows.
        """
        finish, _, _ = self._finish_times()
        return finish

    def skip_times(self) -> dict[str, float]:
        """When each step skipped by a condition (its own, or one upstream) is skipped,
        with unlimited capacity: the moment its last dependency ends."""
        _, _, skipped_at = self._finish_times()
        return skipped_at

    def _finish_times(self) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
        """Step finish times, each map step's item finish times, and skip times.

        A map step over another map step is pipelined (issue 13): its item ``i``
        is released when upstream item ``i`` has finished and every other
        dependency has; items then start, lowest index first, as the step's own
        ``max_concurrent`` allows. Conditions do not change that, but for a step
        whose ``when`` names its map source: it waits for the whole list.
        """
        seq, by_condition = self._sequential()
        finish: dict[str, float] = {}
        items_finish: dict[str, list[float]] = {}
        maps = {m.name for m in self.models if m.map_over is not None}
        skipped_at: dict[str, float] = {}  # a skip by a condition happens when its inputs are in
        for model in self.models:
            ended = {**finish, **skipped_at}
            if model.name in by_condition:
                skipped_at[model.name] = max(
                    (ended[d] for d in (*model.deps, *model.after) if d != ITEMS), default=0.0
                )
                continue
            if seq[model.name][0] == "skipped":
                continue
            start = max((ended[d] for d in (*model.deps, *model.after) if d != ITEMS), default=0.0)
            if model.map_over is None:
                finish[model.name] = start + model.unit_time(None)
                continue
            n = len(self._map_items(model))
            times = [model.unit_time(i) for i in range(n)]
            if model.map_over in maps and model.when != model.map_over:
                # (a condition on the whole upstream list waits for it: unpipelined)
                others = max(
                    (ended[d] for d in (*model.deps, *model.after) if d not in (ITEMS, model.map_over)),
                    default=0.0,
                )
                releases = [max(others, t) for t in items_finish[model.map_over]]
            else:
                releases = [start] * n
            items_finish[model.name] = _release_schedule(releases, times, model.max_concurrent)
            finish[model.name] = max(items_finish[model.name], default=start)
        return finish, items_finish, skipped_at

    def _map_items(self, model: StepModel) -> list[Any]:
        assert model.map_over is not None
        if model.map_over == ITEMS:
            return list(self.inputs.get(ITEMS, []))
        value = self.sequential()[model.map_over][1]
        return list(value)

    @property
    def critical_path(self) -> float:
        """Duration of a run with unlimited capacity (``max_concurrent=None``)."""
        return max(self.finish_times().values(), default=0.0)

    @property
    def total_work(self) -> float:
        """Sum of the virtual time every unit holds a slot (steps and map items)."""
        seq = self.sequential()
        total = 0.0
        for model in self.models:
            if seq[model.name][0] == "skipped":
                continue
            if model.map_over is None:
                total += model.unit_time(None)
            else:
                total += sum(model.unit_time(i) for i in range(len(self._map_items(model))))
        return total


def _limiter_names(model: StepModel) -> list[str] | None:
    names = [model.limiter] if model.limiter else []
    names += ["rate"] if model.rate else []
    names += ["keyed"] if model.key_mod else []
    return names or None


def _gate_options(model: StepModel) -> dict[str, Any]:
    """``when=`` and ``limit_key=`` of a generated step, as ``flow.add`` options."""
    options: dict[str, Any] = {}
    if model.when is not None:
        namespace: dict[str, Any] = {"_condition": condition}
        exec(f"def when({model.when}):\n    return _condition({model.when})\n", namespace)
        options["when"] = namespace["when"]
    if model.key_mod:
        mapped, mod = model.map_over, model.key_mod

        def limit_key(**kwargs: Any) -> int:
            return (kwargs[mapped] if mapped is not None else 0) % mod

        options["limit_key"] = limit_key
    return options


def _release_schedule(
    releases: Sequence[float], times: Sequence[float], slots: int | None
) -> list[float]:
    """Finish times of jobs released at *releases*, on *slots* machines (``None`` = one
    each); a free machine takes the lowest-index job released by then."""
    n = len(times)
    if slots is None or slots >= n:
        return [r + t for r, t in zip(releases, times, strict=True)]
    finish = [0.0] * n
    free = [0.0] * slots
    waiting = set(range(n))
    while waiting:
        at = max(heapq.heappop(free), min(releases[i] for i in waiting))
        i = min(j for j in waiting if releases[j] <= at)
        waiting.discard(i)
        finish[i] = at + times[i]
        heapq.heappush(free, finish[i])
    return finish


def _list_schedule(times: Sequence[float], slots: int | None) -> float:
    """Makespan of running jobs in order on *slots* machines (``None`` = one each)."""
    if not times:
        return 0.0
    if slots is None or slots >= len(times):
        return max(times)
    free = [0.0] * slots
    end = 0.0
    for t in times:
        start = heapq.heappop(free)
        end = max(end, start + t)
        heapq.heappush(free, start + t)
    return end
