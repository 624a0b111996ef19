"""Every PostgreSQL connection hookd makes notices a database gone silent, and no session of
hookd's holds locks for long without working.

A frozen host or a network that drops packets without a reset cannot be staged on loopback
(the kernel answers keepalive probes for any local peer), so these tests read what matters
from the sockets themselves: the keepalive and unacknowledged-data timeouts the kernel will
enforce on the writer, the membership connection, the pooled readers and the listener.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.sql import StoreFault, Tx
from tests.support.postgres import PostgresServer


def _socket_settings(fd: int) -> dict[str, int]:
    """The TCP settings the kernel holds for the connection on ``fd``."""
    sock = socket.socket(fileno=socket.dup(fd))
    try:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "probes": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "unacknowledged_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


@pytest.fixture
def opened(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[PostgresBackend]:
    query = getattr(request, "param", "")
    backend = PostgresBackend(postgres_server.new_database() + query)
    backend.open(readers=2)
    yield backend
    backend.close()


def _every_connection(backend: PostgresBackend) -> dict[str, dict[str, Any]]:
    """What each kind of connection the backend makes holds: its socket's settings and its
    session's idle-in-transaction limit."""

    def settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute("SELECT current_setting('idle_in_transaction_session_timeout')").fetchone()
        assert row is not None
        return {**_socket_settings(int(conn.pgconn.socket)), "idle_in_transaction": row[0]}

    found: dict[str, dict[str, Any]] = {
        "writer": backend.write(lambda tx: settings(tx.conn)),
        "membership": backend.control(lambda tx: settings(tx.conn)),
        "reader": backend.read(lambda tx: settings(tx.conn)),
    }
    listener = backend.listener(["hookd_test"])
    try:
        found["listener"] = settings(listener._conn)
    finally:
        listener.close()
    return found


def test_every_connection_gives_up_on_a_silent_database_within_a_minute(opened: PostgresBackend) -> None:
    expected = {
        "keepalive": 1,
        "idle_s": 10,
        "interval_s": 5,
        "probes": 3,
        "unacknowledged_ms": 30_000,
        "idle_in_transaction": "2500ms",  # a quarter of the default lease
    }
    assert _every_connection(opened) == dict.fromkeys(["writer", "membership", "reader", "listener"], expected)


@pytest.mark.parametrize(
    "opened",
    [
        "?keepalives_idle=42&tcp_user_timeout=5000&options=-c%20idle_in_transaction_session_timeout%3D7s",
        "?options=-c%20idle_in_transaction_session_timeout%3D0",  # none at all, said so
    ],
    indirect=True,
)
def test_settings_in_the_url_win(opened: PostgresBackend) -> None:
    chosen = "7s" if "7s" in opened.url else "0"
    for name, found in _every_connection(opened).items():
        if chosen == "7s":
            assert (found["idle_s"], found["unacknowledged_ms"], found["probes"]) == (42, 5000, 3), name
        assert found["idle_in_transaction"] == chosen, name


def test_a_session_stopped_inside_a_transaction_lets_go_of_its_locks(postgres_server: PostgresServer) -> None:
    # What a node paused mid-heartbeat does: its transaction holds a row lock and sends nothing
    # more. Before, another node's claim waited for that lock until the paused node ran again.
    database = postgres_server.new_database()
    backend = PostgresBackend(database, lease_s=2.0)  # limit: 2 s (the floor)
    backend.open(readers=1)
    locked, taken = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def stop_holding_the_lock(tx: Tx) -> None:
        tx.all("SELECT version FROM schema_version FOR UPDATE")
        locked.set()
        taken.wait(timeout=30)  # stopped: no statement until the other session has the row
        tx.all("SELECT 1")

    def write() -> None:
        try:
            backend.write(stop_holding_the_lock)
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert locked.wait(timeout=10)
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("SET lock_timeout = '15s'")  # far longer than the limit
            with other.transaction():
                other.execute("SELECT version FROM schema_version FOR UPDATE")
        taken.set()
        writer.join(timeout=30)
        [error] = errors
        assert isinstance(error, StoreFault)  # the writer holds its work and tries again
        assert backend.write(lambda tx: tx.all("SELECT 1")) == [(1,)]  # on a new connection
    finally:
        taken.set()
        writer.join(timeout=30)
        backend.close()
