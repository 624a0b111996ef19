"""Health counts in the store: written with the attempts, loaded at start, tailed after.

Each transaction that records attempts gathers their counts per (webhook or destination,
minute, outcome, latency slot) and writes them once, at its end, as increments: so the counts
on disk always match the attempts on disk, a crash included, and a restart loads a few rows per
key and minute instead of every attempt of the last day. Rows carry the time they last changed,
so a node keeps up with the counts every node writes by reading only what changed since it last
looked (``changed_since``).

Minute rows older than two hours are folded into hour rows (``compact``), so a day of history is
at most 2 x 60 minute rows and 24 hour rows per key and cell.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hookd.engine.health import DESTINATION, WEBHOOK, latency_slot
from hookd.engine.model import Outcome
from hookd.engine.store.sql import Tx

#: Minutes kept as minute rows before they are folded into their hour.
MINUTE_ROWS_KEPT = 120
DAY_S = 86400.0

_UPSERT_MINUTE = (
    "INSERT INTO health_minutes (kind, key, minute, outcome, slot, count, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, key, minute, outcome, slot) DO UPDATE SET "
    "count = health_minutes.count + excluded.count, changed_at = excluded.changed_at"
)
_UPSERT_LAST = (
    "INSERT INTO health_last (kind, key, last_success, last_failure, last_error, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET "
    "last_success = CASE WHEN excluded.last_success > health_last.last_success "
    "THEN excluded.last_success ELSE health_last.last_success END, "
    "last_error = CASE WHEN excluded.last_failure > 0 AND excluded.last_failure >= health_last.last_failure "
    "THEN excluded.last_error ELSE health_last.last_error END, "
    "last_failure = CASE WHEN excluded.last_failure > health_last.last_failure "
    "THEN excluded.last_failure ELSE health_last.last_failure END, "
    "updated_at = excluded.updated_at"
)


@dataclass
class HealthCounts:
    """The counts one transaction's attempts add up to, written once before it commits."""

    cells: Counter[tuple[str, str, int, str, int]] = field(default_factory=Counter)
    last: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def add(self, webhook_id: str, url: str, start: float, duration_ms: float, outcome: Outcome, error: str) -> None:
        minute, slot = int(start // 60), latency_slot(duration_ms)
        for kind, key in ((WEBHOOK, webhook_id), (DESTINATION, url)):
            self.cells[(kind, key, minute, outcome.value, slot)] += 1
            last = self.last.setdefault((kind, key), [0.0, 0.0, ""])
            if outcome is Outcome.SUCCESS:
                last[0] = max(last[0], start)
            elif start >= last[1]:
                last[1], last[2] = start, error

    def flush(self, tx: Tx) -> None:
        now = time.time()
        tx.executemany(_UPSERT_MINUTE, [(*key, count, now) for key, count in self.cells.items()])
        tx.executemany(_UPSERT_LAST, [(kind, key, *values, now) for (kind, key), values in self.last.items()])


def counts(tx: Tx) -> HealthCounts:
    """This transaction's counts, flushed by the writer after the last operation."""
    return tx.deferred("health", HealthCounts)


@dataclass(frozen=True)
class HealthRows:
    """Counts as stored: minute cells, hour cells and the last-seen facts."""

    minutes: list[tuple[str, str, int, str, int, int]]
    hours: list[tuple[str, str, int, str, int, int]]
    last: list[tuple[str, str, float, float, str]]


def load(tx: Tx, now: float) -> HealthRows:
    """Everything of the last day, for a start."""
    since_minute = int((now - DAY_S) // 60)
    return HealthRows(
        minutes=tx.all(
            "SELECT kind, key, minute, outcome, slot, count FROM health_minutes WHERE minute > ?", [since_minute]
        ),
        hours=tx.all(
            "SELECT kind, key, hour, outcome, slot, count FROM health_hours WHERE hour > ?", [since_minute // 60]
        ),
        last=tx.all("SELECT kind, key, last_success, last_failure, last_error FROM health_last"),
    )


def changed_since(tx: Tx, since: float) -> HealthRows:
    """Minute cells and last-seen facts written at or after ``since`` (by any node)."""
    return HealthRows(
        minutes=tx.all(
            "SELECT kind, key, minute, outcome, slot, count FROM health_minutes WHERE changed_at >= ?", [since]
        ),
        hours=[],
        last=tx.all(
            "SELECT kind, key, last_success, last_failure, last_error FROM health_last WHERE updated_at >= ?", [since]
        ),
    )


def compact(tx: Tx, now: float) -> int:
    """Fold minute rows older than ``MINUTE_ROWS_KEPT`` minutes into hour rows and drop hours
    older than a day; return how many minute rows were folded."""
    cutoff = (int(now // 60) - MINUTE_ROWS_KEPT) // 60 * 60  # whole hours only
    tx.execute(
        "INSERT INTO health_hours (kind, key, hour, outcome, slot, count) "
        "SELECT kind, key, minute / 60, outcome, slot, SUM(count) FROM health_minutes WHERE minute < ? "
        "GROUP BY kind, key, minute / 60, outcome, slot "
        "ON CONFLICT (kind, key, hour, outcome, slot) DO UPDATE SET count = health_hours.count + excluded.count",
        [cutoff],
    )
    folded = tx.execute("DELETE FROM health_minutes WHERE minute < ?", [cutoff]).rowcount
    tx.execute("DELETE FROM health_hours WHERE hour < ?", [int((now - DAY_S) // 3600) - 1])
    return folded
