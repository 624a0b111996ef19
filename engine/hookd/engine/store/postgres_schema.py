"""The PostgreSQL schema, versioned like the SQLite one and kept in step with it.

Version 1 is the SQLite schema as of its version 4 (same tables, columns and indexes, so every
operation's SQL runs on both) plus the cluster's tables: ``nodes`` and ``slots``; version 2 is
SQLite's version 5 (``shared_schema.py``). The version
lives in ``schema_version``; migrations run under an advisory lock, so nodes starting together
migrate once, and a database newer than this code is refused.

Nodes of the release before keep running while the first node of the new one migrates (a rolling
upgrade), so a migration must not hold their writes: one that only adds indexes to tables in use
builds them with ``CREATE INDEX CONCURRENTLY``, which lets inserts and updates go on (a plain
``CREATE INDEX`` would queue every write to the table, on every node, for the whole build).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from hookd.engine.store import shared_schema
from hookd.engine.store.cluster_ops import SLOT_COUNT

#: Arbitrary constant naming hookd's migration lock: held while the schema's version is read
#: and changed (every release takes it, the ones before this code by waiting for it).
_MIGRATION_LOCK = 0x686F6F6B64
#: Held by a node of this release for its whole migration, so two of them take turns, including
#: while an index is built without ``_MIGRATION_LOCK`` (see ``migrate``).
_BUILD_LOCK = 0x686F6F6B65
#: How often a node waiting for another's migration tries the lock again.
_LOCK_POLL_S = 0.1


class SchemaTooNew(RuntimeError):
    """The database was written by a newer hookd; refusing to touch it."""


_V1 = [
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL UNIQUE,
        resource TEXT NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        auth TEXT,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_expires DOUBLE PRECISION,
        status TEXT NOT NULL,
        inactive_policy TEXT,
        description TEXT,
        rate_limit DOUBLE PRECISION,
        timeout_s DOUBLE PRECISION,
        create_time DOUBLE PRECISION,
        update_time DOUBLE PRECISION,
        UNIQUE (resource, event, url)
    )
    """,
    "CREATE SEQUENCE webhook_seq",
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        create_time DOUBLE PRECISION NOT NULL,
        envelope TEXT NOT NULL,
        idempotency_key TEXT,
        delivery_count INTEGER
    )
    """,
    "CREATE UNIQUE INDEX events_idempotency ON events(idempotency_key) WHERE idempotency_key IS NOT NULL",
    """
    CREATE TABLE deliveries (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        create_time DOUBLE PRECISION NOT NULL,
        update_time DOUBLE PRECISION NOT NULL
    )
    """,
    "CREATE INDEX deliveries_due ON deliveries(destination, next_attempt_at, id) WHERE state = 'PENDING'",
    "CREATE INDEX deliveries_webhook ON deliveries(webhook_id, id)",
    "CREATE INDEX deliveries_event ON deliveries(event_id)",
    "CREATE INDEX deliveries_state ON deliveries(state, id)",
    "CREATE INDEX deliveries_waiting ON deliveries(state, webhook_id, destination, attempt_count) "
    "WHERE state IN ('PENDING', 'HELD')",
    """
    CREATE TABLE attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id BIGINT NOT NULL,
        webhook_id TEXT NOT NULL,
        url TEXT NOT NULL,
        start_time DOUBLE PRECISION NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        status_code INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT NOT NULL,
        response_excerpt TEXT NOT NULL
    )
    """,
    "CREATE INDEX attempts_delivery ON attempts(delivery_id, id)",
    "CREATE INDEX attempts_time ON attempts(start_time)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # counts: {outcome: {latency slot: attempts}} as JSON (store/health_ops.py).
    """
    CREATE TABLE health_minutes (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        minute BIGINT NOT NULL,
        counts TEXT NOT NULL,
        changed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (kind, key, minute)
    )
    """,
    "CREATE INDEX health_minutes_minute ON health_minutes(minute)",
    "CREATE INDEX health_minutes_changed ON health_minutes(changed_at)",
    """
    CREATE TABLE health_hours (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        hour BIGINT NOT NULL,
        counts TEXT NOT NULL,
        PRIMARY KEY (kind, key, hour)
    )
    """,
    """
    CREATE TABLE health_last (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        last_success DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_failure DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (kind, key)
    )
    """,
    "CREATE INDEX health_last_updated ON health_last(updated_at)",
    "CREATE TABLE publishing (event_id TEXT PRIMARY KEY, create_time DOUBLE PRECISION NOT NULL)",
    # The cluster: nodes heartbeat here; each slot is leased to one node, and every claim bumps
    # its epoch (store/cluster_ops.py). Times are the database's clock, epoch seconds.
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        lease_expires_at DOUBLE PRECISION NOT NULL,
        live TEXT NOT NULL DEFAULT '{}'
    )
    """,
    """
    CREATE TABLE slots (
        slot INTEGER PRIMARY KEY,
        node_id TEXT,
        epoch BIGINT NOT NULL DEFAULT 0,
        expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        claimed_at DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    f"INSERT INTO slots (slot) SELECT generate_series(0, {SLOT_COUNT - 1})",
]


@dataclass(frozen=True)
class Migration:
    """One schema version's change. ``in_transaction``: applied in the transaction that records
    the new version; otherwise applied first, on its own, and safe to apply again after a crash
    between the two."""

    apply: Callable[[psycopg.Connection[Any]], None]
    in_transaction: bool = True


def _statements(statements: list[str]) -> Migration:
    def apply(conn: psycopg.Connection[Any]) -> None:
        for statement in statements:
            conn.execute(statement)

    return Migration(apply)


def _index_name(statement: str) -> str:
    """``deliveries_pings`` of ``CREATE INDEX deliveries_pings ON ...``."""
    words = statement.split()
    if words[:2] != ["CREATE", "INDEX"] or len(words) < 4 or words[3] != "ON":
        raise ValueError(f"not a plain CREATE INDEX: {statement!r}")
    return words[2]


def _concurrent_indexes(statements: list[str]) -> Migration:
    """Indexes added to tables in use, built without holding writes (``CREATE INDEX
    CONCURRENTLY``, outside any transaction). A build cut short (the node died, the connection
    dropped) leaves the index invalid: it is dropped and built again, and a valid one is kept."""
    names = [_index_name(statement) for statement in statements]

    def apply(conn: psycopg.Connection[Any]) -> None:
        for name, statement in zip(names, statements, strict=True):
            row = conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
                [name],
            ).fetchone()
            if row is not None and row[0]:
                continue
            if row is not None:
                conn.execute(f"DROP INDEX CONCURRENTLY {name}")
            conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1))

    return Migration(apply, in_transaction=False)


#: SQLite's version 5, word for word: ordering, auto-disable and retention.
_V2 = shared_schema.operations("DOUBLE PRECISION")

#: SQLite's version 6: ordered delivery (an index on deliveries).
_V3 = list(shared_schema.ORDERING)

#: SQLite's version 7: webhook versions.
_V4 = list(shared_schema.VERSIONS)

#: SQLite's version 8: pending pings by destination.
_V5 = list(shared_schema.PINGS)

MIGRATIONS: list[Migration] = [
    _statements(_V1),
    _statements(_V2),
    _concurrent_indexes(_V3),
    _statements(_V4),
    _concurrent_indexes(_V5),
]


def _lock(conn: psycopg.Connection[Any], key: int) -> None:
    """Take the advisory lock ``key``, trying rather than waiting: a session blocked in
    ``pg_advisory_lock`` holds a snapshot all the while, and an index build waits for every
    snapshot older than itself to end."""
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        if row and row[0]:
            return
        time.sleep(_LOCK_POLL_S)


def _unlock(conn: psycopg.Connection[Any], key: int) -> None:
    """Let go of ``key``; a session that has ended has let go of its locks already."""
    if not (conn.closed or conn.broken):
        conn.execute("SELECT pg_advisory_unlock(%s)", [key])


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Apply every migration the database has not seen; return the resulting version.

    Runs in a worker thread. An index built concurrently is built without ``_MIGRATION_LOCK``:
    a node of the release before that starts meanwhile waits for that lock in
    ``pg_advisory_lock``, and the build would wait for the waiting node's snapshot while the
    node waited for the lock (PostgreSQL would end the deadlock by failing the build). Without
    the lock, that node reads the version, finds nothing it knows to do, and starts."""
    _lock(conn, _BUILD_LOCK)
    locked = [_BUILD_LOCK]
    try:
        _lock(conn, _MIGRATION_LOCK)
        locked.append(_MIGRATION_LOCK)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = _version(conn)
        if version > len(MIGRATIONS):
            raise SchemaTooNew(f"database schema version {version} is newer than this hookd ({len(MIGRATIONS)})")
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            if not migration.in_transaction:
                locked.remove(_MIGRATION_LOCK)
                _unlock(conn, _MIGRATION_LOCK)
                migration.apply(conn)
                _lock(conn, _MIGRATION_LOCK)
                locked.append(_MIGRATION_LOCK)
            with conn.transaction():
                if _version(conn) >= number:
                    continue  # recorded meanwhile, by whoever held the lock: never move it back
                if migration.in_transaction:
                    migration.apply(conn)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [number])
        return len(MIGRATIONS)
    finally:
        for key in reversed(locked):
            _unlock(conn, key)
