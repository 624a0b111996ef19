"""Health counts in the store: written with the attempts, loaded at start, tailed after.

Each transaction that records attempts adds up their counts per (webhook or destination,
minute): by outcome and latency slot, encoded in one row per key and minute (``encode``). It
writes them once, at its end, merged into what is stored: so the counts on disk always match
the attempts on disk, a crash included, and a start loads one row per key and minute (however
many attempts that minute held) instead of every attempt of the last day. Rows carry the time
they last changed, so a node keeps up with the counts every node writes by reading only what
changed since it last looked (``changed_since``).

Minute rows older than ``MINUTE_ROWS_KEPT`` minutes are folded into hour rows (``compact``), so
a day of history is at most about 2 x 60 minute rows and 24 hour rows per key; hour rows older
than a day, and the last-seen facts of keys gone for a day, go once per housekeeping pass
(``forget``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hookd.engine.health import DESTINATION, WEBHOOK, latency_slot
from hookd.engine.model import Outcome
from hookd.engine.store.sql import Tx, marks

#: Minutes kept as minute rows before their hour is folded into an hour row.
MINUTE_ROWS_KEPT = 120
DAY_S = 86400.0
#: Keys read or written per statement (three parameters each).
_CHUNK = 300

#: (outcome, latency slot) -> attempts.
Cells = Counter[tuple[str, int]]
RowKey = tuple[str, str, int]


def encode(cells: Cells) -> str:
    """``{"SUCCESS": {"12": 30, ...}, "TIMEOUT": {"54": 1}}``, compact."""
    nested: dict[str, dict[str, int]] = {}
    for (outcome, slot), count in sorted(cells.items()):
        if count:
            nested.setdefault(outcome, {})[str(slot)] = count
    return json.dumps(nested, separators=(",", ":"))


def decode(text: str) -> Cells:
    cells: Cells = Counter()
    for outcome, slots in json.loads(text or "{}").items():
        for slot, count in slots.items():
            cells[(outcome, int(slot))] = count
    return cells


def stored_counts(tx: Tx, table: str, unit: str, keys: Sequence[RowKey]) -> dict[RowKey, str]:
    """The stored counts of ``keys`` in ``table`` (those that have a row), locked where several
    nodes may write them.

    The list of keys is joined to the table, so each key is one primary-key lookup on both
    stores. ``(kind, key, minute) IN (VALUES ...)`` is not: SQLite (3.40, without statistics)
    plans it as a scan of the whole table whenever the list has more than one row, and every
    commit of attempt outcomes lists at least two (the webhook's key and the destination's):
    a scan of a day of minute rows per commit, inside the one writer. CROSS JOIN keeps SQLite's
    loop over the list on the outside; PostgreSQL reads it as a plain join and plans it as a
    nested loop of index scans. Both name the columns of a VALUES list column1, column2, ...
    PostgreSQL needs no casts: psycopg sends strings untyped, which a VALUES list takes as text,
    and integers as int2/int4/int8, which meet the BIGINT column in its index; and it locks the
    table's rows only (``OF h``: a VALUES list cannot be locked)."""
    lock = f"{tx.dialect.for_update} OF h" if tx.dialect.for_update else ""
    stored: dict[RowKey, str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        for kind, key, when, counts in tx.all(
            f"SELECT h.kind, h.key, h.{unit}, h.counts FROM (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) AS v "
            f"CROSS JOIN {table} h WHERE h.kind = v.column1 AND h.key = v.column2 AND h.{unit} = v.column3{lock}",
            [value for row_key in chunk for value in row_key],
        ):
            stored[(kind, key, int(when))] = counts
    return stored


def _merge_into(tx: Tx, table: str, unit: str, additions: dict[RowKey, Cells], extra: Sequence[Any] = ()) -> None:
    """Add ``additions`` to the stored rows of ``table`` (read, merged, written back, locked where
    several nodes may write the same row)."""
    keys = list(additions)
    changed = ", changed_at" if table == "health_minutes" else ""
    placeholder = ", ?" if changed else ""
    if tx.dialect.for_update:  # the rows must exist to be locked: two nodes never merge the same one at once
        tx.executemany(
            f"INSERT INTO {table} (kind, key, {unit}, counts{changed}) VALUES (?, ?, ?, '{{}}'{placeholder}) "
            "ON CONFLICT DO NOTHING",
            [(*key, *extra) for key in keys],
        )
    stored = stored_counts(tx, table, unit, keys)
    rows = []
    for row_key, cells in additions.items():
        merged = decode(stored.get(row_key, "{}"))
        merged.update(cells)
        rows.append((*row_key, encode(merged), *extra))
    tx.executemany(
        f"INSERT INTO {table} (kind, key, {unit}, counts{changed}) VALUES (?, ?, ?, ?{placeholder}) "
        f"ON CONFLICT (kind, key, {unit}) DO UPDATE SET counts = excluded.counts"
        + (", changed_at = excluded.changed_at" if changed else ""),
        rows,
    )


def _upsert_last(streaks: bool) -> str:
    """The upsert of the last-seen facts. ``failing_since``: since when every attempt failed (0
    after a success); a batch that saw a success knows it for itself, one that saw only
    failures keeps a streak already running. Without ``streaks`` (the backfill of schema
    version 4, older than the column) it is left out."""
    streak_column, streak_value, streak_update = "", "", ""
    if streaks:
        streak_column, streak_value = ", failing_since", ", ?"
        streak_update = (
            "failing_since = CASE WHEN excluded.last_success > 0 OR health_last.failing_since = 0 "
            "THEN excluded.failing_since ELSE health_last.failing_since END, "
        )
    return (
        f"INSERT INTO health_last (kind, key, last_success, last_failure, last_error{streak_column}, updated_at) "
        f"VALUES (?, ?, ?, ?, ?{streak_value}, ?) ON CONFLICT (kind, key) DO UPDATE SET "
        "last_success = CASE WHEN excluded.last_success > health_last.last_success "
        "THEN excluded.last_success ELSE health_last.last_success END, "
        "last_error = CASE WHEN excluded.last_failure > 0 AND excluded.last_failure >= health_last.last_failure "
        "THEN excluded.last_error ELSE health_last.last_error END, "
        "last_failure = CASE WHEN excluded.last_failure > health_last.last_failure "
        f"THEN excluded.last_failure ELSE health_last.last_failure END, {streak_update}"
        "updated_at = excluded.updated_at"
    )


@dataclass
class HealthCounts:
    """The counts one transaction's attempts add up to, written once before it commits.

    ``last`` holds, per key: last success, last failure, its error, and since when every attempt
    failed (``failing_since``, in the order attempts are added: a success resets it to 0, a
    failure sets it when it is 0), which auto-disable reads.
    """

    cells: dict[RowKey, Cells] = field(default_factory=dict)
    last: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    #: Whether ``failing_since`` is written (not by the schema version 4 backfill).
    streaks: bool = True

    def add(self, webhook_id: str, url: str, start: float, duration_ms: float, outcome: Outcome, error: str) -> None:
        minute, cell = int(start // 60), (outcome.value, latency_slot(duration_ms))
        for kind, key in ((WEBHOOK, webhook_id), (DESTINATION, url)):
            self.cells.setdefault((kind, key, minute), Counter())[cell] += 1
            last = self.last.setdefault((kind, key), [0.0, 0.0, "", 0.0])
            if outcome is Outcome.SUCCESS:
                last[0] = max(last[0], start)
                last[3] = 0.0
            else:
                if start >= last[1]:
                    last[1], last[2] = start, error
                if not last[3]:
                    last[3] = start

    def flush(self, tx: Tx) -> None:
        now = time.time()
        _merge_into(tx, "health_minutes", "minute", self.cells, extra=(now,))
        width = 4 if self.streaks else 3
        tx.executemany(
            _upsert_last(self.streaks),
            [(kind, key, *values[:width], now) for (kind, key), values in self.last.items()],
        )


def failing_webhooks(tx: Tx, since_before: float, limit: int) -> list[tuple[str, float, str]]:
    """Active webhooks whose every attempt failed since before ``since_before``: (id, failing
    since, last error), oldest first."""
    rows = tx.all(
        "SELECT w.id, h.failing_since, h.last_error FROM webhooks w "
        "JOIN health_last h ON h.kind = ? AND h.key = w.id "
        "WHERE w.status = 'ACTIVE' AND h.failing_since > 0 AND h.failing_since < ? "
        "ORDER BY h.failing_since LIMIT ?",
        [WEBHOOK, since_before, limit],
    )
    return [(row[0], float(row[1]), row[2]) for row in rows]


def reset_failing(tx: Tx, webhook_id: str) -> None:
    """Start the webhook's failure streak afresh (it was activated again, or given a new URL)."""
    tx.execute("UPDATE health_last SET failing_since = 0 WHERE kind = ? AND key = ?", [WEBHOOK, webhook_id])


def counts(tx: Tx) -> HealthCounts:
    """This transaction's counts, flushed by the writer after the last operation."""
    return tx.deferred("health", HealthCounts)


@dataclass(frozen=True)
class HealthRows:
    """Counts as stored: minute rows, hour rows (kind, key, minute or hour, cells) and the
    last-seen facts (kind, key, last success, last failure, last error)."""

    minutes: list[tuple[str, str, int, Cells]]
    hours: list[tuple[str, str, int, Cells]]
    last: list[tuple[str, str, float, float, str]]


def _decoded(rows: Iterable[Any]) -> list[tuple[str, str, int, Cells]]:
    return [(kind, key, int(when), decode(text)) for kind, key, when, text in rows]


def load(tx: Tx, now: float) -> HealthRows:
    """Everything of the last day, for a start."""
    since_minute = int((now - DAY_S) // 60)
    return HealthRows(
        minutes=_decoded(
            tx.all("SELECT kind, key, minute, counts FROM health_minutes WHERE minute > ?", [since_minute])
        ),
        hours=_decoded(tx.all("SELECT kind, key, hour, counts FROM health_hours WHERE hour > ?", [since_minute // 60])),
        last=tx.all("SELECT kind, key, last_success, last_failure, last_error FROM health_last"),
    )


def changed_since(tx: Tx, since: float) -> HealthRows:
    """Minute rows and last-seen facts written at or after ``since`` (by any node)."""
    return HealthRows(
        minutes=_decoded(tx.all("SELECT kind, key, minute, counts FROM health_minutes WHERE changed_at >= ?", [since])),
        hours=[],
        last=tx.all(
            "SELECT kind, key, last_success, last_failure, last_error FROM health_last WHERE updated_at >= ?", [since]
        ),
    )


def compact(tx: Tx, now: float, keys: int = 500) -> int:
    """Fold the minute rows of up to ``keys`` keys older than ``MINUTE_ROWS_KEPT`` minutes into
    hour rows (whole hours only); return how many keys were looked at (call again while it is
    not 0). ``forget`` drops what is older than a day, once per housekeeping pass.

    Only the rows this transaction's DELETE removed are folded (``RETURNING``), never rows read
    before: two compactions can overlap on PostgreSQL (housekeeping handed over to another node,
    or a paused node resuming), and both then see the same minute rows; one deletes them, the
    other's DELETE waits for it and removes nothing, so each row is counted once. Read first
    and deleted after, both would fold their read and the hour would count the rows twice.
    """
    cutoff = (int(now // 60) - MINUTE_ROWS_KEPT) // 60 * 60
    # From the minute index: only old rows are read, and a call with nothing to fold (every
    # pass ends with one) reads none, where SQLite's own choice scans the whole table.
    batch = tx.all(
        f"SELECT DISTINCT kind, key FROM health_minutes{tx.dialect.indexed_by('health_minutes_minute')} "
        "WHERE minute < ? LIMIT ?",
        [cutoff, keys],
    )
    if not batch:
        return 0
    by_kind: dict[str, list[str]] = {}
    for kind, key in batch:
        by_kind.setdefault(kind, []).append(key)
    hours: dict[RowKey, Cells] = {}
    for kind, names in by_kind.items():
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            # One kind per statement, its keys a list: a range of the primary key per key on
            # both stores (``(kind, key) IN (VALUES ...)`` read every old minute row instead).
            for _, key, minute, text in tx.all(
                f"DELETE FROM health_minutes WHERE kind = ? AND key IN ({marks(len(chunk))}) AND minute < ? "
                "RETURNING kind, key, minute, counts",
                [kind, *chunk, cutoff],
            ):
                hours.setdefault((kind, key, int(minute) // 60), Counter()).update(decode(text))
    if hours:
        _merge_into(tx, "health_hours", "hour", hours)
    return len(batch)


def forget(tx: Tx, now: float) -> int:
    """Drop hour rows older than a day and the last-seen facts of keys gone for a day: a
    webhook deleted, or a URL no webhook uses any more (every start loads all of
    ``health_last``, so keys that came and went must not pile up for ever); those of webhooks
    and URLs in use stay however old. Returns how many rows went.

    Once per housekeeping pass, not per batch of ``compact``: each statement reads every hour
    row, and every last-seen fact a day old. Keys still in use are subtracted as a set
    (``EXCEPT``), which both stores plan as one pass over each side and which a NULL cannot
    upset, unlike ``NOT IN (subquery)``; ``NOT EXISTS`` would look up each key in
    ``webhooks``, and SQLite, with no index on ``url``, would scan all webhooks for each
    destination (a second for 10,000 keys and 5,000 webhooks, against 6 ms).
    """
    removed = tx.execute("DELETE FROM health_hours WHERE hour < ?", [int((now - DAY_S) // 3600) - 1]).rowcount
    for kind, column in ((WEBHOOK, "id"), (DESTINATION, "url")):
        removed += tx.execute(
            "DELETE FROM health_last WHERE kind = ? AND key IN "
            f"(SELECT key FROM health_last WHERE kind = ? AND updated_at < ? EXCEPT SELECT {column} FROM webhooks)",
            [kind, kind, now - DAY_S],
        ).rowcount
    return removed
