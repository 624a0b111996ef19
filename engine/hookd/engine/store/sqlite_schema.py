"""The SQLite schema, versioned. Each migration runs once, in order, inside one transaction.

The version lives in ``PRAGMA user_version``; a database newer than this code is refused rather
than guessed at. ``postgres_schema.py`` keeps the PostgreSQL schema in step: the same tables,
columns and indexes, so every operation's SQL runs on both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

from hookd.engine.model import Outcome
from hookd.engine.store import shared_schema
from hookd.engine.store.health_ops import HealthCounts
from hookd.engine.store.sql import Dialect, Tx


def _v1(db: sqlite_utils.Database, dialect: Dialect) -> None:
    db["webhooks"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "seq": int,
            "resource": str,
            "event": str,
            "url": str,
            "auth": str,
            "secret": str,
            "previous_secret": str,
            "previous_secret_expires": float,
            "status": str,
            "inactive_policy": str,
            "description": str,
            "rate_limit": float,
            "timeout_s": float,
            "create_time": float,
            "update_time": float,
        },
        pk="id",
        not_null={"seq", "resource", "event", "url", "secret", "status"},
    )
    db["webhooks"].create_index(["resource", "event", "url"], unique=True)  # type: ignore[union-attr]
    db["webhooks"].create_index(["seq"], unique=True)  # type: ignore[union-attr]
    db["events"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "type": str,
            "create_time": float,
            "envelope": str,
            "idempotency_key": str,
            "delivery_count": int,
        },
        pk="id",
        not_null={"type", "create_time", "envelope"},
    )
    db.execute("CREATE UNIQUE INDEX events_idempotency ON events(idempotency_key) WHERE idempotency_key IS NOT NULL")
    db.execute(
        """
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            webhook_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            event_type TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt_count INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            create_time REAL NOT NULL,
            update_time REAL NOT NULL
        )
        """
    )
    # The actors' window onto the backlog: due deliveries of one destination, in order.
    db.execute("CREATE INDEX deliveries_due ON deliveries(destination, next_attempt_at, id) WHERE state = 'PENDING'")
    db.execute("CREATE INDEX deliveries_webhook ON deliveries(webhook_id, id)")
    db.execute("CREATE INDEX deliveries_event ON deliveries(event_id)")
    db.execute("CREATE INDEX deliveries_state ON deliveries(state, id)")
    db.execute(
        """
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id INTEGER NOT NULL,
            webhook_id TEXT NOT NULL,
            url TEXT NOT NULL,
            start_time REAL NOT NULL,
            duration_ms REAL NOT NULL,
            status_code INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT NOT NULL,
            response_excerpt TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX attempts_delivery ON attempts(delivery_id, id)")
    db.execute("CREATE INDEX attempts_time ON attempts(start_time)")


def _v2(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Health snapshots count the waiting deliveries per webhook and destination from this index
    # alone, without touching the table.
    db.execute(
        "CREATE INDEX deliveries_waiting ON deliveries(state, webhook_id, destination, attempt_count) "
        "WHERE state IN ('PENDING', 'HELD')"
    )


def _v3(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Webhook sequence numbers (the paging order) come from AUTOINCREMENT, which never reuses one.
    db.execute("CREATE TABLE webhook_seq (seq INTEGER PRIMARY KEY AUTOINCREMENT)")
    db.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('webhook_seq', (SELECT COALESCE(MAX(seq), 0) FROM webhooks))"
    )


def _v4(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Health counts written with the attempts, so a start loads these instead of every attempt of
    # the last day (store/health_ops.py); backfilled once from the attempts already stored.
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for table, unit, extra in (
        ("health_minutes", "minute", ", changed_at REAL NOT NULL"),
        ("health_hours", "hour", ""),
    ):
        # counts: {outcome: {latency slot: attempts}} as JSON (store/health_ops.py).
        db.execute(
            f"""
            CREATE TABLE {table} (
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                {unit} INTEGER NOT NULL,
                counts TEXT NOT NULL{extra},
                PRIMARY KEY (kind, key, {unit})
            ) WITHOUT ROWID
            """
        )
    db.execute("CREATE INDEX health_minutes_minute ON health_minutes(minute)")
    db.execute("CREATE INDEX health_minutes_changed ON health_minutes(changed_at)")
    db.execute(
        """
        CREATE TABLE health_last (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            last_success REAL NOT NULL DEFAULT 0,
            last_failure REAL NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX health_last_updated ON health_last(updated_at)")
    # Publishes whose fan-out is being written in several commits (store/delivery_ops.py).
    db.execute("CREATE TABLE publishing (event_id TEXT PRIMARY KEY, create_time REAL NOT NULL)")
    _backfill_health(db, dialect)


def _backfill_health(db: sqlite_utils.Database, dialect: Dialect) -> None:
    """The last day's stored attempts as health counts, once, when the tables are created."""
    counts = HealthCounts(streaks=False)  # failing_since comes with version 5
    for webhook_id, url, start, duration_ms, outcome, error in db.execute(
        "SELECT webhook_id, url, start_time, duration_ms, outcome, error FROM attempts WHERE start_time > ? "
        "ORDER BY id",
        [time.time() - 86400],
    ):
        counts.add(webhook_id, url, start, duration_ms, Outcome(outcome), error)
    if counts.cells:
        counts.flush(Tx(db.conn, dialect))


def _v5(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Ordering, auto-disable and retention (store/shared_schema.py; PostgreSQL's version 2).
    for statement in shared_schema.operations("REAL"):
        db.execute(statement)


def _v6(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Ordered delivery (store/shared_schema.py; PostgreSQL's version 3).
    for statement in shared_schema.ORDERING:
        db.execute(statement)


def _v7(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Webhook versions (store/shared_schema.py; PostgreSQL's version 4).
    for statement in shared_schema.VERSIONS:
        db.execute(statement)


def _v8(db: sqlite_utils.Database, dialect: Dialect) -> None:
    # Pending pings by destination (store/shared_schema.py; PostgreSQL's version 5).
    for statement in shared_schema.PINGS:
        db.execute(statement)


MIGRATIONS: list[Callable[[sqlite_utils.Database, Dialect], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer hookd; refusing to touch it."""


def migrate(db: sqlite_utils.Database, dialect: Dialect) -> int:
    """Apply every migration the database has not seen; return the resulting version."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise SchemaTooNew(f"database schema version {version} is newer than this hookd ({len(MIGRATIONS)})")
    for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            migration(db, dialect)
            db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return len(MIGRATIONS)
