"""A store written by the previous hookd opens in this one: the schema moves on, rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookd.engine.store import postgres_schema, sqlite_schema, webhook_ops
from hookd.engine.store.backend import open_backend
from hookd.engine.store.rows import WEBHOOK_COLUMNS, webhook_to_row
from hookd.engine.store.sql import Tx
from tests.support.server import default_database
from tests.support.webhooks import stored_webhook

pytestmark = pytest.mark.backends

HOOK = stored_webhook("wh_from_before", description="kept")


def _insert_without_version(tx: Tx) -> None:
    columns = [name for name in WEBHOOK_COLUMNS if name != "version"]
    row = webhook_to_row(HOOK)
    tx.execute(
        f"INSERT INTO webhooks ({', '.join(columns)}, seq) VALUES ({', '.join('?' * len(columns))}, ?)",
        [*(row[name] for name in columns), webhook_ops.next_seq(tx)],
    )


def test_webhooks_stored_before_versions_open_at_version_0_and_count_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = default_database(tmp_path)
    with monkeypatch.context() as before:  # the hookd before webhook versions (SQLite 7, PostgreSQL 4)
        before.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:6])
        before.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:3])
        old = open_backend(database)
        old.open(readers=1)
        old.write(_insert_without_version)
        old.close()
    store = open_backend(database)
    store.open(readers=1)
    try:
        stored = store.read(lambda tx: webhook_ops.find_webhook(tx, HOOK.id))
        assert stored == HOOK  # every field kept; version 0
        _, changed = store.write(
            lambda tx: webhook_ops.update_webhook(tx, HOOK.id, {"description": "changed"}, now=2.0)
        )
        assert changed.version == 1
        assert store.read(lambda tx: webhook_ops.find_webhook(tx, HOOK.id)) == changed
    finally:
        store.close()


def test_a_store_of_the_previous_version_takes_the_pings_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last migration on each store (pending pings by destination) applies to a store the
    hookd before it wrote, and its rows stay."""
    database = default_database(tmp_path)
    with monkeypatch.context() as before:
        before.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:-1])
        before.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:-1])
        old = open_backend(database)
        old.open(readers=1)
        old.write(lambda tx: webhook_ops.insert_webhook(tx, HOOK, limit=10))
        old.close()
    store = open_backend(database)
    store.open(readers=1)
    try:
        assert store.read(lambda tx: webhook_ops.find_webhook(tx, HOOK.id)) is not None
        indexes = store.read(
            lambda tx: tx.all(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
                if tx.dialect.name == "sqlite"
                else "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries'"
            )
        )
        assert ("deliveries_pings",) in [tuple(row) for row in indexes]
    finally:
        store.close()
