"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started on 127.0.0.1.

``postgres_server`` (session-scoped) runs ``initdb`` in a temporary data
directory as a non-root user (the ``postgres`` user when the tests run as
root, as in CI) and starts the server on a free port; ``postgres_dsn`` gives
each test a database of its own. A missing package is an error that says how
to install it (``.ci/run`` installs it), never a skipped test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bindir() -> Path:
    for pattern in ("/usr/lib/postgresql/*/bin",):
        found = sorted(glob.glob(pattern), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
        if found:
            return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "the PostgreSQL tests need a PostgreSQL server: install Debian's package with "
        "`apt-get install -y postgresql` (.ci/run does so when it is missing)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = _bindir()
        self.datadir = Path(tempfile.mkdtemp(prefix="trioflow-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            user = pwd.getpwnam("postgres")
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self._run("initdb", "-D", str(self.datadir), "-U", "trioflow", "--auth=trust", "-E", "UTF8", "--no-sync")
        # the tests kill clients, never the server: it need not sync (durable=True: the defaults)
        options = f"-p {self.port} -h 127.0.0.1 -k {self.datadir} -c max_connections=200"
        if not durable:
            options += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.datadir / "log"), "-w", "start")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, str(self.bindir / tool), *args], check=True, capture_output=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=trioflow dbname={dbname}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    server = Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: Server) -> str:
    """A database of the test's own on the session's server."""
    return postgres_server.new_database()
