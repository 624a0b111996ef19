"""A store opened twice, as two nodes (or a paused node and the rest) see one database."""

from __future__ import annotations

import time
from collections.abc import Callable

from hookd.engine.store.backend import Backend, open_backend
from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.sqlite import SqliteBackend


def patient(url: str) -> str:
    """``url`` with no limit on how long a session may stand still inside a transaction: for a
    test that holds one open on purpose (hookd sets a quarter of the lease unless told)."""
    return f"{url}{'&' if '?' in url else '?'}options=-c%20idle_in_transaction_session_timeout%3D0"


def reopened(store: Backend, *, holds_transactions_open: bool = False) -> Backend:
    """The same database through connections of its own, as another node has (or a node that
    resumes after a pause, its transaction begun before it stopped)."""
    if isinstance(store, PostgresBackend):
        other = open_backend(patient(store.url) if holds_transactions_open else store.url)
    else:
        assert isinstance(store, SqliteBackend)
        other = open_backend(str(store.path))
    other.open(readers=1)
    return other


def wait_for_a_lock_wait(store: Backend, *, unless: Callable[[], bool] = lambda: False, timeout: float = 30.0) -> None:
    """Return once a session of ``store``'s PostgreSQL database waits for a lock, or ``unless()``."""
    waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + timeout
    while not unless() and not store.read(lambda tx: tx.scalar(waiting)):
        assert time.monotonic() < deadline, "no session waited for a lock"
        time.sleep(0.01)
