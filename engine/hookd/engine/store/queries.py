"""Read queries. Each takes a ``Tx`` and runs on a reader's connection in a worker thread.

Queries that feed the actors join ``events``: a delivery is only ever loaded once its event is
stored, which is what keeps a staged publish invisible until it is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hookd.engine.catalogue import PING_TYPE
from hookd.engine.errors import NotFound
from hookd.engine.jobs import Job
from hookd.engine.model import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    Webhook,
    WebhookFilter,
)
from hookd.engine.store.rows import (
    attempt_from_row,
    delivery_from_row,
    event_from_row,
    webhook_from_row,
)
from hookd.engine.store.shared_schema import PENDING_PINGS
from hookd.engine.store.sql import Tx, marks


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def all_webhooks(tx: Tx) -> list[Webhook]:
    return [webhook_from_row(row) for row in tx.rows("SELECT * FROM webhooks ORDER BY seq")]


def list_webhooks(
    tx: Tx, filters: WebhookFilter, after_seq: int | None, limit: int
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
    clause = " AND ".join(where) or "1 = 1"
    total = tx.scalar(f"SELECT COUNT(*) FROM webhooks WHERE {clause}", params)
    page_clause = clause + (" AND seq > ?" if after_seq is not None else "")
    page_params = params + ([after_seq] if after_seq is not None else [])
    rows = tx.rows(f"SELECT * FROM webhooks WHERE {page_clause} ORDER BY seq LIMIT ?", [*page_params, limit])
    return [(row["seq"], webhook_from_row(row)) for row in rows], int(total)


def get_event(tx: Tx, event_id: str) -> EventRecord:
    rows = tx.rows("SELECT * FROM events WHERE id = ?", [event_id])
    if not rows:
        raise NotFound(f"events/{event_id} not found")
    return event_from_row(rows[0])


#: Deliveries but those of a large publish still being written (staged: listed in
#: ``publishing`` until their event is stored), which are not sent and may yet be dropped if the
#: publish is abandoned. (Not "whose event exists": retention may remove an event before a
#: delivery of it that settled later.)
_OF_PUBLISHED = "NOT EXISTS (SELECT 1 FROM publishing p WHERE p.event_id = deliveries.event_id)"


def get_delivery(tx: Tx, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
    """One delivery; ``webhook_id`` None (the ``webhooks/-`` wildcard) matches any webhook.
    Like every listing, it shows only deliveries of published events (``_OF_PUBLISHED``)."""
    rows = tx.rows(f"SELECT * FROM deliveries WHERE id = ? AND {_OF_PUBLISHED}", [delivery_id])
    if not rows or (webhook_id is not None and rows[0]["webhook_id"] != webhook_id):
        raise NotFound(f"webhooks/{webhook_id or '-'}/deliveries/{delivery_id} not found")
    return delivery_from_row(rows[0])


def has_deliveries(tx: Tx, webhook_id: str) -> bool:
    """Whether any delivery was ever made for the webhook (it may since have been deleted)."""
    return tx.one("SELECT 1 FROM deliveries WHERE webhook_id = ? LIMIT 1", [webhook_id]) is not None


def list_deliveries(
    tx: Tx,
    webhook_id: str | None,
    event_id: str,
    state: DeliveryState | None,
    before_id: int | None,
    limit: int,
) -> list[DeliveryRecord]:
    """A page of deliveries of published events, newest first."""
    where: list[str] = [_OF_PUBLISHED]
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
    clause = " AND ".join(where) or "1 = 1"
    rows = tx.rows(f"SELECT * FROM deliveries WHERE {clause} ORDER BY id DESC LIMIT ?", [*params, limit])
    return [delivery_from_row(row) for row in rows]


def list_attempts(tx: Tx, delivery_id: int, after_id: int | None, limit: int) -> list[AttemptRecord]:
    """A page of one delivery's attempts, oldest first."""
    rows = tx.rows(
        "SELECT * FROM attempts WHERE delivery_id = ? AND id > ? ORDER BY id LIMIT ?",
        [delivery_id, after_id or 0, limit],
    )
    return [attempt_from_row(row) for row in rows]


#: Of an ordered webhook's deliveries (``h``), those that take part in its order: pending, not a
#: test ping, and published (their event is stored; see ``ordered_heads``).
_PUBLISHED_PENDING = (
    f"h.state = 'PENDING' AND h.event_type != '{PING_TYPE}' AND EXISTS (SELECT 1 FROM events e WHERE e.id = h.event_id)"
)


def _in_order(tx: Tx, ordered: Sequence[str]) -> tuple[str, list[Any]]:
    """The condition (and its parameters) that lets through, of an ordered webhook's deliveries,
    only its head (``ordered_heads``); test pings stand outside any order. The heads are found
    once per read, before the destination's deliveries are walked: not once per delivery walked,
    nor again for ``next_due`` in the same read (``tx.memo``)."""
    if not ordered:
        return "", []
    key = ("ordered heads", tuple(ordered))
    if key not in tx.memo:
        tx.memo[key] = [delivery_id for delivery_id, _ in ordered_heads(tx, ordered).values()]
    heads: list[int] = tx.memo[key]
    head_clause = f" OR d.id IN ({marks(len(heads))})" if heads else ""
    return (
        f" AND (d.event_type = '{PING_TYPE}' OR d.webhook_id NOT IN ({marks(len(ordered))}){head_clause})",
        [*ordered, *heads],
    )


_JOB_COLUMNS = "d.id, d.webhook_id, d.event_id, e.envelope, d.attempt_count, d.event_type"


def _job(row: Sequence[Any]) -> Job:
    return Job(row[0], row[1], row[2], row[3], row[4], single_attempt=row[5] == PING_TYPE)


def due_jobs(tx: Tx, destination: str, now: float, limit: int, ordered: Sequence[str] = ()) -> list[Job]:
    """The oldest due deliveries of one destination, with their envelopes, in send order; of
    each webhook in ``ordered``, only its head (if due). Test pings come first, however long
    the backlog: a ping jumps it (it waits for a request slot and a token, not its turn)."""
    pings = [
        _job(row)
        for row in tx.all(
            f"SELECT {_JOB_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id "
            f"WHERE d.destination = ? AND {PENDING_PINGS} ORDER BY d.id LIMIT ?",
            [destination, limit],
        )
    ]
    condition, params = _in_order(tx, ordered)
    rows = tx.all(
        f"SELECT {_JOB_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id "
        f"WHERE d.destination = ? AND d.state = 'PENDING' AND d.next_attempt_at <= ?{condition} "
        f"AND d.event_type != '{PING_TYPE}' ORDER BY d.next_attempt_at, d.id LIMIT ?",
        [destination, now, *params, limit - len(pings)],
    )
    return pings + [_job(row) for row in rows]


def next_due(tx: Tx, destination: str, after: float, ordered: Sequence[str] = ()) -> float | None:
    """When the destination's next pending delivery not yet due at ``after`` falls due, if any
    (of an ordered webhook, only its head counts: the others wait for it, not for the clock)."""
    condition, params = _in_order(tx, ordered)
    value = tx.scalar(
        "SELECT MIN(d.next_attempt_at) FROM deliveries d "
        f"WHERE d.destination = ? AND d.state = 'PENDING' AND d.next_attempt_at > ?{condition} "
        "AND EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)",
        [destination, after, *params],
    )
    return None if value is None else float(value)


def ordered_heads(tx: Tx, webhook_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Of each ordered webhook, its head: webhook -> (delivery id, attempts). The deliveries
    behind a head wait for it.

    The head is the pending published delivery already tried, if there is one (only a head is
    ever sent, so there is at most one): it holds the rest until it succeeds or fails for good.
    Otherwise it is the oldest pending published delivery. A delivery whose event is not stored
    yet (a large publish still being written, or abandoned by a crash until housekeeping drops
    it) is no one's head: it is not published, and the deliveries behind it must not wait on
    it. So deliveries go in the order their publishes completed, and one being retried is not
    overtaken by an older publish that completed after it was first tried.
    """
    heads: dict[str, tuple[int, int]] = {}
    for start in range(0, len(webhook_ids), 500):
        chunk = list(webhook_ids[start : start + 500])
        # The one tried, through the waiting index (state, webhook, destination, attempts): a
        # webhook's waiting deliveries all go to its URL. ``state || ''`` keeps SQLite, which
        # has no statistics, off the index of all the webhook's pending deliveries (it walked
        # every one of them, 11 ms for 30,000).
        for webhook_id, delivery_id, attempts in tx.all(
            "SELECT w.id, h.id, h.attempt_count FROM webhooks w JOIN deliveries h "
            "ON h.state IN ('PENDING', 'HELD') AND h.state || '' = 'PENDING' AND h.webhook_id = w.id "
            f"AND h.destination = w.url AND h.attempt_count > 0 WHERE w.id IN ({marks(len(chunk))}) "
            f"AND h.event_type != '{PING_TYPE}' AND EXISTS (SELECT 1 FROM events e WHERE e.id = h.event_id) "
            "ORDER BY h.id DESC",
            chunk,
        ):
            heads[webhook_id] = (int(delivery_id), int(attempts))  # the oldest, should there be several
        untried = [webhook_id for webhook_id in chunk if webhook_id not in heads]
        if not untried:
            continue
        # Else the oldest: a lookup per webhook that stops at the first published one.
        for webhook_id, delivery_id in tx.all(
            f"SELECT w.id, (SELECT MIN(h.id) FROM deliveries h WHERE h.webhook_id = w.id AND {_PUBLISHED_PENDING}) "
            f"FROM webhooks w WHERE w.id IN ({marks(len(untried))})",
            untried,
        ):
            if delivery_id is not None:
                heads[webhook_id] = (int(delivery_id), 0)
    return heads


def destinations_with_work(tx: Tx) -> list[tuple[str, float]]:
    """Every destination with pending deliveries and when its first one is due."""
    rows = tx.all(
        "SELECT d.destination, MIN(d.next_attempt_at) FROM deliveries d WHERE d.state = 'PENDING' "
        "AND EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id) GROUP BY d.destination"
    )
    return [(row[0], float(row[1])) for row in rows]


@dataclass(frozen=True)
class Backlog:
    """Waiting deliveries on disk: (backlog, retries scheduled) per webhook and per destination."""

    webhooks: dict[str, tuple[int, int]]
    destinations: dict[str, tuple[int, int]]
    #: Ordered webhooks whose deliveries wait behind one being retried: webhook -> that delivery.
    held_behind: dict[str, int] = field(default_factory=dict)


def backlog(tx: Tx, ordered: Sequence[str] = ()) -> Backlog:
    """Counted from the ``deliveries_waiting`` index alone, without touching the table."""
    webhooks: dict[str, list[int]] = {}
    destinations: dict[str, list[int]] = {}
    for webhook_id, destination, count, retries in tx.all(
        "SELECT webhook_id, destination, COUNT(*), COUNT(*) FILTER (WHERE attempt_count > 0) FROM deliveries "
        "WHERE state IN ('PENDING', 'HELD') GROUP BY webhook_id, destination"
    ):
        for group, key in ((webhooks, webhook_id), (destinations, destination)):
            totals = group.setdefault(key, [0, 0])
            totals[0] += count
            totals[1] += retries or 0
    waiting = [webhook_id for webhook_id in ordered if webhooks.get(webhook_id, [0])[0] > 1]
    heads = ordered_heads(tx, waiting)
    return Backlog(
        {key: (v[0], v[1]) for key, v in webhooks.items()},
        {key: (v[0], v[1]) for key, v in destinations.items()},
        {webhook_id: head for webhook_id, (head, attempts) in heads.items() if attempts > 0},
    )
