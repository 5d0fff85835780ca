"""What the harness installs in trio for the length of a run.

trio's module-global random generator (whose ``shuffle`` becomes the
controller's decisions), the run's instrument table (the controller's hooks),
and the hooks on worker-thread calls and on :class:`trio.Condition`'s notifies;
:func:`install` and :func:`restore` put them in place and take them away.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio
import trio.lowlevel
from trio._core import _instrumentation as _trio_instrumentation
from trio._core import _run as _trio_run

from ._threads import install_thread_hook, restore_thread_hook
from ._waitfor import install_notify_hook, restore_notify_hook

if TYPE_CHECKING:
    from ._control import Controller

__all__ = ["ScheduleRandom", "active", "install", "install_instruments", "release", "restore"]


class ScheduleRandom(random.Random):
    """A :class:`random.Random` whose ``shuffle`` asks a :class:`Controller`.

    Installed as ``trio._core._run._r`` for the duration of one run. Every other
    method behaves like a ``Random`` seeded with 0, so it is deterministic too
    (seeded when first used: seeding costs more than many a short run, and
    trio draws from it only to offset a :class:`trio.lowlevel.SystemClock`
    made during the run).
    """

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._seeded = False
        self.gauss_next = None  # (what Random.__init__ sets besides the seed)

    def _draw(self) -> None:
        self._seeded = True
        self.seed(0)

    def random(self) -> float:
        if not self._seeded:
            self._draw()
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        if not self._seeded:
            self._draw()
        return super().getrandbits(k)

    def getstate(self) -> tuple[Any, ...]:
        if not self._seeded:
            self._draw()
        return super().getstate()

    def shuffle(self, x: Any) -> None:
        self._controller.order_batch(x)


class _Instruments(dict[str, dict[Any, None]]):
    """trio's instrument table for a run of the harness, a plain dict (as before trio 0.27).

    trio asks ``"hook" in runner.instruments`` before every task step, every
    reschedule and every wait for I/O, then calls :attr:`call`; since trio
    made its table a ``UserDict``, each ask is a call of a Python method. A
    dict answers them without one. And the controller needs its
    ``after_task_step`` only when a batch is done (to take the next batch at
    once, see :meth:`Controller.after_task_step`): :attr:`call` returns at
    once after the other steps. While the controller is the only instrument
    (the usual case), :attr:`call` is its ``instrument_call``, which does the
    hooks' work itself; instruments added during the run
    (``trio.lowlevel.add_instrument``) are called as trio calls them. The
    other methods are trio's own, with ``data`` the dict itself.
    """

    __slots__ = ("_controller", "call")

    #: What trio calls: ``call(hookname, *args)``.
    call: Callable[..., None]

    def __init__(self, table: dict[str, dict[Any, None]], controller: Controller, only_ours: bool) -> None:
        super().__init__(table)
        self._controller = controller
        if only_ours:
            self.call = controller.instrument_call
        else:
            self._choose_call()

    @property
    def data(self) -> dict[str, dict[Any, None]]:
        return self

    def _choose_call(self) -> None:
        only_ours = all(len(hooks) == 1 for hooks in self.values())
        self.call = self._controller.instrument_call if only_ours else self._call_each

    def _call_each(self, hookname: str, *args: object) -> None:
        for instrument in list(self[hookname]):
            try:
                if hookname == "after_task_step" and instrument is self._controller:
                    if not self._controller.current_batch:
                        self._controller.after_task_step(*args)
                else:
                    getattr(instrument, hookname)(*args)
            except BaseException:  # as trio does: disable it, and log
                self._disable(hookname, instrument)

    def _disable(self, hookname: str, instrument: Any) -> None:
        self.remove_instrument(instrument)
        _trio_instrumentation.INSTRUMENT_LOGGER.exception(
            "Exception raised when calling %r on instrument %r. Instrument has been disabled.",
            hookname,
            instrument,
        )

    def add_instrument(self, instrument: trio.abc.Instrument) -> None:
        _trio_instrumentation.Instruments.add_instrument(self, instrument)  # type: ignore[arg-type]
        self._choose_call()

    def remove_instrument(self, instrument: trio.abc.Instrument) -> None:
        _trio_instrumentation.Instruments.remove_instrument(self, instrument)  # type: ignore[arg-type]
        self._choose_call()


_HOOKS: Final = ("_all", "after_task_step", "before_io_wait", "task_exited", "task_spawned")


def release(controller: Controller) -> None:
    """Give trio back its own instrument table and batch order for the rest of the run.

    Called as the run's main task returns: what is left of the run is trio's own
    tasks shutting down, which the harness neither orders nor observes. The main
    task's exit is traced here, as its hook would have. :func:`restore` still
    undoes :func:`install` once ``trio.run`` is over.
    """
    runner = controller.runner
    if runner is None:
        return  # (the table was never replaced)
    task = controller.main_task
    if task is not None:
        controller.task_exited(task)
    table = controller.trio_instruments
    if table is not None:
        runner.instruments = table
    if _saved:
        rng, allow = _saved[-1]
        _trio_run._r = rng
        setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", allow)  # noqa: B010 (it is Final)


def install_instruments(controller: Controller) -> None:
    """Give the running trio loop an :class:`_Instruments` table with the controller's hooks.

    Called from the main task's first step: it is labelled here (its spawn
    came before the table). trio's own table is not used, so that trio.run
    spends nothing on setting it up.
    """
    runner = _trio_run.GLOBAL_RUN_CONTEXT.runner
    controller.runner = runner
    current: Any = runner.instruments  # (a dict itself before trio 0.27)
    controller.trio_instruments = current
    # (the same objects for the whole run: read at every batch)
    controller.runq = runner.runq
    controller.deadlines = runner.deadlines
    controller.callbacks = runner.entry_queue.queue
    controller.idempotent_callbacks = runner.entry_queue.idempotent_queue
    io_manager = runner.io_manager
    registered = getattr(io_manager, "_registered", None)
    if type(io_manager).__name__ == "EpollIOManager" and isinstance(registered, dict):
        controller.io_registered = registered
    # (the controller is the instrument: it has every hook trio calls, and the
    # table says which of them to call)
    theirs = getattr(current, "data", current)
    only_ours = not any(theirs.values())  # (the usual case: no other instrument)
    if only_ours:
        table = {name: {controller: None} for name in _HOOKS}
    else:
        table = {name: dict(hooks) for name, hooks in theirs.items()}
        for name in _HOOKS:
            table.setdefault(name, {})[controller] = None
    runner.instruments = _Instruments(table, controller, only_ours)  # type: ignore[assignment]
    controller.task_spawned(trio.lowlevel.current_task())


_saved: list[tuple[random.Random, bool]] = []
#: The controller of the run in progress, if any.
active: list[Controller] = []


def install(rng: ScheduleRandom) -> None:
    """Make trio's scheduler deterministic and driven by *rng*, remembering the old state."""
    active.append(rng._controller)
    _saved.append((_trio_run._r, _trio_run._ALLOW_DETERMINISTIC_SCHEDULING))
    _trio_run._r = rng
    setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 (it is Final)
    install_thread_hook()
    install_notify_hook(_lost_notify)


def _lost_notify(condition: trio.Condition) -> None:
    if active:
        active[-1].lost_notify(condition)


def restore() -> None:
    """Undo :func:`install`."""
    active.pop()
    if not active:
        restore_thread_hook()
        restore_notify_hook()
    rng, allow = _saved.pop()
    _trio_run._r = rng
    setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", allow)  # noqa: B010 (it is Final)
