"""What crosses a process boundary: a step's arguments, result, exception and usage.

Used by the runners that call a step's function in another process (a local
worker process, a Dask worker). The caller encodes each argument on its own,
so that one that cannot be pickled is named; :func:`call_in_worker` runs in the
worker with :func:`trioflow.current_step` set, and returns a small tuple
(:data:`Reply`) the caller turns back into a value or an exception with
:func:`decode_reply`. A value, argument or exception that cannot cross is a
:class:`TypeError` naming the step, what could not cross and its type.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ._context import StepContext, _current
from ._exceptions import add_note

# ("ok", (pickled value, its type's name), usage, "")
# | ("raised", (pickled exception, its type's name), usage, traceback text)
# | ("cannot", message, usage, traceback text)
Reply = tuple[str, Any, dict[str, float], str]


def _codec(name: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if name == "cloudpickle":
        import cloudpickle  # type: ignore[import-untyped,import-not-found,unused-ignore]

        dumps: Callable[[Any], bytes] = cloudpickle.dumps
        return dumps, pickle.loads
    return _dumps, pickle.loads


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _label(step: StepContext) -> str:
    return step.name if step.item is None else f"{step.name}[{step.item}]"


def encode_kwargs(
    kwargs: Mapping[str, Any], step: StepContext, codec: str, where: str
) -> dict[str, tuple[bytes, str]]:
    """Each argument pickled on its own, with the name of its type.

    Raises:
        TypeError: an argument cannot be pickled (names the step, the parameter and its type).
    """
    dumps = _codec(codec)[0]
    encoded: dict[str, tuple[bytes, str]] = {}
    for name, value in kwargs.items():
        try:
            encoded[name] = (dumps(value), type(value).__qualname__)
        except Exception as exc:
            raise TypeError(
                f"step {_label(step)!r}: parameter {name!r} (a {type(value).__qualname__}) cannot be "
                f"sent to {where}: {type(exc).__name__}: {exc}"
            ) from exc
    return encoded


def call_in_worker(
    fn: Callable[..., Any],
    codec: str,
    name: str,
    attempt: int,
    item: int | None,
    run_id: str | None,
    args: Mapping[str, tuple[bytes, str]],
) -> Reply:
    """Run in the worker: decode the arguments, call ``fn`` with ``current_step()`` set."""
    dumps, loads = _codec(codec)
    usage: dict[str, float] = {}
    kwargs: dict[str, Any] = {}
    for key, (data, type_name) in args.items():
        try:
            kwargs[key] = loads(data)
        except Exception as exc:
            return ("cannot", f"parameter {key!r} (a {type_name}) cannot be unpickled in the worker: "
                    f"{type(exc).__name__}: {exc}", usage, "")
    token = _current.set(StepContext(name, attempt, item, run_id, usage))
    try:
        value = fn(**kwargs)
    except Exception as exc:
        text = traceback.format_exc()
        try:
            data = dumps(exc)
            loads(data)  # an exception that pickles may still not unpickle (required __init__ args)
        except Exception as why:
            return ("cannot", f"exception {type(exc).__qualname__}({_short(exc)}) cannot be sent back "
                    f"from the worker: {type(why).__name__}: {why}", usage, text)
        return ("raised", (data, type(exc).__qualname__), usage, text)
    finally:
        _current.reset(token)
    try:
        data = dumps(value)
    except Exception as exc:
        return ("cannot", f"result (a {type(value).__qualname__}) cannot be sent back from the "
                f"worker: {type(exc).__name__}: {exc}", usage, "")
    return ("ok", (data, type(value).__qualname__), usage, "")


def decode_reply(reply: Reply, step: StepContext, where: str) -> Any:
    """The value the worker returned, or raise what it raised; add its usage to the step's.

    Raises:
        TypeError: something could not cross (names the step, what and its type).
        Exception: the step function's own exception, with a note on where it was raised.
    """
    kind, payload, usage, text = reply
    if usage:
        step.add_usage(**usage)
    label = _label(step)
    if kind == "ok":
        data, type_name = payload
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise TypeError(
                f"step {label!r}: result (a {type_name}) cannot be unpickled here: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if kind == "raised":
        data, type_name = payload
        try:
            error = pickle.loads(data)
        except Exception as exc:
            raise TypeError(
                f"step {label!r}: exception (a {type_name}) raised in {where} cannot be "
                f"unpickled here: {type(exc).__name__}: {exc}"
            ) from exc
        add_note(error, f"trioflow: raised by step {label!r} in {where}; its traceback there:\n{text.rstrip()}")
        raise error
    error = TypeError(f"step {label!r}: {payload}")
    if text:
        error.add_note(f"trioflow: the traceback in {where}:\n{text.rstrip()}")
    raise error


def _short(exc: BaseException) -> str:
    text = str(exc)
    return repr(text if len(text) <= 60 else text[:57] + "...")
