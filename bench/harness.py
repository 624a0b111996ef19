"""Processes and measurements shared by the benchmark scenarios."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.server import HookdProcess

#: Flags every benchmark server gets: the local receiver is plain http on 127.0.0.1, and the
#: per-destination rate limit is lifted so that it does not cap the throughput being measured.
BENCH_FLAGS = ("--default-rate-limit", "100000", "--log-level", "warning")


class ReceiverProcess:
    """bench/receiver.py in a child process."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="hookd-bench-receiver-"))
        port_file = self._dir / "port"
        self.process = subprocess.Popen([sys.executable, "-m", "bench.receiver", str(port_file)])
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("receiver did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url("stats"), timeout=30) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url("reset"), method="POST"), timeout=30).read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    try:
        yield process
    finally:
        process.stop()


@contextmanager
def hookd(*flags: str) -> Iterator[HookdProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="hookd-bench-"))
    server = HookdProcess(workdir, *BENCH_FLAGS, *flags)
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop(timeout=60)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, all its threads together."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: the fields follow its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def server_pid(server: HookdProcess) -> int:
    assert server.process is not None
    return server.process.pid


def count_state(database: str | Path, state: str) -> int:
    """Deliveries in ``state``, read straight from the server's SQLite file."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", [state]).fetchone()[0])
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(interval)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def cpu_count() -> int:
    return os.cpu_count() or 1
