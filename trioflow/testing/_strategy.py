"""Strategies: who chooses each scheduling decision of a deterministic run.

A *decision point* arises whenever the harness must choose what happens next:

* ``"batch"``: two or more things can run (tasks of the run, and worker-thread
  calls waiting to be run). ``0`` runs every runnable task, oldest first
  (FIFO); ``k >= 1`` runs only ``choices[k - 1]``: a task, which then runs
  alone while the others wait for the next batch, or a thread call, which runs
  to its end before the batch runs FIFO.
* ``"handover"``: a flow worker freed a slot that several steps want.
  ``0`` lets the run settle first (every task runs until blocked), ``1``
  hands the slot over at once, in the same task step, as a busy production run
  does.

A strategy is anything with the three methods of :class:`Strategy`; the
built-in ones are :class:`RandomWalk`, :class:`PCT`, :class:`Bounded` and
:class:`Portfolio`, named ``"random"``, ``"pct"``, ``"bounded"`` and
``"portfolio"``.
"""

from __future__ import annotations

import random
import sys
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

__all__ = [
    "PCT",
    "STRATEGY_NAMES",
    "Bounded",
    "DecisionPoint",
    "Portfolio",
    "RandomWalk",
    "Strategy",
    "fast_paths",
    "make_strategy",
    "strategy_name",
]

STRATEGY_NAMES = ("random", "pct", "bounded", "portfolio")


@attrs.frozen
class DecisionPoint:
    """What a :class:`Strategy` sees when it must decide.

    Attributes:
        kind: ``"batch"`` or ``"handover"`` (see :mod:`trioflow.testing`).
        choices: Stable names of what can run, oldest first: task labels such
            as ``"mymodule.worker#3"`` (the trio name and the spawn index in
            the run) and, in a batch, worker-thread calls such as
            ``"thread:read_file#0"``. For a hand-over, the one worker's label.
        step: Task steps run so far in this run.
        index: The number of this decision within the run (0 for the first).
    """

    kind: str
    choices: tuple[str, ...]
    step: int
    index: int


@runtime_checkable
class Strategy(Protocol):
    """Chooses the decisions of deterministic runs, one run after another.

    :func:`~trioflow.testing.check_deterministic` calls ``start_run`` before
    each run it gives to the strategy, ``decide`` at each decision point of
    that run, and ``end_run`` after it; a strategy may learn from earlier runs
    (their length, the choices they offered). The decisions taken are recorded,
    so every run replays as an explicit ``schedule=`` whatever the strategy.
    """

    def start_run(self, run: int) -> None:
        """A run begins: *run* counts the runs of a :func:`check_deterministic` from 1
        (run 0 is its FIFO run, which no strategy chooses); a single
        :func:`run_deterministic` with this strategy is run 0."""

    def decide(self, point: DecisionPoint) -> int:
        """Return ``0`` or ``k`` in ``1..len(point.choices)`` (see :class:`DecisionPoint`).

        Values outside the range wrap: ``k`` picks ``choices[(k - 1) % n]``.
        """
        ...

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        """The run ended after taking *decisions* and running *steps* task steps."""


class RandomWalk:
    """Each decision drawn uniformly from ``0..n`` (``"random"``).

    Good at races that need one or two unlikely choices anywhere in a run, and
    at lost wakeups; the draw for each decision is independent, so a bug that
    needs one task held back for many consecutive decisions is unlikely.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed: int = seed
        self.rng: random.Random = random.Random(seed)

    def start_run(self, run: int) -> None:
        pass

    def decide(self, point: DecisionPoint) -> int:
        return self.rng.randrange(len(point.choices) + 1)

    def _choose(self, kind: str, choices: Sequence[str], index: int) -> int:
        # decide() without building a DecisionPoint (the harness's fast path);
        # randrange(n) is _randbelow(n) after checking its argument
        return self.rng._randbelow(len(choices) + 1)  # type: ignore[attr-defined, no-any-return]

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        pass


class PCT:
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010) (``"pct"``).

    Every task (and thread call) gets a random priority when first seen; at
    each batch only the runnable one of highest priority runs. At ``depth - 1``
    change points, drawn uniformly over the length of the run as measured in
    earlier runs, the task running then drops below every other. A bug of
    depth ``d`` (``d`` ordering constraints) among ``n`` tasks in a run of
    ``k`` decisions is found with probability at least ``1 / (n * k**(d-1))``
    per run; it finds bugs that need one task held back for a long time.

    Strict priorities are unfair: a task that polls (``while not ready: await
    trio.sleep(0)``) with a higher priority than the task it waits for would
    run forever. So PCT is fair after ``unfair`` decisions of a run (at least
    10 000, and four times the longest run seen that ended before it): from
    there on every decision runs all runnable tasks, as FIFO does, and the run
    ends as it would in production. Such a run does not count as a run length.

    Args:
        seed: Seeds the priorities and change points.
        depth: The bug depth aimed at (``>= 1``); ``None`` draws 1, 2 or 3 per run.
    """

    name = "pct"

    #: The fewest decisions a run may take with strict priorities.
    MIN_UNFAIR = 10_000

    def __init__(self, seed: int = 0, depth: int | None = None) -> None:
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ValueError(f"PCT depth must be an int >= 1 or None, got {depth!r}")
        self.seed: int = seed
        self.depth: int | None = depth
        self.rng: random.Random = random.Random(seed)
        self.length: int = 16  # decisions per run, updated from the runs seen
        self.priorities: dict[str, float] = {}
        self.changes: dict[int, int] = {}
        self.handover_at_once: bool = False
        self.unfair: int = self.MIN_UNFAIR
        self.went_fair: bool = False  # the last run reached its fair part

    def start_run(self, run: int) -> None:
        depth = self.depth if self.depth is not None else self.rng.choice((1, 2, 3))
        self.priorities = {}
        points = range(1, max(self.length, depth) + 1)
        self.changes = {p: i for i, p in enumerate(self.rng.sample(points, depth - 1))}
        # (the harness consults _choose at every index in changes, see fast_paths)
        self.unfair = max(self.MIN_UNFAIR, 4 * self.length)
        self.changes[self.unfair] = -1
        self.handover_at_once = self.rng.random() < 0.5
        self.went_fair = False

    def decide(self, point: DecisionPoint) -> int:
        return self._choose(point.kind, point.choices, point.index)

    def _choose(self, kind: str, choices: Sequence[str], index: int) -> int:
        if kind == "handover":
            return 1 if self.handover_at_once else 0
        if index >= self.unfair:
            self.went_fair = True
            return 0  # fair from here on: every runnable task runs
        priorities = self.priorities
        try:
            values = list(map(priorities.__getitem__, choices))
        except KeyError:  # new names: drawn in the order of the choices
            for name in [name for name in choices if name not in priorities]:
                priorities[name] = 1.0 + self.rng.random()
            values = list(map(priorities.__getitem__, choices))
        # (index: the first of equal priorities)
        best = values.index(max(values))
        change = self.changes.get(index)
        if change is not None:
            # below every initial priority, later change points lower still
            priorities[choices[best]] = values[best] = -float(change)
            best = values.index(max(values))
        return best + 1

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        if not self.went_fair:
            self.length = max(self.length, len(decisions))


class _Children:
    """The schedules one run of the bounded search leads to, made one at a time.

    The run took the decisions of *prefix* and then only FIFO ones, at decision
    points with ``sizes[i]`` choices (``i`` counted from the end of the prefix).
    Its children put one non-FIFO choice at one of those points:
    ``prefix + (0,) * i + (choice,)``, in order of ``i`` then ``choice``.
    Made when needed, they cost one small int per decision point, not a tuple
    as long as the run for every one of them. The root (``sizes is None``) is
    the FIFO run itself.
    """

    __slots__ = ("bound", "choice", "position", "prefix", "sizes")

    def __init__(self, prefix: tuple[int, ...], sizes: array[int] | None, bound: int) -> None:
        self.prefix = prefix
        self.sizes = sizes
        self.bound = bound
        self.position = 0
        self.choice = 1

    def left(self) -> int:
        """Decision points whose children are still to be made."""
        return (1 if self.sizes is None else len(self.sizes)) - self.position

    def take(self) -> tuple[int, ...]:
        sizes = self.sizes
        if sizes is None:
            self.position = 1
            return self.prefix
        prefix = (*self.prefix, *(0,) * self.position, self.choice)
        self.choice += 1
        if self.choice > sizes[self.position]:
            self.position += 1
            self.choice = 1
        return prefix


class Bounded:
    """Systematic search by increasing number of non-FIFO decisions (``"bounded"``).

    Runs FIFO, then every schedule with one non-FIFO decision (any position,
    any choice), then every one with two, and so on (preemption / delay
    bounding, as in CHESS and SCTBench), until the budget of runs ends. It
    finds every bug that needs few unusual decisions, in the fewest runs that
    guarantee it; the search is exhausted when no schedule is left.

    Memory: the schedules still to run are kept as one record per run they
    extend (that run's number of choices at each of its decision points), so
    the queue grows by one small int per decision point per run, not by a
    schedule per choice. At most ``max_pending`` decision points are kept in
    all; past that, the points of the latest runs are dropped (the search then
    no longer covers its whole bound, and ``truncated`` says so).
    """

    name = "bounded"

    def __init__(self, seed: int = 0, max_bound: int = 3, max_pending: int = 1_000_000) -> None:
        self.seed: int = seed
        self.max_bound: int = max_bound
        self.max_pending: int = max_pending
        # the runs whose children are still to be made, lowest bound first (_Children
        # records; typed Any so that the reference docs do not name a private class)
        self.queue: deque[Any] = deque([_Children((), None, 0)])
        self.pending: int = 1  # decision points left in the queue's records
        self.truncated: bool = False
        self.prefix: tuple[int, ...] = ()
        self.bound: int = 0
        self.sizes: list[int] = []
        self.exhausted: bool = False

    def start_run(self, run: int) -> None:
        queue = self.queue
        if queue:
            head = queue[0]
            before = head.left()
            self.prefix, self.bound = head.take(), head.bound
            after = head.left()
            self.pending -= before - after
            if not after:
                queue.popleft()
        else:
            # exhausted: further runs are FIFO, a pure repetition
            self.exhausted = True
            self.prefix, self.bound = (), self.max_bound
        self.sizes = []

    def decide(self, point: DecisionPoint) -> int:
        return self._choose(point.kind, point.choices, point.index)

    def _choose(self, kind: str, choices: Sequence[str], index: int) -> int:
        self.sizes.append(len(choices))
        return self.prefix[index] if index < len(self.prefix) else 0

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        if self.bound >= self.max_bound or self.exhausted:
            return
        sizes = self.sizes[len(self.prefix) :]
        room = self.max_pending - self.pending
        if len(sizes) > room:
            sizes = sizes[: max(room, 0)]
            self.truncated = True
        if sizes:
            self.queue.append(_Children(self.prefix, array("I", sizes), self.bound + 1))
            self.pending += len(sizes)


class Portfolio:
    """Interleaves random walk, PCT of depths 1 to 3 and bounded search (``"portfolio"``).

    SCTBench (Thomson, Donaldson and Betts, PPoPP 2014) found that no single
    technique finds every bug quickly, and a portfolio finds more than any one
    of its members. Runs go in turn to: random, PCT depth 1, bounded, PCT
    depth 2, random, PCT depth 3; an exhausted bounded search gives its turns
    to the others. The default of :func:`~trioflow.testing.check_deterministic`.
    """

    name = "portfolio"

    def __init__(self, seed: int = 0) -> None:
        self.seed: int = seed
        rngs = random.Random(seed)

        def sub() -> int:
            return rngs.randrange(2**32)

        walk = RandomWalk(sub())
        self.bounded: Bounded = Bounded(sub())
        self.members: list[RandomWalk | PCT | Bounded] = [
            walk,
            PCT(sub(), 1),
            self.bounded,
            PCT(sub(), 2),
            walk,
            PCT(sub(), 3),
        ]
        self.pcts: list[PCT] = [member for member in self.members if isinstance(member, PCT)]
        self.turn: int = -1
        self.current: RandomWalk | PCT | Bounded = walk

    @property
    def member_name(self) -> str:
        """The name of the member running now (``"pct"`` with its depth: ``"pct(d=2)"``)."""
        current = self.current
        if isinstance(current, PCT):
            return f"pct(d={current.depth})"
        return current.name

    def start_run(self, run: int) -> None:
        while True:
            self.turn += 1
            self.current = self.members[self.turn % len(self.members)]
            if self.current is not self.bounded or self.bounded.queue:
                break
        self.current.start_run(run)

    def decide(self, point: DecisionPoint) -> int:
        return self.current.decide(point)

    def _choose(self, kind: str, choices: Sequence[str], index: int) -> int:
        return self.current._choose(kind, choices, index)

    def end_run(self, decisions: Sequence[int], steps: int) -> None:
        self.current.end_run(decisions, steps)
        current = self.current
        if isinstance(current, PCT) and current.went_fair:
            return  # (its length says how long it starved a task, not how long runs are)
        # every PCT member learns the run length from every run
        n = len(decisions)
        for member in self.pcts:
            if member.length < n:
                member.length = n


def make_strategy(strategy: object, seed: int | None) -> Strategy:
    """Build the strategy named by *strategy* (or check the object given), seeded by *seed*."""
    if isinstance(strategy, str):
        s = 0 if seed is None else seed
        if strategy == "random":
            return RandomWalk(s)
        if strategy == "pct":
            return PCT(s)
        if strategy == "bounded":
            return Bounded(s)
        if strategy == "portfolio":
            return Portfolio(s)
        raise ValueError(
            f"strategy must be one of {', '.join(map(repr, STRATEGY_NAMES))} or an object with "
            f"the methods of trioflow.testing.Strategy, got {strategy!r}"
        )
    if isinstance(strategy, RandomWalk | PCT | Bounded | Portfolio):
        return strategy  # (a built-in one: no need for the protocol's slower check)
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be a name such as 'portfolio' or an object with start_run(), "
            f"decide() and end_run() (see trioflow.testing.Strategy), got {strategy!r} "
            f"(a {type(strategy).__name__})"
        )
    return strategy


def _below(getrandbits: Callable[[int], int], n: int) -> int:
    # random.Random._randbelow_with_getrandbits, as the harness writes it out (see fast_paths)
    k = n.bit_length()
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return r


def _same_draws() -> bool:
    """Whether :func:`_below` draws what ``Random._randbelow`` does on this Python."""
    ours, theirs = random.Random(1), random.Random(1)
    return all(
        _below(ours.getrandbits, n) == theirs._randbelow(n)  # type: ignore[attr-defined]
        for n in [*range(1, 70), *range(1, 70)]
    )


_WRITTEN_OUT = _same_draws()


#: What :func:`fast_paths` gives for a strategy it knows no shortcut for.
_NO_SHORTCUT: Final = (None, None, None, sys.maxsize, None, None)


def fast_paths(strategy: Strategy | None, scheduled: int) -> tuple[Any, ...]:
    """The shortcuts the harness may take with the built-in strategies (not subclasses,
    which may override ``decide``), asked after ``start_run`` (for a :class:`Portfolio`,
    those of the member running the run), after *scheduled* explicit decisions:

    * ``decide``: the strategy's ``decide`` without a :class:`DecisionPoint`,
      called as ``decide(kind, choices, index)``, returning a valid decision;
    * ``draw``: for :class:`RandomWalk`, the draw of a batch decision among ``n``
      choices, called with ``n + 1`` (what its ``_choose`` does, one call less);
    * ``bits``: for :class:`RandomWalk`, when ``Random._randbelow`` is the
      rejection sampling of ``getrandbits`` that :func:`_below` writes out
      (checked at import): its generator's ``getrandbits``, for the harness to
      draw the same decisions without calling a Python function;
    * ``zeros_from``: from which decision index on every batch decision is ``0``
      (with no strategy, every one after the schedule; a :class:`Bounded` search
      answers ``0`` past its prefix; others: never, ``sys.maxsize``);
    * ``zero_sizes``: the list where a :class:`Bounded` search records the number
      of choices of each decision it is asked;
    * ``sticky``: for :class:`PCT`, the decision indexes at which it may not repeat
      its last decision when the choices are the same. The harness asks when the
      task the last decision ran alone is runnable again and nothing else
      changed: without a change point at the index, that task still has the
      highest priority, so PCT would decide the same.

    Each is ``None`` where there is no shortcut.
    """
    if strategy is None:
        return None, None, None, scheduled, None, None
    member: Any = strategy.current if type(strategy) is Portfolio else strategy
    kind = type(member)
    if kind is RandomWalk:
        rng = member.rng
        return member._choose, rng._randbelow, rng.getrandbits if _WRITTEN_OUT else None, sys.maxsize, None, None
    if kind is PCT:
        return member._choose, None, None, sys.maxsize, None, member.changes
    if kind is Bounded:
        return member._choose, None, None, max(scheduled, len(member.prefix)), member.sizes, None
    return _NO_SHORTCUT


def strategy_name(strategy: Strategy) -> str:
    """A short name for reports: the built-in name (with the portfolio's member), or the class."""
    if isinstance(strategy, Portfolio):
        return f"portfolio:{strategy.member_name}"
    if isinstance(strategy, PCT) and strategy.depth is not None:
        return f"pct(d={strategy.depth})"
    name = getattr(strategy, "name", None)
    return name if isinstance(name, str) else type(strategy).__name__
