"""Retention: what is old enough to go, removed in small batches, and the space given back.

Once older than the retention, settled deliveries (succeeded, failed, discarded, cancelled) go
with their attempts, and events go once no pending or held delivery needs them. A pending or
held delivery is never removed, nor the event it will send. Each call removes at most ``limit``
rows, so each is one short transaction and publishes and attempt outcomes commit in between.

Other nodes' transactions run beside these on PostgreSQL, so every removal re-checks its
condition on the row itself as it deletes it: a delivery that RetryDelivery made PENDING a
moment ago is not removed, and an event is locked before it is judged unreferenced (RetryDelivery
and RecoverDeliveries lock the event they are about to send again, see ``delivery_ops``).

Space: SQLite databases hookd creates use incremental auto-vacuum, and ``reclaim_space`` gives
free pages beyond a small reserve back to the file system (a database created by an older hookd
keeps auto-vacuum off: its free pages are reused by new rows, the file never shrinks).
PostgreSQL's autovacuum makes the space of removed rows reusable by new ones.
"""

from __future__ import annotations

from hookd.engine.store.shared_schema import SETTLED_STATES
from hookd.engine.store.sql import Tx, marks

#: Free pages kept for new rows rather than given back: at least this many...
RESERVE_PAGES = 256
#: ...or this share of the file, whichever is more.
RESERVE_SHARE = 0.05
#: SQLite's auto_vacuum value for INCREMENTAL.
_INCREMENTAL = 2


def prune_deliveries(tx: Tx, older_than: float, limit: int) -> int:
    """Remove up to ``limit`` deliveries settled before ``older_than``, with their attempts.

    The candidates come from ``deliveries_settled``, oldest first, so a batch reads about
    ``limit`` rows. SQLite, planning without statistics, would pick ``deliveries_state``
    instead and read and sort every settled delivery of the retention window for each batch
    (70 ms for 270,000, inside the writer's transaction), hence the hint; PostgreSQL takes the
    index by itself once autovacuum has analysed the table.
    """
    candidates = [
        row[0]
        for row in tx.all(
            f"SELECT id FROM deliveries{tx.dialect.indexed_by('deliveries_settled')} "
            f"WHERE state IN {SETTLED_STATES} AND update_time < ? "
            "AND NOT EXISTS (SELECT 1 FROM publishing p WHERE p.event_id = deliveries.event_id) "
            "ORDER BY update_time LIMIT ?",
            [older_than, limit],
        )
    ]
    if not candidates:
        return 0
    removed = [
        row[0]
        for row in tx.all(
            f"DELETE FROM deliveries WHERE id IN ({marks(len(candidates))}) "
            f"AND state IN {SETTLED_STATES} AND update_time < ? RETURNING id",
            [*candidates, older_than],
        )
    ]
    if removed:
        tx.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks(len(removed))})", removed)
    return len(removed)


def prune_events(
    tx: Tx, older_than: float, keys_older_than: float, after: tuple[float, str], limit: int
) -> tuple[int, tuple[float, str] | None]:
    """Look at up to ``limit`` events created before ``older_than``, in creation order from
    ``after`` (create time, id), and remove those no pending or held delivery needs; an event
    with an idempotency key stays until ``keys_older_than`` too (the key's window). Returns how
    many were removed and where the next call goes on from (None once past the last).

    The position moves on past events that must stay (a webhook holding a month of deliveries,
    say), so they are looked at once per pass, not once per call.
    """
    candidates = tx.all(
        "SELECT id, create_time FROM events WHERE create_time < ? AND (create_time, id) > (?, ?) "
        f"ORDER BY create_time, id LIMIT ?{tx.dialect.for_update}",
        [older_than, after[0], after[1], limit],
    )
    if not candidates:
        return 0, None
    ids = [row[0] for row in candidates]
    # A statement of its own, after the lock: on PostgreSQL it sees every delivery made
    # pending again up to now, not as of the moment the candidates were read.
    removed = tx.execute(
        f"DELETE FROM events WHERE id IN ({marks(len(ids))}) AND (idempotency_key IS NULL OR create_time < ?) "
        "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.state IN ('PENDING', 'HELD'))",
        [*ids, keys_older_than],
    ).rowcount
    last = candidates[-1]
    return removed, ((float(last[1]), str(last[0])) if len(candidates) == limit else None)


def reclaim_space(tx: Tx, max_pages: int) -> int:
    """Give up to ``max_pages`` free pages beyond the reserve back to the file system; return how
    many. SQLite with incremental auto-vacuum only: elsewhere space is reused, not returned."""
    if tx.backend != "sqlite" or tx.scalar("PRAGMA auto_vacuum") != _INCREMENTAL:
        return 0
    free = int(tx.scalar("PRAGMA freelist_count"))
    reserve = max(RESERVE_PAGES, int(int(tx.scalar("PRAGMA page_count")) * RESERVE_SHARE))
    pages = max(0, min(free - reserve, max_pages))
    # One page per statement: Python's sqlite3 steps a pragma that returns nothing only once,
    # and each step of incremental_vacuum frees one page.
    for _ in range(pages):
        tx.execute("PRAGMA incremental_vacuum(1)")
    return pages
