"""Webhook changes, run inside the writer's transaction with their effect on deliveries.

A change of status or URL moves the webhook's waiting deliveries in the same transaction, so
the database never shows a webhook and its deliveries disagreeing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

import sqlite_utils

from hookd.engine.errors import AlreadyExists, NotFound
from hookd.engine.model import DeliveryState, InactivePolicy, Status, Webhook
from hookd.engine.store.rows import webhook_from_row, webhook_to_row

_WAITING = (DeliveryState.PENDING.value, DeliveryState.HELD.value)


def _duplicate(webhook: Webhook) -> AlreadyExists:
    return AlreadyExists(f"a webhook for {webhook.resource}.{webhook.event} to {webhook.url} already exists")


def load_webhook(db: sqlite_utils.Database, webhook_id: str) -> Webhook:
    row = next(db.query("SELECT * FROM webhooks WHERE id = ?", [webhook_id]), None)
    if row is None:
        raise NotFound(f"webhooks/{webhook_id} not found")
    return webhook_from_row(row)


def insert_webhook(db: sqlite_utils.Database, webhook: Webhook) -> Webhook:
    row = webhook_to_row(webhook)
    # A sequence that never goes back (AUTOINCREMENT), so a page token never lands on a reused seq.
    row["seq"] = db.execute("INSERT INTO webhook_seq DEFAULT VALUES").lastrowid
    db.execute("DELETE FROM webhook_seq")
    try:
        db["webhooks"].insert(row)  # type: ignore[union-attr]
    except sqlite3.IntegrityError as error:
        raise _duplicate(webhook) from error
    return webhook


def update_webhook(
    db: sqlite_utils.Database, webhook_id: str, changes: dict[str, Any], now: float
) -> tuple[Webhook, Webhook]:
    """Apply ``changes`` to the stored version; return (old, new) for the engine to react to."""
    old = load_webhook(db, webhook_id)
    new = replace(old, **changes)
    try:
        db["webhooks"].update(new.id, webhook_to_row(new))  # type: ignore[union-attr]
    except sqlite3.IntegrityError as error:
        raise _duplicate(new) from error
    if new.url != old.url:
        db.execute(
            "UPDATE deliveries SET destination = ?, next_attempt_at = MAX(next_attempt_at, ?) "
            "WHERE webhook_id = ? AND state IN (?, ?)",
            [new.url, now, new.id, *_WAITING],
        )
    if new.status is Status.INACTIVE:
        if new.inactive_policy is InactivePolicy.QUEUE:
            _move(db, new.id, DeliveryState.PENDING, DeliveryState.HELD, now)
        else:
            _move(db, new.id, DeliveryState.PENDING, DeliveryState.DISCARDED, now)
            _move(db, new.id, DeliveryState.HELD, DeliveryState.DISCARDED, now)
    elif old.status is Status.INACTIVE:
        # Re-activated: held deliveries go out in the order they were made.
        db.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = ?, update_time = ? WHERE webhook_id = ? AND state = ?",
            [DeliveryState.PENDING.value, now, now, new.id, DeliveryState.HELD.value],
        )
    return old, new


def _move(db: sqlite_utils.Database, webhook_id: str, source: DeliveryState, target: DeliveryState, now: float) -> None:
    db.execute(
        "UPDATE deliveries SET state = ?, update_time = ? WHERE webhook_id = ? AND state = ?",
        [target.value, now, webhook_id, source.value],
    )


def delete_webhook(db: sqlite_utils.Database, webhook_id: str, now: float) -> tuple[Webhook, int]:
    """Remove the webhook and cancel its waiting deliveries; return it and how many were cancelled."""
    old = load_webhook(db, webhook_id)
    db.execute("DELETE FROM webhooks WHERE id = ?", [webhook_id])
    cursor = db.execute(
        "UPDATE deliveries SET state = ?, update_time = ?, last_error = 'webhook deleted' "
        "WHERE webhook_id = ? AND state IN (?, ?)",
        [DeliveryState.CANCELLED.value, now, webhook_id, *_WAITING],
    )
    return old, cursor.rowcount


def rotate_secret(
    db: sqlite_utils.Database, webhook_id: str, secret: str, previous_expires: float, now: float
) -> Webhook:
    old = load_webhook(db, webhook_id)
    new = replace(
        old,
        secret=secret,
        previous_secret=old.secret,
        previous_secret_expires=previous_expires,
        update_time=now,
    )
    db["webhooks"].update(webhook_id, webhook_to_row(new))  # type: ignore[union-attr]
    return new
