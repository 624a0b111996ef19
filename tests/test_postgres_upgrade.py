"""A rolling upgrade on PostgreSQL: the first node of the new release migrates the schema while
the nodes of the release before keep writing to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from hookd.engine.store import postgres_schema
from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.shared_schema import PINGS
from tests.support.postgres import PostgresServer


def _database_before_the_pings_index(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    database = postgres_server.new_database()
    with monkeypatch.context() as before:
        before.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:-1])
        old = PostgresBackend(database)
        old.open(readers=1)
        old.close()
    return database


@contextmanager
def _opening(database: str) -> Iterator[list[BaseException]]:
    """A node of the new release starting (and migrating) in a thread; yields its errors."""
    errors: list[BaseException] = []

    def start() -> None:
        backend = PostgresBackend(database)
        try:
            backend.open(readers=1)
        except BaseException as error:
            errors.append(error)
        finally:
            backend.close()

    thread = threading.Thread(target=start)
    thread.start()
    try:
        yield errors
    finally:
        thread.join(timeout=60)
        assert not thread.is_alive()


def _index_state(conn: psycopg.Connection[Any]) -> tuple[bool | None, int]:
    """Whether the pings index is valid (None: absent), and the schema version."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'deliveries_pings'"
    ).fetchone()
    version = conn.execute("SELECT version FROM schema_version").fetchone()
    assert version is not None
    return (None if row is None else bool(row[0])), int(version[0])


def _wait_for_the_index_build_to_wait(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'CREATE INDEX%%' AND wait_event_type = 'Lock'"
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the migration never started building the index")


@contextmanager
def _building_behind_a_write_batch(database: str) -> Iterator[tuple[psycopg.Connection[Any], list[BaseException]]]:
    """A new node migrating while a write batch of a node of the release before is open (so the
    index build waits for it): yields another connection, once the build waits, and the new
    node's errors; the batch ends on the way out, and the build with it."""
    with psycopg.connect(database, autocommit=True) as batch, psycopg.connect(database, autocommit=True) as other:
        batch.execute("BEGIN")
        batch.execute("LOCK TABLE deliveries IN ROW EXCLUSIVE MODE")  # what every insert takes
        with _opening(database) as errors:
            try:
                _wait_for_the_index_build_to_wait(other)
                yield other, errors
            finally:
                batch.execute("COMMIT")


def test_the_index_is_built_while_the_nodes_before_keep_writing(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the index was built by a plain CREATE INDEX: queued behind a write batch in
    # progress, it held every later write to deliveries, on every node, until the build ended.
    database = _database_before_the_pings_index(postgres_server, monkeypatch)
    with _building_behind_a_write_batch(database) as (later, errors):
        later.execute("SET lock_timeout = '2s'")
        with later.transaction():
            later.execute("LOCK TABLE deliveries IN ROW EXCLUSIVE MODE")  # not held
    assert not errors
    with psycopg.connect(database, autocommit=True) as conn:
        assert _index_state(conn) == (True, len(postgres_schema.MIGRATIONS))


def test_an_index_left_invalid_by_a_build_cut_short_is_built_again(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = _database_before_the_pings_index(postgres_server, monkeypatch)
    with psycopg.connect(database, autocommit=True) as conn:
        # What a node that died mid-build leaves: the index, marked invalid (never used).
        conn.execute(PINGS[0])
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'deliveries_pings'::regclass")
        assert _index_state(conn) == (False, len(postgres_schema.MIGRATIONS) - 1)
        with _opening(database) as errors:
            pass
        assert not errors
        assert _index_state(conn) == (True, len(postgres_schema.MIGRATIONS))


def test_a_node_of_the_release_before_starting_during_the_build_starts_and_the_build_goes_on(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The release before waits for the migration lock in pg_advisory_lock. Before, the new node
    # held that lock while it built the index: the build waited for the waiting node's snapshot,
    # the node for the lock, and PostgreSQL ended the deadlock by failing the build.
    database = _database_before_the_pings_index(postgres_server, monkeypatch)
    with _building_behind_a_write_batch(database) as (old, errors):
        old.execute("SET lock_timeout = '5s'")
        old.execute("SELECT pg_advisory_lock(%s)", [postgres_schema._MIGRATION_LOCK])  # what it did
        assert _index_state(old)[1] == len(postgres_schema.MIGRATIONS) - 1  # nothing it knows to do
        old.execute("SELECT pg_advisory_unlock(%s)", [postgres_schema._MIGRATION_LOCK])
    assert not errors
    with psycopg.connect(database, autocommit=True) as conn:
        assert _index_state(conn) == (True, len(postgres_schema.MIGRATIONS))
