"""Webhook changes, run inside the writer's transaction with their effect on deliveries.

A change of status or URL moves the webhook's waiting deliveries in the same transaction, so
the database never shows a webhook and its deliveries disagreeing. Every change is announced on
``WEBHOOKS_CHANNEL`` with the commit, so other nodes sharing the database apply it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from hookd.engine import catalogue
from hookd.engine.envelopes import operational_event, rfc3339
from hookd.engine.errors import AlreadyExists, NotFound, ResourceExhausted
from hookd.engine.jobs import PublishResult
from hookd.engine.model import DeliveryState, InactivePolicy, Status, Webhook
from hookd.engine.store import delivery_ops, health_ops
from hookd.engine.store.rows import WEBHOOK_COLUMNS, webhook_from_row, webhook_to_row
from hookd.engine.store.sql import Tx, UniqueViolation, marks

#: Notification channel: payload ``<webhook id>``, sent with every committed webhook change.
WEBHOOKS_CHANNEL = "hookd_webhooks"

_WAITING = (DeliveryState.PENDING.value, DeliveryState.HELD.value)


def _duplicate(webhook: Webhook) -> AlreadyExists:
    return AlreadyExists(f"a webhook for {webhook.resource}.{webhook.event} to {webhook.url} already exists")


def load_webhook(tx: Tx, webhook_id: str) -> Webhook:
    """The stored webhook, locked for the change the caller makes to it: two nodes changing
    one webhook at once take turns, so neither writes its row back over the other's change."""
    rows = tx.rows(f"SELECT * FROM webhooks WHERE id = ?{tx.dialect.for_update}", [webhook_id])
    if not rows:
        raise NotFound(f"webhooks/{webhook_id} not found")
    return webhook_from_row(rows[0])


def find_webhook(tx: Tx, webhook_id: str) -> Webhook | None:
    """The stored webhook, or None when there is none (deleted meanwhile, say)."""
    rows = tx.rows("SELECT * FROM webhooks WHERE id = ?", [webhook_id])
    return webhook_from_row(rows[0]) if rows else None


def find_webhooks(tx: Tx, webhook_ids: list[str]) -> dict[str, Webhook]:
    """The stored webhooks of ``webhook_ids`` that exist, by id."""
    found: dict[str, Webhook] = {}
    for start in range(0, len(webhook_ids), _IDS_PER_READ):
        chunk = webhook_ids[start : start + _IDS_PER_READ]
        rows = tx.rows(f"SELECT * FROM webhooks WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        found.update((row["id"], webhook_from_row(row)) for row in rows)
    return found


_IDS_PER_READ = 500


def _store(tx: Tx, webhook: Webhook, *, insert: bool) -> Webhook:
    """Write the webhook, one version on from the one it was made from; return what was stored.

    A change starts from the row as locked in this transaction (``load_webhook``), so versions
    of one webhook never repeat, whichever node writes them.
    """
    webhook = replace(webhook, version=webhook.version + 1)
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
    return webhook


def next_seq(tx: Tx) -> int:
    """A paging position that never goes back and is never reused, whatever gets deleted."""
    if tx.backend == "postgresql":
        return int(tx.scalar("SELECT nextval('webhook_seq')"))
    value = tx.scalar("INSERT INTO webhook_seq DEFAULT VALUES RETURNING seq")
    tx.execute("DELETE FROM webhook_seq")
    return int(value)


#: PostgreSQL advisory lock key under which transactions that add a webhook to an event type
#: (any type: one key, so two can never wait for each other's) count that type's webhooks.
_TYPE_ROOM_LOCK = 0x686F6F6B64_01
_TYPE_ROOM_LOCKED = "webhook_ops.type_room_locked"


def lock_type_room(tx: Tx) -> None:
    """Take the lock that ``_check_room`` counts under, till the transaction ends.

    SQLite runs one write transaction at a time and needs none. On PostgreSQL, several nodes'
    writers run side by side: without the lock, two could each count the other's new webhook
    out and both add theirs. Pass this as the write's ``first`` (``Writer.execute``), so the
    transaction takes it before any other lock, never while holding one.
    """
    if tx.backend == "postgresql" and not tx.memo.get(_TYPE_ROOM_LOCKED):
        tx.scalar("SELECT pg_advisory_xact_lock(?)", [_TYPE_ROOM_LOCK])
        tx.memo[_TYPE_ROOM_LOCKED] = True


def _check_room(tx: Tx, resource: str, event: str, limit: int) -> None:
    """Refuse a webhook joining an event type that already has ``limit`` of them.

    Counted in the transaction that adds the webhook, so creates under way together cannot all
    pass on one count. The lock is normally held already (``lock_type_room`` run first); taking
    it here keeps the count right whatever the caller passed.
    """
    lock_type_room(tx)
    count = int(tx.scalar("SELECT COUNT(*) FROM webhooks WHERE resource = ? AND event = ?", [resource, event]))
    if count >= limit:
        raise ResourceExhausted(
            f"{resource}.{event} already has {limit} webhooks, the most one event type may have "
            "(--max-webhooks-per-type)"
        )


def insert_webhook(tx: Tx, webhook: Webhook, limit: int) -> Webhook:
    """Store a new webhook, within the ``limit`` of webhooks its event type may have."""
    _check_room(tx, webhook.resource, webhook.event, limit)
    return _store(tx, webhook, insert=True)


def update_webhook(
    tx: Tx, webhook_id: str, changes: dict[str, Any], now: float, limit: int | None = None
) -> tuple[Webhook, Webhook]:
    """Apply ``changes`` to the stored version; return (old, new) for the engine to react to.

    Activating a webhook again, or giving it a new URL, starts its failure streak afresh (so
    auto-disable judges the new state of things); activating it clears why hookd had disabled
    it (an inactive webhook keeps the reason it is inactive). A webhook moved to another event
    type must fit within that type's ``limit`` (None for hookd's own changes, which never move
    one), and the type must exist: checked here, on the row as it is in the transaction, because
    two updates at once, one of the resource and one of the event, could each pass a check made
    before and together make a type that does not.
    """
    old = load_webhook(tx, webhook_id)
    new = replace(old, **changes)
    if (new.resource, new.event) != (old.resource, old.event):
        catalogue.check_event_type(new.resource, new.event, field_prefix="webhook.")
        if limit is not None:
            _check_room(tx, new.resource, new.event, limit)
    reactivated = new.status is Status.ACTIVE and old.status is Status.INACTIVE
    if reactivated or new.url != old.url:
        health_ops.reset_failing(tx, webhook_id)
    if reactivated:
        new = replace(new, disabled_reason="", disable_time=0.0)
    new = _store(tx, new, insert=False)
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


def changes_waiting(old: Webhook, new: Webhook) -> bool:
    """Whether going from ``old`` to ``new`` changes what becomes of its waiting deliveries, or
    of those a publish of its old type may still write (moved to another type, a later change
    would wait for the publishes of the new type only)."""
    fields = ("url", "status", "inactive_policy", "resource", "event")
    return any(getattr(old, name) != getattr(new, name) for name in fields)


def catch_up_write(old: Webhook, now: float) -> tuple[Callable[[Tx], list[str]], Callable[[Tx], None]]:
    """The write that catches up ``old``'s waiting deliveries after a change committed (on a
    shared database, where publishes run on other nodes), and the barrier to run ``first``."""
    return (
        partial(catch_up_waiting, webhook_id=old.id, now=now),
        partial(delivery_ops.wait_for_subscriber_reads, resource=old.resource, event=old.event),
    )


def catch_up_waiting(tx: Tx, webhook_id: str, now: float) -> list[str]:
    """Bring the webhook's waiting deliveries in line with it as stored: what publishes that read
    it before a change wrote after the change (``delivery_ops.lock_subscribers``); run once they
    have ended (``delivery_ops.wait_for_subscriber_reads`` first). Returns the URLs with
    deliveries newly due (announced).

    The rows out of line are few, and ``deliveries_waiting`` finds them (PostgreSQL's planner
    takes it unless its statistics still count the rows the change just moved). The webhook is
    read ``FOR SHARE``: a change committing meanwhile waits, rather than have this write back
    the URL it replaced.
    """
    row = tx.one(f"SELECT url, status, inactive_policy FROM webhooks WHERE id = ?{tx.dialect.for_share}", [webhook_id])
    if row is None:
        tx.execute(
            "UPDATE deliveries SET state = ?, update_time = ?, last_error = 'webhook deleted' "
            "WHERE webhook_id = ? AND state IN (?, ?)",
            [DeliveryState.CANCELLED.value, now, webhook_id, *_WAITING],
        )
        return []
    url, status, policy = row[0], Status(row[1]), InactivePolicy(row[2])
    moved = tx.execute(
        "UPDATE deliveries SET destination = ?, "
        "next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at ELSE ? END "
        "WHERE webhook_id = ? AND state IN (?, ?) AND (destination < ? OR destination > ?)",
        [url, now, now, webhook_id, *_WAITING, url, url],
    ).rowcount
    if status is Status.ACTIVE:
        released = tx.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = ?, update_time = ? WHERE webhook_id = ? AND state = ?",
            [DeliveryState.PENDING.value, now, now, webhook_id, DeliveryState.HELD.value],
        ).rowcount
        if moved or released:
            tx.notify(delivery_ops.DELIVERIES_CHANNEL, url)
            return [url]
    else:
        # Not a test ping: one may be PENDING for an inactive webhook (testing before activating
        # is what it is for), made through another node since the change.
        target = DeliveryState.HELD if policy is InactivePolicy.QUEUE else DeliveryState.DISCARDED
        sources = [DeliveryState.PENDING.value] + ([] if target is DeliveryState.HELD else [DeliveryState.HELD.value])
        tx.execute(
            "UPDATE deliveries SET state = ?, update_time = ? "
            f"WHERE webhook_id = ? AND state IN ({marks(len(sources))}) AND event_type != ?",
            [target.value, now, webhook_id, *sources, catalogue.PING_TYPE],
        )
    return []


def rotate_secret(tx: Tx, webhook_id: str, secret: str, previous_expires: float, now: float) -> Webhook:
    old = load_webhook(tx, webhook_id)
    new = replace(
        old,
        secret=secret,
        previous_secret=old.secret,
        previous_secret_expires=previous_expires,
        update_time=now,
    )
    return _store(tx, new, insert=False)


# -- auto-disable ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disabled:
    """A webhook hookd switched off, and the ``webhook.disabled`` event that says so."""

    old: Webhook
    new: Webhook
    published: list[PublishResult]


def disable_failing(tx: Tx, since_before: float, now: float, limit: int) -> list[Disabled]:
    """Make INACTIVE every active webhook whose attempts have all failed since before
    ``since_before``, as a deactivation by hand would (its QUEUE or DISCARD policy applies from
    now on), with the reason and time; publish ``webhook.disabled`` for each in the same
    transaction, so the change and its announcement commit together."""
    disabled: list[Disabled] = []
    for webhook_id, failing_since, last_error in health_ops.failing_webhooks(tx, since_before, limit):
        reason = f"every attempt failed since {rfc3339(failing_since)}; last error: {last_error or 'unknown'}"
        changes = {"status": Status.INACTIVE, "disabled_reason": reason, "disable_time": now, "update_time": now}
        old, new = update_webhook(tx, webhook_id, changes, now)
        data = {
            "name": f"webhooks/{new.id}",
            "url": new.url,
            "reason": reason,
            "failing_since": rfc3339(failing_since),
            "disable_time": rfc3339(now),
        }
        event = operational_event(*catalogue.WEBHOOK_DISABLED, data, now)
        disabled.append(Disabled(old, new, delivery_ops.publish(tx, [event])))
    return disabled
