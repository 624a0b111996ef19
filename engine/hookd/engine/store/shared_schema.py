"""Schema changes SQLite and PostgreSQL make word for word (only the float type differs).

SQLite applies them as its version 5, PostgreSQL as its version 2, so the two schemas stay in
step: same tables, columns and indexes, and every operation's SQL runs on both.
"""

from __future__ import annotations

#: Settled deliveries, as retention finds them. Written as literals, and repeated word for word
#: in the queries that use the partial index below: SQLite uses a partial index only for a query
#: whose condition is the index's own.
SETTLED_STATES = "('SUCCEEDED', 'FAILED', 'DISCARDED', 'CANCELLED')"

#: A webhook's ordering, and why and when hookd disabled it by itself; since when every attempt
#: of a webhook (or destination) failed, for auto-disable; and what retention needs to find old
#: rows without a scan: settled deliveries by their last change, events by their age.
OPERATIONS = (
    "ALTER TABLE webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'UNORDERED'",
    "ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE webhooks ADD COLUMN disable_time {real} NOT NULL DEFAULT 0",
    "ALTER TABLE health_last ADD COLUMN failing_since {real} NOT NULL DEFAULT 0",
    f"CREATE INDEX deliveries_settled ON deliveries(update_time) WHERE state IN {SETTLED_STATES}",
    "CREATE INDEX events_time ON events(create_time, id)",
)


def operations(real: str) -> list[str]:
    """The statements with the backend's name for a double-precision float."""
    return [statement.format(real=real) for statement in OPERATIONS]


#: A webhook's version, one more with every committed change: a node that reads a webhook
#: another node changed applies the row only if it is newer than the one it holds.
VERSIONS = ("ALTER TABLE webhooks ADD COLUMN version INTEGER NOT NULL DEFAULT 0",)

#: An ordered webhook sends only its oldest pending delivery: found from this index at once,
#: however many deliveries the webhook has had.
ORDERING = ("CREATE INDEX deliveries_pending_webhook ON deliveries(webhook_id, id) WHERE state = 'PENDING'",)

#: A destination's pending test pings, found at once however long its backlog: a ping asked for
#: through another node reaches the owner from disk, and goes ahead of the backlog. Repeated word
#: for word in the query that uses it (``queries.due_jobs``), as SQLite needs for a partial index.
PENDING_PINGS = "d.state = 'PENDING' AND d.event_type = 'webhook.ping'"
PINGS = (f"CREATE INDEX deliveries_pings ON deliveries(destination) WHERE {PENDING_PINGS.replace('d.', '')}",)
