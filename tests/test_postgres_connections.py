"""Every PostgreSQL connection hookd makes notices a database gone silent.

A frozen host or a network that drops packets without a reset cannot be staged on loopback
(the kernel answers keepalive probes for any local peer), so these tests read what matters
from the sockets themselves: the keepalive and unacknowledged-data timeouts the kernel will
enforce on the writer, the membership connection, the pooled readers and the listener.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.sql import Tx
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


def _fd(tx: Tx) -> int:
    return int(tx.conn.pgconn.socket)


@pytest.fixture
def opened(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[PostgresBackend]:
    query = getattr(request, "param", "")
    backend = PostgresBackend(postgres_server.new_database() + query)
    backend.open(readers=2)
    yield backend
    backend.close()


def _every_connection(backend: PostgresBackend) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {
        "writer": backend.write(lambda tx: _socket_settings(_fd(tx))),
        "membership": backend.control(lambda tx: _socket_settings(_fd(tx))),
        "reader": backend.read(lambda tx: _socket_settings(_fd(tx))),
    }
    listener = backend.listener(["hookd_test"])
    try:
        found["listener"] = _socket_settings(listener.fileno())
    finally:
        listener.close()
    return found


def test_every_connection_gives_up_on_a_silent_database_within_a_minute(opened: PostgresBackend) -> None:
    expected = {"keepalive": 1, "idle_s": 10, "interval_s": 5, "probes": 3, "unacknowledged_ms": 30_000}
    assert _every_connection(opened) == dict.fromkeys(["writer", "membership", "reader", "listener"], expected)


@pytest.mark.parametrize("opened", ["?keepalives_idle=42&tcp_user_timeout=5000"], indirect=True)
def test_settings_in_the_url_win(opened: PostgresBackend) -> None:
    for name, found in _every_connection(opened).items():
        assert (found["idle_s"], found["unacknowledged_ms"], found["probes"]) == (42, 5000, 3), name
