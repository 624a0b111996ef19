"""The real hookd server, as a child process on an ephemeral loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hookd.client import HookdClient

#: Flags every test server gets: local receivers are plain http on 127.0.0.1.
LOCAL_DESTINATIONS = ("--allow-http", "--allow-destination", "127.0.0.0/8")

#: Makes the database a test's servers use when it names none: a fresh PostgreSQL database
#: while the suite runs a test against PostgreSQL (see conftest.py), else a SQLite file.
_database_factory: Callable[[], str] | None = None


def use_database_factory(factory: Callable[[], str] | None) -> None:
    global _database_factory
    _database_factory = factory


def default_database(workdir: Path) -> str:
    return _database_factory() if _database_factory is not None else str(workdir / "hookd.db")


class HookdProcess:
    """Start, stop, kill and restart hookd on one database (a SQLite file or a PostgreSQL URL)."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        local: bool = True,
        env: dict[str, str] | None = None,
        database: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.database = database or default_database(workdir)
        self.args = [*(LOCAL_DESTINATIONS if local else ()), *args]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        #: The --http-listen port (dashboard and Connect API), when that flag is among the args.
        self.http_port = 0
        self.log_path = workdir / "hookd.log"
        self._clients: list[HookdClient] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The base URL of the dashboard and the Connect API."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> HookdProcess:
        port_file = self.workdir / "port"
        http_port_file = self.workdir / "port.http"
        port_file.unlink(missing_ok=True)
        http_port_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hookd.server",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                self.database,
                "--port-file",
                str(port_file),
                *self.args,
            ],
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None:
                raise RuntimeError(f"hookd exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hookd did not start:\n{self.log()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.http_port = int(http_port_file.read_text()) if http_port_file.exists() else 0
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs: object) -> HookdClient:
        client = HookdClient(self.address, **kwargs)  # type: ignore[arg-type]
        self._clients.append(client)
        return client

    def health(self) -> int:
        with grpc.insecure_channel(self.address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(answer.status)

    def stop(self, timeout: float = 20.0) -> int:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def restart(self) -> HookdProcess:
        self.stop()
        return self.start()
