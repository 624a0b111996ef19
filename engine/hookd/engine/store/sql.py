"""One way to talk SQL to either backend: operations are written once, against ``Tx``.

Every operation in ``store/`` takes a ``Tx`` and writes portable SQL with ``?`` placeholders:
standard SQL both SQLite and PostgreSQL run the same way (``RETURNING``, ``ON CONFLICT``,
``COUNT(*) FILTER``, ``CASE`` instead of the scalar ``MAX``/``GREATEST`` that differ). A
``Dialect`` turns the placeholders into the driver's and sorts the driver's exceptions into the
few kinds the engine reacts to, so no code outside a backend module imports ``sqlite3`` or
``psycopg``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar


class StoreFault(Exception):
    """The store cannot be written (or read) now: a full disk, an I/O error, a database file
    that was removed or replaced, a lost connection. Not the caller's fault, and not a bug: the
    engine holds its work and tries again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Conflict(Exception):
    """The transaction lost a deadlock or a serialization conflict to a concurrent one (another
    node's): nobody's fault; the whole transaction is run again."""


class UniqueViolation(Exception):
    """An insert or update hit a unique constraint. ``constraint`` names it when the driver says."""

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(message)
        self.constraint = constraint


class Deferred(Protocol):
    def flush(self, tx: Tx) -> None: ...


D = TypeVar("D", bound=Deferred)


class Cursor(Protocol):
    """The part of a DB-API cursor operations use."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends, as data and two small functions."""

    name: str
    #: Turns ``?`` placeholders into the driver's.
    translate: Callable[[str], str]
    #: Sorts a driver exception: a ``StoreFault``, a ``Conflict``, a ``UniqueViolation``, or None
    #: (a bug, re-raised as it is).
    classify: Callable[[BaseException], Exception | None]
    #: Executes many parameter rows at once.
    executemany: Callable[[Any, str, list[Sequence[Any]]], None]
    #: Appended to a SELECT whose rows are read to be written back in the same transaction:
    #: "" where one writer has the database to itself (SQLite), " FOR UPDATE" where writers
    #: of several nodes may meet (PostgreSQL).
    for_update: str = ""
    #: The same for rows only read, which must not change or go before the transaction ends.
    for_share: str = ""

    def indexed_by(self, index: str) -> str:
        """`` INDEXED BY index`` after a table name on SQLite, nothing elsewhere.

        hookd never runs ANALYZE, so SQLite plans without statistics and, for a few queries,
        prefers an index that looks selective on paper (ten rows per value, by its default
        guess) to the one that fits: the query then reads and sorts far more rows than it
        returns, in the writer's transaction. PostgreSQL plans from the statistics autovacuum
        keeps and takes no hints. The index must exist and fit the query (a partial index: its
        condition word for word), or SQLite refuses the statement: tests plan each one."""
        return f" INDEXED BY {index}" if self.name == "sqlite" else ""


def marks(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``count`` values (at least one)."""
    return ", ".join("?" * max(count, 1))


@functools.lru_cache(maxsize=1024)
def percent_placeholders(sql: str) -> str:
    """``?`` to ``%s``: the SQL texts here never hold a literal ``?`` or ``%``."""
    return sql.replace("?", "%s")


def same_sql(sql: str) -> str:
    return sql


@dataclass
class Tx:
    """A connection inside one transaction (or one read), as every operation sees it.

    ``notify`` queues a notification that the backend sends as part of the commit (PostgreSQL's
    NOTIFY is transactional: it reaches listeners only if, and when, the data does). ``memo`` is
    scratch space that lives as long as the transaction, for checks made once per transaction.
    """

    conn: Any
    dialect: Dialect
    notifications: dict[str, set[str]] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    pending: dict[str, Deferred] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.dialect.name

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            cursor: Cursor = self.conn.execute(self.dialect.translate(sql), params)
        except Exception as error:
            kind = self.dialect.classify(error)
            if kind is None:
                raise
            raise kind from error
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if not batch:
            return
        try:
            self.dialect.executemany(self.conn, self.dialect.translate(sql), batch)
        except Exception as error:
            kind = self.dialect.classify(error)
            if kind is None:
                raise
            raise kind from error

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row as a tuple, or None."""
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        cursor = self.execute(sql, params)
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def deferred(self, name: str, factory: Callable[[], D]) -> D:
        """A write gathered across the transaction's operations and flushed once before it
        commits (health counts, say); created by ``factory`` on first use."""
        value = self.pending.get(name)
        if value is None:
            value = self.pending[name] = factory()
        return value  # type: ignore[return-value]

    def notify(self, channel: str, payload: str) -> None:
        """Queue ``payload`` for ``channel``; duplicates within a transaction are sent once."""
        self.notifications.setdefault(channel, set()).add(payload)
