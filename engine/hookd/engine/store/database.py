"""Opening the SQLite file: permissions, pragmas and migrations.

Connections run in autocommit mode (``isolation_level=None``) so that transactions are exactly
the ``BEGIN`` / ``COMMIT`` the writer issues; the writer is the only connection that writes.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from hookd.engine.store.schema import migrate


def _create_private(path: Path) -> None:
    """Create the database file owner-only before SQLite does; it holds signing secrets."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def connect(path: Path, *, synchronous: str = "NORMAL", query_only: bool = False) -> sqlite_utils.Database:
    """Open one connection with the pragmas every hookd connection uses.

    WAL lets readers run beside the single writer. ``synchronous=NORMAL`` in WAL mode keeps every
    committed transaction across a process crash (``kill -9``); ``FULL`` also covers power loss.
    """
    _create_private(path)
    # check_same_thread=False: each connection is used by one trio worker thread at a time,
    # handed over under a limiter, never concurrently.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if query_only:
        conn.execute("PRAGMA query_only = ON")
    return sqlite_utils.Database(conn)


def open_database(path: Path, *, synchronous: str = "NORMAL") -> sqlite_utils.Database:
    """Open the writer's connection and bring the schema up to date."""
    db = connect(path, synchronous=synchronous)
    migrate(db)
    return db
