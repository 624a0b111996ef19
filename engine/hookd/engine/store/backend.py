"""What the engine needs from a database, whichever one runs.

Two backends implement it: ``sqlite.SqliteBackend`` (the embedded default, one node) and
``postgres.PostgresBackend`` (many nodes on one database). Both are synchronous and blocking:
the writer and the readers call them from trio worker threads, one transaction at a time per
connection, so the trio loop never waits on disk or network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from hookd.engine.store.sql import Dialect, Tx

T = TypeVar("T")


class Backend(Protocol):
    """A database the engine can write to from one writer and read from with a few readers."""

    dialect: Dialect
    #: Where the data lives, safe to log (no password).
    description: str
    #: Whether several nodes may share this database (and so need leases and notifications).
    shared: bool
    #: Whether a small transaction may run on the event loop's own thread (it never waits on
    #: the network or on another process's locks).
    inline_writes: bool

    def open(self, readers: int) -> None:
        """Connect, bring the schema up to date, and open ``readers`` read connections.

        Raises ``StartupError`` with a one-line reason when the database cannot be used.
        """

    def close(self) -> None: ...

    def write(self, body: Callable[[Tx], T]) -> T:
        """Run ``body`` in one transaction and commit; raises ``StoreFault`` when the database
        cannot be written now (nothing of ``body`` is then committed)."""

    def read(self, body: Callable[[Tx], T]) -> T:
        """Run ``body`` on a read connection (the caller bounds concurrency to ``readers``)."""

    def recover(self) -> None:
        """After a fault: free what can be freed (truncate the WAL) or reconnect."""

    def wants_maintenance(self) -> bool:
        """Whether ``maintain`` should run before the next commit (cheap: called after each)."""

    def maintain(self) -> None:
        """Housekeeping between two commits, in a worker thread (SQLite: checkpoint the WAL)."""


class NotificationSource(Protocol):
    """Notifications as they arrive: wait until ``fileno`` is readable, then ``drain``."""

    def fileno(self) -> int: ...

    def drain(self) -> list[tuple[str, str, list[str]]]:
        """(channel, origin node id, items) received so far; ``StoreFault`` once broken."""

    def close(self) -> None: ...


class SharedBackend(Backend, Protocol):
    """A database several nodes share: it carries membership and notifications too."""

    #: This node's id, put in front of every notification it sends.
    origin: str

    def control(self, body: Callable[[Tx], T]) -> T:
        """``write`` on a connection of its own, for membership (never behind the writer's batches)."""

    def listener(self, channels: Sequence[str]) -> NotificationSource:
        """A new connection that listens on ``channels`` (the caller closes it)."""


class StartupError(Exception):
    """The store cannot be opened; the message is one line for the operator."""


def open_backend(database: str, *, synchronous: str = "NORMAL", lease_s: float = 10.0) -> Backend:
    """The backend a ``--database`` value names: a ``postgresql://`` URL, else a SQLite file.
    ``lease_s``: the cluster's lease, which bounds how long a PostgreSQL session may hold locks
    without a statement."""
    if database.startswith(("postgresql://", "postgres://")):
        from hookd.engine.store.postgres import PostgresBackend

        return PostgresBackend(database, lease_s=lease_s)
    from hookd.engine.store.sqlite import SqliteBackend

    return SqliteBackend(database, synchronous=synchronous)
