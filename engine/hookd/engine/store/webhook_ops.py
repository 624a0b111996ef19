"""Webhook changes, run inside the writer's transaction with their effect on deliveries.

A change of status or URL moves the webhook's waiting deliveries in the same transaction, so
the database never shows a webhook and its deliveries disagreeing. Every change is announced on
``WEBHOOKS_CHANNEL`` with the commit, so other nodes sharing the database apply it too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hookd.engine.errors import AlreadyExists, NotFound
from hookd.engine.model import DeliveryState, InactivePolicy, Status, Webhook
from hookd.engine.store.rows import WEBHOOK_COLUMNS, webhook_from_row, webhook_to_row
from hookd.engine.store.sql import Tx, UniqueViolation

#: Notification channel: payload ``<webhook id>``, sent with every committed webhook change.
WEBHOOKS_CHANNEL = "hookd_webhooks"

_WAITING = (DeliveryState.PENDING.value, DeliveryState.HELD.value)


def _duplicate(webhook: Webhook) -> AlreadyExists:
    return AlreadyExists(f"a webhook for {webhook.resource}.{webhook.event} to {webhook.url} already exists")


def load_webhook(tx: Tx, webhook_id: str) -> Webhook:
    rows = tx.rows("SELECT * FROM webhooks WHERE id = ?", [webhook_id])
    if not rows:
        raise NotFound(f"webhooks/{webhook_id} not found")
    return webhook_from_row(rows[0])


def find_webhook(tx: Tx, webhook_id: str) -> Webhook | None:
    """The stored webhook, or None when there is none (deleted meanwhile, say)."""
    rows = tx.rows("SELECT * FROM webhooks WHERE id = ?", [webhook_id])
    return webhook_from_row(rows[0]) if rows else None


def _store(tx: Tx, webhook: Webhook, *, insert: bool) -> None:
    row = webhook_to_row(webhook)
    values = [row[name] for name in WEBHOOK_COLUMNS]
    try:
        if insert:
            tx.execute(
                f"INSERT INTO webhooks ({', '.join(WEBHOOK_COLUMNS)}, seq) "
                f"VALUES ({', '.join('?' * len(WEBHOOK_COLUMNS))}, ?)",
                [*values, next_seq(tx)],
            )
        else:
            tx.execute(
                f"UPDATE webhooks SET {', '.join(f'{name} = ?' for name in WEBHOOK_COLUMNS)} WHERE id = ?",
                [*values, webhook.id],
            )
    except UniqueViolation as error:
        raise _duplicate(webhook) from error
    tx.notify(WEBHOOKS_CHANNEL, webhook.id)


def next_seq(tx: Tx) -> int:
    """A paging position that never goes back and is never reused, whatever gets deleted."""
    if tx.backend == "postgresql":
        return int(tx.scalar("SELECT nextval('webhook_seq')"))
    value = tx.scalar("INSERT INTO webhook_seq DEFAULT VALUES RETURNING seq")
    tx.execute("DELETE FROM webhook_seq")
    return int(value)


def insert_webhook(tx: Tx, webhook: Webhook) -> Webhook:
    _store(tx, webhook, insert=True)
    return webhook


def update_webhook(tx: Tx, webhook_id: str, changes: dict[str, Any], now: float) -> tuple[Webhook, Webhook]:
    """Apply ``changes`` to the stored version; return (old, new) for the engine to react to."""
    old = load_webhook(tx, webhook_id)
    new = replace(old, **changes)
    _store(tx, new, insert=False)
    if new.url != old.url:
        tx.execute(
            "UPDATE deliveries SET destination = ?, "
            "next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at ELSE ? END "
            "WHERE webhook_id = ? AND state IN (?, ?)",
            [new.url, now, now, new.id, *_WAITING],
        )
    if new.status is Status.INACTIVE:
        if new.inactive_policy is InactivePolicy.QUEUE:
            _move(tx, new.id, DeliveryState.PENDING, DeliveryState.HELD, now)
        else:
            _move(tx, new.id, DeliveryState.PENDING, DeliveryState.DISCARDED, now)
            _move(tx, new.id, DeliveryState.HELD, DeliveryState.DISCARDED, now)
    elif old.status is Status.INACTIVE:
        # Re-activated: held deliveries go out in the order they were made.
        tx.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = ?, update_time = ? WHERE webhook_id = ? AND state = ?",
            [DeliveryState.PENDING.value, now, now, new.id, DeliveryState.HELD.value],
        )
    return old, new


def _move(tx: Tx, webhook_id: str, source: DeliveryState, target: DeliveryState, now: float) -> None:
    tx.execute(
        "UPDATE deliveries SET state = ?, update_time = ? WHERE webhook_id = ? AND state = ?",
        [target.value, now, webhook_id, source.value],
    )


def delete_webhook(tx: Tx, webhook_id: str, now: float) -> tuple[Webhook, int]:
    """Remove the webhook and cancel its waiting deliveries; return it and how many were cancelled."""
    old = load_webhook(tx, webhook_id)
    tx.execute("DELETE FROM webhooks WHERE id = ?", [webhook_id])
    cursor = tx.execute(
        "UPDATE deliveries SET state = ?, update_time = ?, last_error = 'webhook deleted' "
        "WHERE webhook_id = ? AND state IN (?, ?)",
        [DeliveryState.CANCELLED.value, now, webhook_id, *_WAITING],
    )
    tx.notify(WEBHOOKS_CHANNEL, webhook_id)
    return old, cursor.rowcount


def rotate_secret(tx: Tx, webhook_id: str, secret: str, previous_expires: float, now: float) -> Webhook:
    old = load_webhook(tx, webhook_id)
    new = replace(
        old,
        secret=secret,
        previous_secret=old.secret,
        previous_secret_expires=previous_expires,
        update_time=now,
    )
    _store(tx, new, insert=False)
    return new
