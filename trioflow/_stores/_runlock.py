"""Run locks across processes for file stores: a run id runs in one process at a time.

Each database file has a lock file beside it (``<database>-runs.lock``); a run
holds an exclusive POSIX record lock (:func:`fcntl.lockf`) on one byte of it,
at an offset derived from the run id. The operating system drops a process's
locks when it dies, so a crashed run never leaves a stale lock. Record locks
belong to the process, and closing any descriptor of the file drops all of
them: so a process keeps one descriptor per lock file, shared by every store
object over the same database, and closes it only when it holds no lock there.
Within one process, runs are kept apart before this (``_durable``).

Where :mod:`fcntl` does not exist (Windows), runs are kept apart within a
process only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable

from .._exceptions import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["lock_run"]

_guard = threading.Lock()
_files: dict[str, list[int]] = {}  # lock file -> [descriptor, locks held]


def _offset(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:7], "big")


def lock_run(database: str, run_id: str) -> Callable[[], None]:
    """Take run ``run_id``'s lock beside the database file ``database``; return what releases it.

    Does not block.

    Raises:
        StoreError: another process holds it (the run is going on there).
    """
    if fcntl is None:
        return _nothing
    path = f"{database}-runs.lock"
    offset = _offset(run_id)
    with _guard:
        entry = _files.get(path)
        if entry is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open the run lock file {path!r}: {exc}") from exc
            entry = _files[path] = [fd, 0]
        fd = entry[0]
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if entry[1] == 0:
                del _files[path]
                os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise StoreError(f"cannot lock run {run_id!r} in {path!r}: {exc}") from exc
            raise StoreError(
                f"run {run_id!r} is already running in another process (recording to {database!r}); "
                f"wait for it to end before resuming it, or give this run another run_id"
            ) from exc
        entry[1] += 1
    released = False

    def release() -> None:
        nonlocal released
        with _guard:
            if released:
                return
            released = True
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
            entry[1] -= 1
            if entry[1] == 0:
                del _files[path]
                os.close(fd)

    return release


def _nothing() -> None:
    return None
