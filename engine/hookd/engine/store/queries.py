"""Read queries. Each takes a connection and runs in a reader's worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlite_utils

from hookd.engine.errors import NotFound
from hookd.engine.jobs import Job
from hookd.engine.model import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    Status,
    Webhook,
)
from hookd.engine.store.rows import (
    attempt_from_row,
    delivery_from_row,
    event_from_row,
    webhook_from_row,
)


@dataclass(frozen=True)
class WebhookFilter:
    """ListWebhooks' filters; empty strings and None match everything."""

    resource: str = ""
    event: str = ""
    status: Status | None = None
    query: str = ""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def all_webhooks(db: sqlite_utils.Database) -> list[Webhook]:
    return [webhook_from_row(row) for row in db.query("SELECT * FROM webhooks ORDER BY seq")]


def list_webhooks(
    db: sqlite_utils.Database, filters: WebhookFilter, after_seq: int | None, limit: int
) -> tuple[list[tuple[int, Webhook]], int]:
    """A page of (seq, webhook) in creation order, and how many match in all."""
    where: list[str] = []
    params: list[Any] = []
    if filters.resource:
        where.append("resource = ?")
        params.append(filters.resource)
    if filters.event:
        where.append("event = ?")
        params.append(filters.event)
    if filters.status is not None:
        where.append("status = ?")
        params.append(filters.status.value)
    if filters.query:
        pattern = f"%{_escape_like(filters.query.lower())}%"
        where.append(
            "(lower(resource) LIKE ? ESCAPE '\\' OR lower(event) LIKE ? ESCAPE '\\' "
            "OR lower(url) LIKE ? ESCAPE '\\' OR lower(resource || '.' || event) LIKE ? ESCAPE '\\')"
        )
        params.extend([pattern] * 4)
    clause = " AND ".join(where) or "1"
    total = db.execute(f"SELECT COUNT(*) FROM webhooks WHERE {clause}", params).fetchone()[0]
    page_clause = clause + (" AND seq > ?" if after_seq is not None else "")
    page_params = params + ([after_seq] if after_seq is not None else [])
    rows = db.query(f"SELECT * FROM webhooks WHERE {page_clause} ORDER BY seq LIMIT ?", [*page_params, limit])
    return [(row["seq"], webhook_from_row(row)) for row in rows], int(total)


def get_event(db: sqlite_utils.Database, event_id: str) -> EventRecord:
    row = next(db.query("SELECT * FROM events WHERE id = ?", [event_id]), None)
    if row is None:
        raise NotFound(f"events/{event_id} not found")
    return event_from_row(row)


def get_delivery(db: sqlite_utils.Database, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
    """One delivery; ``webhook_id`` None (the ``webhooks/-`` wildcard) matches any webhook."""
    row = next(db.query("SELECT * FROM deliveries WHERE id = ?", [delivery_id]), None)
    if row is None or (webhook_id is not None and row["webhook_id"] != webhook_id):
        raise NotFound(f"webhooks/{webhook_id or '-'}/deliveries/{delivery_id} not found")
    return delivery_from_row(row)


def has_deliveries(db: sqlite_utils.Database, webhook_id: str) -> bool:
    """Whether any delivery was ever made for the webhook (it may since have been deleted)."""
    return db.execute("SELECT 1 FROM deliveries WHERE webhook_id = ? LIMIT 1", [webhook_id]).fetchone() is not None


def list_deliveries(
    db: sqlite_utils.Database,
    webhook_id: str | None,
    event_id: str,
    state: DeliveryState | None,
    before_id: int | None,
    limit: int,
) -> list[DeliveryRecord]:
    """A page of deliveries, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if webhook_id is not None:
        where.append("webhook_id = ?")
        params.append(webhook_id)
    if event_id:
        where.append("event_id = ?")
        params.append(event_id)
    if state is not None:
        where.append("state = ?")
        params.append(state.value)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    clause = " AND ".join(where) or "1"
    rows = db.query(f"SELECT * FROM deliveries WHERE {clause} ORDER BY id DESC LIMIT ?", [*params, limit])
    return [delivery_from_row(row) for row in rows]


def list_attempts(db: sqlite_utils.Database, delivery_id: int, after_id: int | None, limit: int) -> list[AttemptRecord]:
    """A page of one delivery's attempts, oldest first."""
    rows = db.query(
        "SELECT * FROM attempts WHERE delivery_id = ? AND id > ? ORDER BY id LIMIT ?",
        [delivery_id, after_id or 0, limit],
    )
    return [attempt_from_row(row) for row in rows]


def due_jobs(db: sqlite_utils.Database, destination: str, now: float, limit: int) -> list[Job]:
    """The oldest due deliveries of one destination, with their envelopes, in send order."""
    rows = db.execute(
        "SELECT d.id, d.webhook_id, d.event_id, e.envelope, d.attempt_count "
        "FROM deliveries d JOIN events e ON e.id = d.event_id "
        "WHERE d.destination = ? AND d.state = 'PENDING' AND d.next_attempt_at <= ? "
        "ORDER BY d.next_attempt_at, d.id LIMIT ?",
        [destination, now, limit],
    ).fetchall()
    return [Job(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def next_due(db: sqlite_utils.Database, destination: str, after: float) -> float | None:
    """When the destination's next pending delivery not yet due at ``after`` falls due, if any."""
    row = db.execute(
        "SELECT MIN(next_attempt_at) FROM deliveries "
        "WHERE destination = ? AND state = 'PENDING' AND next_attempt_at > ?",
        [destination, after],
    ).fetchone()
    return None if row[0] is None else float(row[0])


def destinations_with_work(db: sqlite_utils.Database) -> list[tuple[str, float]]:
    """Every destination with pending deliveries and when its first one is due (for start-up)."""
    rows = db.execute(
        "SELECT destination, MIN(next_attempt_at) FROM deliveries WHERE state = 'PENDING' GROUP BY destination"
    ).fetchall()
    return [(row[0], float(row[1])) for row in rows]
