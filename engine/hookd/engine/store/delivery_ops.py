"""Publishing and delivery bookkeeping, run inside the writer's transaction."""

from __future__ import annotations

from collections.abc import Sequence

import sqlite_utils

from hookd.engine.errors import FailedPrecondition, NotFound
from hookd.engine.jobs import AttemptResult, Job, PreparedEvent, PublishResult
from hookd.engine.model import DeliveryState, InactivePolicy, Outcome, Status

#: How long an idempotency key is remembered.
IDEMPOTENCY_WINDOW_S = 24 * 3600.0

_STATE_FOR = {
    (Status.ACTIVE.value, InactivePolicy.QUEUE.value): DeliveryState.PENDING,
    (Status.ACTIVE.value, InactivePolicy.DISCARD.value): DeliveryState.PENDING,
    (Status.INACTIVE.value, InactivePolicy.QUEUE.value): DeliveryState.HELD,
    (Status.INACTIVE.value, InactivePolicy.DISCARD.value): DeliveryState.DISCARDED,
}


def publish(db: sqlite_utils.Database, events: Sequence[PreparedEvent]) -> list[PublishResult]:
    """Store events and one delivery per matching webhook; all or nothing (one savepoint)."""
    conn = db.conn
    subscribers: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    results: list[PublishResult] = []
    for event in events:
        if event.idempotency_key:
            seen = conn.execute(
                "SELECT id, create_time, delivery_count FROM events WHERE idempotency_key = ?",
                [event.idempotency_key],
            ).fetchone()
            if seen is not None:
                if seen[1] > event.create_time - IDEMPOTENCY_WINDOW_S:
                    results.append(PublishResult(seen[0], seen[2], duplicate=True))
                    continue
                conn.execute("UPDATE events SET idempotency_key = NULL WHERE id = ?", [seen[0]])
        pair = (event.resource, event.event)
        if pair not in subscribers:
            subscribers[pair] = conn.execute(
                "SELECT id, url, status, inactive_policy FROM webhooks WHERE resource = ? AND event = ? ORDER BY seq",
                pair,
            ).fetchall()
        hooks = subscribers[pair]
        conn.execute(
            "INSERT INTO events (id, type, create_time, envelope, idempotency_key, delivery_count) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [event.id, event.type, event.create_time, event.envelope, event.idempotency_key or None, len(hooks)],
        )
        result = PublishResult(event.id, len(hooks), duplicate=False)
        for webhook_id, url, status, policy in hooks:
            state = _STATE_FOR[(status, policy)]
            cursor = conn.execute(
                "INSERT INTO deliveries (event_id, webhook_id, destination, event_type, state, "
                "next_attempt_at, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    event.id,
                    webhook_id,
                    url,
                    event.type,
                    state.value,
                    event.create_time,
                    event.create_time,
                    event.create_time,
                ],
            )
            if state is DeliveryState.PENDING:
                delivery_id = cursor.lastrowid
                assert delivery_id is not None
                result.jobs.append((url, Job(delivery_id, webhook_id, event.id, event.envelope, 0)))
        results.append(result)
    return results


def _insert_attempt(db: sqlite_utils.Database, delivery_id: int, webhook_id: str, attempt: AttemptResult) -> None:
    error = attempt.error
    if attempt.location:
        error = f"{error} (location: {attempt.location})"
    db.conn.execute(
        "INSERT INTO attempts (delivery_id, webhook_id, url, start_time, duration_ms, status_code, "
        "outcome, error, response_excerpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            delivery_id,
            webhook_id,
            attempt.url,
            attempt.start_time,
            attempt.duration_ms,
            attempt.status_code,
            attempt.outcome.value,
            error,
            attempt.response_excerpt,
        ],
    )


def record_success(db: sqlite_utils.Database, job: Job, attempt: AttemptResult, now: float) -> None:
    """The destination took it. A delivery held or cancelled meanwhile was still delivered."""
    _insert_attempt(db, job.delivery_id, job.webhook_id, attempt)
    db.conn.execute(
        "UPDATE deliveries SET state = ?, attempt_count = attempt_count + 1, last_error = '', "
        "update_time = ? WHERE id = ?",
        [DeliveryState.SUCCEEDED.value, now, job.delivery_id],
    )


def record_failure(
    db: sqlite_utils.Database, job: Job, attempt: AttemptResult, now: float, retry_at: float | None
) -> None:
    """Record a failed attempt; schedule the retry at ``retry_at``, or mark the delivery FAILED."""
    _insert_attempt(db, job.delivery_id, job.webhook_id, attempt)
    if retry_at is None:
        db.conn.execute(
            "UPDATE deliveries SET state = ?, attempt_count = attempt_count + 1, last_error = ?, "
            "update_time = ? WHERE id = ? AND state = ?",
            [DeliveryState.FAILED.value, attempt.error, now, job.delivery_id, DeliveryState.PENDING.value],
        )
    # Still counted, but a delivery held or cancelled meanwhile keeps that state.
    db.conn.execute(
        "UPDATE deliveries SET attempt_count = attempt_count + 1, last_error = ?, "
        "next_attempt_at = ?, update_time = ? WHERE id = ? AND state IN (?, ?)",
        [
            attempt.error,
            retry_at if retry_at is not None else now,
            now,
            job.delivery_id,
            DeliveryState.PENDING.value,
            DeliveryState.HELD.value,
        ],
    )


def retry_delivery(db: sqlite_utils.Database, webhook_id: str, delivery_id: int, now: float) -> str:
    """Make a finished delivery PENDING again, due now; return its destination URL."""
    row = db.conn.execute(
        "SELECT state FROM deliveries WHERE id = ? AND webhook_id = ?", [delivery_id, webhook_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"webhooks/{webhook_id}/deliveries/{delivery_id} not found")
    if row[0] in (DeliveryState.PENDING.value, DeliveryState.HELD.value):
        raise FailedPrecondition(f"delivery is {row[0]}; only a finished delivery can be retried")
    hook = db.conn.execute("SELECT url, status FROM webhooks WHERE id = ?", [webhook_id]).fetchone()
    if hook is None:
        raise FailedPrecondition(f"webhooks/{webhook_id} was deleted; its deliveries cannot be retried")
    if hook[1] != Status.ACTIVE.value:
        raise FailedPrecondition(f"webhooks/{webhook_id} is inactive; activate it before retrying")
    db.conn.execute(
        "UPDATE deliveries SET state = ?, next_attempt_at = ?, destination = ?, update_time = ? WHERE id = ?",
        [DeliveryState.PENDING.value, now, hook[0], now, delivery_id],
    )
    return str(hook[0])


def insert_test_ping(db: sqlite_utils.Database, event: PreparedEvent, webhook_id: str, url: str) -> int:
    """Store a TestWebhook ping and its delivery before it is sent, so the request carries the
    delivery's own message id. The delivery starts FAILED, a state no actor loads, and
    ``finish_test_ping`` settles it."""
    db.conn.execute(
        "INSERT INTO events (id, type, create_time, envelope, idempotency_key, delivery_count) "
        "VALUES (?, ?, ?, ?, NULL, 1)",
        [event.id, event.type, event.create_time, event.envelope],
    )
    cursor = db.conn.execute(
        "INSERT INTO deliveries (event_id, webhook_id, destination, event_type, state, next_attempt_at, "
        "last_error, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, 'not sent', ?, ?)",
        [
            event.id,
            webhook_id,
            url,
            event.type,
            DeliveryState.FAILED.value,
            event.create_time,
            event.create_time,
            event.create_time,
        ],
    )
    delivery_id = cursor.lastrowid
    assert delivery_id is not None
    return delivery_id


def finish_test_ping(
    db: sqlite_utils.Database, delivery_id: int, webhook_id: str, attempt: AttemptResult, now: float
) -> None:
    """Record the ping's one attempt; no retry follows whatever the outcome."""
    _insert_attempt(db, delivery_id, webhook_id, attempt)
    state = DeliveryState.SUCCEEDED if attempt.outcome is Outcome.SUCCESS else DeliveryState.FAILED
    db.conn.execute(
        "UPDATE deliveries SET state = ?, attempt_count = 1, last_error = ?, update_time = ? WHERE id = ?",
        [state.value, attempt.error, now, delivery_id],
    )
