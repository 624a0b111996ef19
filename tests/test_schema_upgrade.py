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
    with monkeypatch.context() as before:  # the hookd before webhook versions
        before.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:-1])
        before.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:-1])
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
