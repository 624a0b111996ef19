"""The embedded backend: one SQLite file in WAL mode, through sqlite-utils.

Connections run in autocommit mode (``isolation_level=None``) so transactions are exactly the
``BEGIN IMMEDIATE`` / ``COMMIT`` the writer issues; the writer's is the only connection that
writes. ``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a process
crash (``kill -9``); ``FULL`` also covers power loss.

Two faults get special care, because both once made hookd misbehave:
- A full disk. SQLite answers SQLITE_FULL; the writer holds its work and retries. The WAL file
  never shrinks on its own (space it holds is space the database cannot grow into), so it is
  checkpointed as soon as it outgrows ``JOURNAL_SIZE_LIMIT``, the next commit starts it over
  and truncates it to that size, and ``recover`` truncates it entirely: that is what turns
  freed disk space into room for new events.

Small commits run on the event loop's thread (a worker thread costs more than the commit);
checkpoints, the part of writing that waits on the disk, never do: commits do not checkpoint,
``maintain`` does, in a worker thread, between two of the writer's commits.
- A database file removed or replaced under a running hookd (``rm -rf`` of its folder). SQLite
  keeps writing to the unlinked file and every write "succeeds" into nothing. The file's identity
  (device and inode) is taken at open and checked before every commit: once the path no longer
  names that file, nothing more is acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from hookd.engine.store.backend import StartupError
from hookd.engine.store.sql import Dialect, StoreFault, Tx, UniqueViolation, same_sql
from hookd.engine.store.sqlite_schema import SchemaTooNew, migrate

T = TypeVar("T")

#: WAL bytes kept after a checkpoint; beyond this the file is truncated, so space comes back.
JOURNAL_SIZE_LIMIT = 1024 * 1024

# Primary result codes (https://www.sqlite.org/rescode.html); extended codes keep them in the low byte.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_CONSTRAINT = 19
_SQLITE_NOTADB = 26
_SQLITE_CONSTRAINT_PRIMARYKEY = 1555
_SQLITE_CONSTRAINT_UNIQUE = 2067

_FAULTS = {
    _SQLITE_BUSY: "the database is locked by another process",
    _SQLITE_LOCKED: "the database is locked",
    _SQLITE_READONLY: "the database is read-only",
    _SQLITE_IOERR: "disk I/O error",
    _SQLITE_CORRUPT: "the database file is corrupt",
    _SQLITE_FULL: "the disk is full",
    _SQLITE_CANTOPEN: "the database file cannot be opened",
    _SQLITE_NOTADB: "the file is not a SQLite database",
}


def _classify(error: BaseException) -> Exception | None:
    if not isinstance(error, sqlite3.Error):
        return None
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    if code in (_SQLITE_CONSTRAINT_UNIQUE, _SQLITE_CONSTRAINT_PRIMARYKEY):
        # "UNIQUE constraint failed: webhooks.resource, ..." names the table first.
        table = str(error).partition(": ")[2].partition(".")[0]
        return UniqueViolation(table, str(error))
    reason = _FAULTS.get(code & 0xFF)
    if reason is not None:
        return StoreFault(reason)
    return None


def _executemany(conn: Any, sql: str, rows: list[Any]) -> None:
    conn.executemany(sql, rows)


DIALECT = Dialect(name="sqlite", translate=same_sql, classify=_classify, executemany=_executemany)


def _create_private(path: Path) -> None:
    """Create the database file owner-only before SQLite does; it holds signing secrets."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def _connect(path: Path, synchronous: str, *, query_only: bool = False) -> sqlite3.Connection:
    # check_same_thread=False: each connection is used by one worker thread at a time, handed
    # over under a limiter, never concurrently. A statement cache above the default 128: merged
    # writes (delivery_ops.record_successes) have one text per number of rows.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not query_only:
        # Pages that retention frees can be given back to the file system (retention_ops.py).
        # Only a database without tables takes this, and switching to WAL below already writes
        # its first page: so it comes first. A database created before stays as it was (NONE):
        # its freed pages are reused by new rows, but the file never shrinks.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    # Commits never checkpoint (they may run on the event loop's thread); ``maintain`` does, in
    # a worker thread, when the WAL outgrows its limit and every second while there are commits.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    if query_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def _startup_error(path: Path, error: BaseException) -> StartupError:
    if isinstance(error, SchemaTooNew):
        return StartupError(str(error))
    if isinstance(error, OSError):
        return StartupError(f"cannot open database {path}: {error.strerror or error}")
    kind = _classify(error)
    reason = kind.reason if isinstance(kind, StoreFault) else str(error)
    return StartupError(f"cannot open database {path}: {reason}")


class SqliteBackend:
    """One file; one writing connection and a few read-only ones."""

    dialect = DIALECT
    shared = False
    inline_writes = True

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.description = f"sqlite:{self.path}"
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._free: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None

    def open(self, readers: int) -> None:
        try:
            _create_private(self.path)
            self._writer = _connect(self.path, self._synchronous)
            migrate(sqlite_utils.Database(self._writer), DIALECT)
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)
            self._readers = [_connect(self.path, self._synchronous, query_only=True) for _ in range(readers)]
        except (OSError, sqlite3.Error, SchemaTooNew) as error:
            self.close()
            raise _startup_error(self.path, error) from error
        self._free = list(self._readers)

    def close(self) -> None:
        for conn in [*self._readers, self._writer]:
            if conn is not None:
                conn.close()
        self._readers, self._free, self._writer = [], [], None

    def _check_identity(self) -> None:
        """Refuse to commit into a file that is no longer the one at our path."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise StoreFault(f"the database file {self.path} was removed; restore it and restart hookd") from None
        except OSError as error:
            raise StoreFault(f"the database file {self.path} cannot be checked: {error.strerror}") from error
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise StoreFault(f"the database file {self.path} was replaced; restart hookd to use the new one")

    def write(self, body: Callable[[Tx], T]) -> T:
        conn = self._writer
        assert conn is not None, "backend not open"
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = body(Tx(conn, DIALECT))
            self._check_identity()
            conn.execute("COMMIT")
            return result
        except BaseException as error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite rolls back by itself when the disk fails
                    conn.execute("ROLLBACK")
            kind = _classify(error)
            if isinstance(kind, StoreFault):
                raise kind from error
            raise

    def read(self, body: Callable[[Tx], T]) -> T:
        with self._lock:
            conn = self._free.pop()
        try:
            return body(Tx(conn, DIALECT))
        finally:
            with self._lock:
                self._free.append(conn)

    def wants_maintenance(self) -> bool:
        """The WAL has grown past its limit since it was last started over."""
        try:
            return os.stat(self._wal).st_size > JOURNAL_SIZE_LIMIT
        except OSError:
            return False

    def maintain(self) -> None:
        """Checkpoint the WAL into the database (the writer's next commit then starts it over
        and truncates it). Runs between two commits, on the writer's connection."""
        assert self._writer is not None
        try:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:
            kind = _classify(error)
            if isinstance(kind, StoreFault):
                raise kind from error
            raise

    def recover(self) -> None:
        """Give the WAL's space back (a full disk may just have been freed) and check the file."""
        self._check_identity()
        assert self._writer is not None
        # Readers still on old pages, or still no space: the next try will do it.
        with contextlib.suppress(sqlite3.Error):
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
