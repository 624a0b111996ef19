"""A throwaway PostgreSQL server for the suite, from the machine's PostgreSQL binaries.

``initdb`` and ``pg_ctl`` run in a temporary folder, the server listens on a free loopback port
and every test gets a database of its own. initdb refuses to run as root, so as root the server
runs as the ``postgres`` system user that Debian's package creates. If the server cannot start,
the tests that need it fail: they never skip (``make test`` installs PostgreSQL when missing).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "hookd"


def _bin_dir() -> Path:
    """Where initdb and pg_ctl live: $HOOKD_PG_BIN, pg_config's answer, or Debian's newest."""
    if os.environ.get("HOOKD_PG_BIN"):
        return Path(os.environ["HOOKD_PG_BIN"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL's initdb was not found: install the postgresql package (make test does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Start once per test session; ``new_database`` for each test.

    ``durable`` keeps PostgreSQL's crash safety on (fsync), as a benchmark must; the suite
    turns it off, since a crash of the machine is not what it tests.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="hookd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._bin = _bin_dir()
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb will not run as root; the postgres user owns the folder and runs the server.
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o755)

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresServer:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                *(() if self.durable else ("-c fsync=off", "-c full_page_writes=off")),
                "-c max_connections=400",
                "-c shared_buffers=64MB",
            ]
        )
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"hookd_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
