"""SQLite's query plans of what an operation runs, for tests that pin a plan, not a duration.

hookd never runs ANALYZE, so SQLite plans every statement from its schema alone: the same plan
on an empty test database as on a year of data. A test can therefore check, exactly and without
timing anything, that a query reads by an index rather than scanning a table or sorting it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Tx

T = TypeVar("T")


@dataclass
class Planned:
    """A statement as run, and SQLite's plan of it (the detail column of EXPLAIN QUERY PLAN)."""

    sql: str
    plan: list[str]

    def scans(self) -> list[str]:
        """Tables read whole: SCAN lines, but for a VALUES list read once (``SCAN 3 CONSTANT
        ROWS``, ``SCAN CONSTANT ROW``, and ``SCAN v`` for its alias)."""
        return [line for line in self.plan if line.startswith("SCAN ") and not self._values(line)]

    @staticmethod
    def _values(line: str) -> bool:
        return line.endswith(("CONSTANT ROW", "CONSTANT ROWS")) or line == "SCAN v"


@dataclass
class _PlanningConnection:
    """Passes every statement on, noting the plan of each SELECT and DELETE first."""

    conn: Any
    planned: list[Planned] = field(default_factory=list)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if sql.lstrip().upper().startswith(("SELECT", "DELETE")):
            plan = [str(row[3]) for row in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            self.planned.append(Planned(sql, plan))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:  # executemany and the rest, unchanged
        return getattr(self.conn, name)


def write_planned(store: Backend, body: Callable[[Tx], T]) -> tuple[T, list[Planned]]:
    """Run ``body`` in a write transaction of a SQLite ``store``; return its result and the plans
    of the SELECTs and DELETEs it ran."""
    assert store.dialect.name == "sqlite", "plans are SQLite's"
    noted: list[Planned] = []

    def planned(tx: Tx) -> T:
        conn = _PlanningConnection(tx.conn)
        result = body(Tx(conn, tx.dialect, tx.notifications, tx.memo, tx.pending))
        noted.extend(conn.planned)
        return result

    return store.write(planned), noted
