"""Reading a webhook through one node right after another node changed it (and a ping asked for
through a node that does not own its destination), in-process on a real
PostgreSQL database. The node that reads has not heard of the change (its notifications are
held back, as they are for a moment in a running cluster): what it answers must still be what
was committed. The acceptance tests start whole nodes (test_cluster.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from hookd.engine import Engine, EngineConfig, EventInput
from hookd.engine import core as core_module
from hookd.engine.breaker import BreakerPolicy
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.errors import NotFound, ResourceExhausted
from hookd.engine.jobs import PreparedEvent
from hookd.engine.model import Outcome, Status, Webhook
from hookd.engine.store import delivery_ops, health_ops, webhook_ops
from hookd.engine.store.backend import open_backend
from hookd.engine.store.sql import Tx
from hookd.engine.store.writer import _Op, partial_batch
from hookd.engine.validation import WebhookInput
from tests.support.engine import until
from tests.support.nodes import membership_of, url_owned_by
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver, Reply, always
from tests.support.stores import patient
from tests.support.webhooks import stored_webhook

URL = "http://127.0.0.1:9/hook"


def _node(database: str, node_id: str, **settings: Any) -> Engine:
    return Engine(
        EngineConfig(
            database=database,
            node_id=node_id,
            destinations=DestinationPolicy.from_entries(["127.0.0.0/8"], allow_http=True),
            max_webhooks_per_type=3,
            **settings,
        )
    )


async def _create(node: Engine) -> Webhook:
    """An order.created webhook to ``URL``, made through ``node``."""
    return await node.create_webhook(WebhookInput(resource="order", event="created", url=URL))


async def _until_a_lock_is_waited_for(conn: psycopg.Connection[Any], *, advisory: bool = False) -> None:
    """Return once a session of this test's database waits for a lock (other tests' databases
    share the server, and their lock waits must not count), an advisory one if so asked."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    if advisory:
        query += " AND wait_event = 'advisory'"
    while not conn.execute(query).fetchone()[0]:  # type: ignore[index]
        await trio.sleep(0.01)


@asynccontextmanager
async def _two_nodes(
    database: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[tuple[Engine, Engine]]:
    """Two nodes on one database; the second never hears of the first's webhook changes."""
    writer, reader = _node(database, "writer", **settings), _node(database, "reader", **settings)

    async def deaf(*args: object) -> None:
        return None

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await nursery.start(reader.run)
            # What the reader's notifications and its backstop would apply, it never hears.
            monkeypatch.setattr(reader._sync, "_webhooks", deaf)
            monkeypatch.setattr(reader._sync, "_catch_up", deaf)
            yield writer, reader
            nursery.cancel_scope.cancel()


async def test_a_webhook_made_on_one_node_is_read_as_committed_on_another(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        assert reader.registry.get(hook.id) is None  # it has not heard, and it need not have
        assert (await reader.get_webhook(hook.id)).url == URL
        snapshot = await reader.health_snapshot([hook.id])  # NotFound, then no figures, before
        assert [stats.key for stats in snapshot.webhooks] == [f"webhooks/{hook.id}"]
        page = await reader.list_deliveries(hook.id, "", None, 10, "")
        assert page.items == []

        # A change through the node that had not heard applies to the committed row.
        changed = await reader.update_webhook(hook.id, WebhookInput(status=Status.INACTIVE), ["status"])
        assert changed.status is Status.INACTIVE
        assert (await writer.get_webhook(hook.id)).status is Status.INACTIVE

        await writer.delete_webhook(hook.id)
        with pytest.raises(NotFound):
            await reader.get_webhook(hook.id)
        with pytest.raises(NotFound):
            await reader.update_webhook(hook.id, WebhookInput(status=Status.ACTIVE), ["status"])


async def test_the_webhooks_per_type_limit_holds_across_nodes(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        # Both nodes create at once, four each, on a type with room for three: the nodes'
        # transactions count in turn, so three get in between them.
        created: list[str] = []

        async def create(node: Engine, n: int) -> None:
            with contextlib.suppress(ResourceExhausted):
                hook = await node.create_webhook(WebhookInput(resource="order", event="created", url=f"{URL}/{n}"))
                created.append(hook.id)

        async with trio.open_nursery() as creates:
            for n in range(8):
                creates.start_soon(create, (writer, reader)[n % 2], n)
        assert len(created) == 3
        # The node that has not heard of them still counts them.
        with pytest.raises(ResourceExhausted):
            await reader.create_webhook(WebhookInput(resource="order", event="created", url=f"{URL}/more"))


async def test_a_webhook_create_takes_the_type_lock_before_any_other(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch that changes webhook W and then creates one: if the create waited for the type
    # lock while the batch already held W's row, a node holding the type lock and waiting for
    # W's row would close a deadlock. The lock is taken first, so W stays free meanwhile.
    database = postgres_server.new_database()
    async with _two_nodes(database, monkeypatch) as (writer, _):
        hook = await _create(writer)
    backend = open_backend(database)
    backend.open(readers=1)
    holder = psycopg.connect(database, autocommit=True)
    checker = psycopg.connect(database, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", [webhook_ops._TYPE_ROOM_LOCK])
        batch: list[_Op[Any]] = [
            _Op(partial(webhook_ops.update_webhook, webhook_id=hook.id, changes={"description": "x"}, now=1.0), False),
            _Op(
                partial(webhook_ops.insert_webhook, webhook=replace(hook, id="wh_second", url=f"{URL}/2"), limit=10),
                False,
                first=webhook_ops.lock_type_room,
            ),
        ]
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(trio.to_thread.run_sync, backend.write, partial_batch(batch)))
                try:
                    await _until_a_lock_is_waited_for(checker)
                    with checker.transaction():  # raises LockNotAvailable if the batch holds W
                        locked = checker.execute(
                            "SELECT id FROM webhooks WHERE id = %s FOR UPDATE NOWAIT", [hook.id]
                        ).fetchall()
                finally:  # the batch's thread cannot be cancelled: let it finish whatever happened
                    holder.execute("SELECT pg_advisory_unlock(%s)", [webhook_ops._TYPE_ROOM_LOCK])
        assert locked == [(hook.id,)]
        assert [op.error for op in batch] == [None, None]
        assert checker.execute("SELECT count(*) FROM webhooks").fetchone() == (2,)
    finally:
        holder.close()
        checker.close()
        backend.close()


class _HeldRead:
    """Holds the reader node's next reload read (of named webhooks) after it is made, until
    released: a read under way while the node commits a change of its own. The node's other
    reads (its monitor's, its dispatcher's) go through untouched."""

    def __init__(self, node: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made, self.release = trio.Event(), trio.Event()
        original = node._readers.run

        async def run(fn: Any) -> Any:
            result = await original(fn)
            if getattr(fn, "func", None) is webhook_ops.find_webhooks and not self.made.is_set():
                self.made.set()
                await self.release.wait()
            return result

        monkeypatch.setattr(node._readers, "run", run)


async def test_a_reload_read_before_this_nodes_own_change_is_read_again(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        await reader._reload_webhooks([hook.id])
        held = _HeldRead(reader, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader._reload_webhooks, [hook.id])  # a notification of some change
            await held.made.wait()
            # Meanwhile this node commits a change of its own; then the reload's read lands.
            await reader.update_webhook(hook.id, WebhookInput(url=f"{URL}/moved"), ["url"])
            held.release.set()
        # Applied as read, memory would have gone back to the URL before the change.
        current = reader.registry.get(hook.id)
        assert current is not None and current.url == f"{URL}/moved"


async def test_a_change_made_on_a_node_that_lags_moves_the_actors_it_knows(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        await reader._reload_webhooks([hook.id])  # the reader knows the first URL ...
        await writer.update_webhook(hook.id, WebhookInput(url=f"{URL}/moved"), ["url"])  # ... not this
        cancelled: list[tuple[str, str]] = []
        poked: list[str] = []
        monkeypatch.setattr(reader._dispatcher, "cancel_webhook", lambda url, hook_id: cancelled.append((url, hook_id)))
        monkeypatch.setattr(reader._dispatcher, "poke", poked.append)
        rotated = await reader.rotate_secret(hook.id, 0.0)
        assert rotated.url == f"{URL}/moved"
        # The actor of the URL the reader knew lets the webhook go; the new URL's is woken.
        assert cancelled == [(URL, hook.id)]
        assert poked == [f"{URL}/moved"]


async def test_a_webhook_heard_of_wakes_its_destination_even_when_inactive(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ping made through another node waits at the destination's owner for the webhook.
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await writer.create_webhook(
            WebhookInput(resource="order", event="created", url=URL, status=Status.INACTIVE)
        )
        poked: list[str] = []
        monkeypatch.setattr(reader._dispatcher, "poke", poked.append)
        await reader._reload_webhooks([hook.id])
        assert poked == [URL]


async def test_a_change_waits_for_another_nodes_change_of_the_same_webhook_and_keeps_it(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres_server.new_database()
    async with _two_nodes(database, monkeypatch) as (writer, reader):
        hook = await _create(writer)
        other = psycopg.connect(database)  # another node's transaction, caught half-way
        watcher = psycopg.connect(database, autocommit=True)
        try:
            other.execute("UPDATE webhooks SET description = 'changed elsewhere' WHERE id = %s", [hook.id])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.rotate_secret, hook.id, 0.0)
                try:
                    await _until_a_lock_is_waited_for(watcher)
                finally:  # the rotation's thread waits for this: let it go whatever happened
                    other.commit()
            stored = watcher.execute("SELECT description FROM webhooks WHERE id = %s", [hook.id]).fetchone()
            # Read before the other change committed, the row would have been written back over it.
            assert stored == ("changed elsewhere",)
        finally:
            other.close()
            watcher.close()


async def test_a_read_from_before_this_node_created_the_webhook_does_not_remove_it(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "new_webhook_id", lambda: "wh_known_in_advance")
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (_, reader):
        held = _HeldRead(reader, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader._reload_webhooks, ["wh_known_in_advance"])
            await held.made.wait()  # it found no such webhook ...
            await _create(reader)
            held.release.set()  # ... and lands after the node created it
        assert reader.registry.get("wh_known_in_advance") is not None


async def test_a_read_from_before_this_node_deleted_the_webhook_does_not_bring_it_back(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (_, reader):
        hook = await _create(reader)
        held = _HeldRead(reader, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader._reload_webhooks, [hook.id])
            await held.made.wait()
            await reader.delete_webhook(hook.id)
            held.release.set()
        assert reader.registry.get(hook.id) is None
        assert reader.registry.subscriber_count("order", "created") == 0


async def test_a_commit_hook_never_takes_memory_back_to_an_older_version(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This node's change commits; before its hook runs, another node's later change is read
    # and applied. The hook must leave the newer version in place.
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        mine = replace(hook, url=f"{URL}/mine", version=hook.version + 1)
        theirs = replace(hook, url=f"{URL}/theirs", version=hook.version + 2)
        reader.registry.put(theirs)
        reader._updated_here((hook, mine))
        current = reader.registry.get(hook.id)
        assert current is not None and current.url == f"{URL}/theirs"


async def test_health_of_a_webhook_deleted_through_another_node_is_not_found(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        await reader.health_snapshot([hook.id])
        await writer.delete_webhook(hook.id)  # the reader does not hear of it
        with pytest.raises(NotFound):
            await reader.health_snapshot([hook.id])


async def test_a_change_through_a_node_that_never_heard_of_the_webhook_wakes_its_destination(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        poked: list[str] = []
        monkeypatch.setattr(reader._dispatcher, "poke", poked.append)
        await reader.rotate_secret(hook.id, 0.0)
        assert poked == [URL]  # its actor had dropped the webhook's jobs as unknown


def test_the_type_lock_is_taken_once_even_when_the_batch_is_run_again_op_by_op(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After an op fails, the batch is undone to its savepoint and run op by op; the lock taken
    # first, before the savepoint, is still held, and the memo that says so must survive too.
    backend = open_backend(postgres_server.new_database())
    backend.open(readers=1)
    statements: list[str] = []
    scalar = Tx.scalar

    def counted(self: Tx, sql: str, params: Any = ()) -> Any:
        statements.append(sql)
        return scalar(self, sql, params)

    monkeypatch.setattr(Tx, "scalar", counted)

    def failing(tx: Tx) -> None:
        raise ValueError("this op fails")

    hook = stored_webhook("wh_after_a_failure")
    batch: list[_Op[Any]] = [
        _Op(failing, False),
        _Op(partial(webhook_ops.insert_webhook, webhook=hook, limit=10), False, first=webhook_ops.lock_type_room),
    ]
    try:
        backend.write(partial_batch(batch))
    finally:
        backend.close()
    assert isinstance(batch[0].error, ValueError) and batch[1].error is None
    assert sum("pg_advisory_xact_lock" in sql for sql in statements) == 1


async def test_an_older_read_never_lands_after_a_newer_one(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A health call's reload reads the webhook; another node deletes it; the notification's
    # reload reads it gone. Had the first landed last, the deleted webhook would be back in
    # memory for good (no notification of it will come again).
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        held = _HeldRead(reader, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader._reload_webhooks, [hook.id])
            await held.made.wait()  # read: present
            await writer.delete_webhook(hook.id)
            nursery.start_soon(reader._reload_webhooks, [hook.id])  # will read: gone
            await trio.sleep(0.2)
            held.release.set()
        assert reader.registry.get(hook.id) is None
        assert reader.registry.subscriber_count("order", "created") == 0


async def test_a_change_that_kept_the_version_is_taken_all_the_same(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node of the release before versions (during a rolling upgrade), or a hand-made UPDATE,
    # changes a row without counting its version.
    database = postgres_server.new_database()
    async with _two_nodes(database, monkeypatch) as (writer, reader):
        hook = await _create(writer)
        await reader._reload_webhooks([hook.id])
        with psycopg.connect(database, autocommit=True) as by_hand:
            by_hand.execute("UPDATE webhooks SET status = 'INACTIVE' WHERE id = %s", [hook.id])
        await reader._reload_webhooks([hook.id])
        current = reader.registry.get(hook.id)
        assert current is not None and current.status is Status.INACTIVE


async def test_every_node_reads_the_webhooks_again_on_a_clock(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever it heard: the catch-up after a silence never comes on a busy cluster.
    monkeypatch.setattr(core_module, "WEBHOOK_REFRESH_S", 0.1)
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await _create(writer)
        with trio.fail_after(5):
            while reader.registry.get(hook.id) is None:  # the reader hears nothing of it
                await trio.sleep(0.05)


async def test_a_commit_hook_that_runs_after_another_nodes_delete_does_not_bring_the_webhook_back(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This node's change of W commits; another node deletes W and the pump applies that; then
    # the change's hook runs. Versions cannot say the hook is stale: W is simply not in memory.
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        changed = await _create(writer)
        made = await writer.create_webhook(WebhookInput(resource="order", event="created", url=f"{URL}/2"))
        await reader._reload_webhooks([changed.id, made.id])
        reader._apply_stored(changed.id, None, changed_meanwhile=False)  # the pump: deleted elsewhere
        reader._apply_stored(made.id, None, changed_meanwhile=False)
        reader._updated_here((changed, replace(changed, description="late", version=changed.version + 1)))
        reader._created(replace(made, version=made.version + 1))
        assert reader.registry.get(changed.id) is None
        assert reader.registry.get(made.id) is None
        assert reader.registry.subscriber_count("order", "created") == 0


async def test_a_ping_through_another_node_goes_ahead_of_what_a_breaker_holds(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ping asked for through a node that does not own the destination reaches the owner from
    disk. Like a ping offered on the owner itself, it goes to the front of the queue: pings are
    sent while the breaker is open, and a delivery the open breaker holds must not hold it."""
    # The ping waits up to PING_QUEUE_WAIT_S (10 s) for its turn; the breaker holds for 30 s.
    database = postgres_server.new_database()
    receiver = Receiver(always(Reply(status=500)))
    config = {"breaker": BreakerPolicy(failure_threshold=1)}
    one, two = _node(database, "one", **config), _node(database, "two", **config)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(one.run)
                await nursery.start(two.run)
                url = receiver.url("/held")
                hook = await one.create_webhook(WebhookInput(resource="order", event="created", url=url, timeout_s=0.5))
                owner = await until(lambda: _owner_of(url, one, two))
                other = two if owner is one else one
                await owner.publish([EventInput("order", "created", {}, {})], batch=False)
                await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))  # fails: the breaker opens
                await owner.publish([EventInput("order", "created", {}, {})], batch=False)  # held by it
                _, attempt = await other.test_webhook(hook.id)
                assert attempt.status_code == 500
                nursery.cancel_scope.cancel()
    finally:
        receiver.close()


async def _owner_of(url: str, *nodes: Engine) -> Engine | None:
    owners = [node for node in nodes if node._membership is not None and node._membership.owns(url)]
    return owners[0] if len(owners) == 1 else None


def _failing_for_ten_minutes(tx: Tx, webhook_id: str) -> None:
    health_ops.counts(tx).add(webhook_id, URL, time.time() - 600, 10.0, Outcome.SERVER_ERROR, "HTTP 500")


@pytest.mark.parametrize("change", ["url", "url, caller gone", "delete", "auto-disable"])
async def test_a_change_catches_up_the_deliveries_of_a_publish_under_way_on_another_node(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # Another node's publish has read the webhook and written its delivery, not yet committed,
    # when this node changes the webhook: the change's update of the waiting deliveries cannot
    # see that one. The node then waits for the publish (its type's lock) and sets it right;
    # without that, it stayed at the old URL (no actor sends there) for ever. The new URL is
    # one this node owns: it must load the delivery itself (it does not hear its own
    # notifications), and it must do all this even when the change's caller is gone.
    database = postgres_server.new_database()
    other = open_backend(patient(database))
    other.open(readers=1)
    checker = psycopg.connect(database, autocommit=True)
    receiver = Receiver(always(Reply(status=204)))
    new_url = url_owned_by(receiver, "writer", ["writer", "reader"])
    published, release = threading.Event(), threading.Event()

    def paused_publish(tx: Tx) -> None:
        event = PreparedEvent("evt_under_way", "order.created", "order", "created", 1.0, "{}", "")
        delivery_ops.publish(tx, [event])
        published.set()
        release.wait(30)

    expected = {"delete": (URL, "CANCELLED"), "auto-disable": (URL, "HELD")}.get(change, (new_url, "SUCCEEDED"))

    async def caught_up() -> bool:
        found = checker.execute("SELECT destination, state FROM deliveries WHERE event_id = 'evt_under_way'")
        return found.fetchone() == expected

    async def change_url(node: Engine, hook: Webhook) -> None:
        if change == "url":
            await node.update_webhook(hook.id, WebhookInput(url=new_url), ["url"])
            return
        committed = node._updated_here
        with trio.CancelScope() as caller:

            def committed_then_gone(versions: tuple[Webhook, Webhook]) -> None:
                committed(versions)
                caller.cancel()

            monkeypatch.setattr(node, "_updated_here", committed_then_gone)
            await node.update_webhook(hook.id, WebhookInput(url=new_url), ["url"])
        assert caller.cancelled_caught

    try:
        async with _two_nodes(database, monkeypatch, auto_disable_after_s=60.0) as (node, _):
            await until(lambda: _owns(node, new_url))
            hook = await _create(node)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(trio.to_thread.run_sync, other.write, paused_publish))
                try:
                    assert await trio.to_thread.run_sync(published.wait, 30)
                    if change.startswith("url"):
                        await change_url(node, hook)
                    elif change == "delete":
                        await node.delete_webhook(hook.id)
                    else:  # by housekeeping (this run, or the leader's own if it came first)
                        await node._writer.execute(partial(_failing_for_ten_minutes, webhook_id=hook.id))
                        # Its next commit waits behind the catch-up, which waits for the publish.
                        nursery.start_soon(node.run_maintenance)
                    with trio.fail_after(10):
                        await _until_a_lock_is_waited_for(checker, advisory=True)  # the catch-up's
                finally:  # the publish's thread cannot be cancelled: let it finish whatever happened
                    release.set()
            await until(caught_up)
    finally:
        receiver.close()
        checker.close()
        other.close()
    if change.startswith("url"):
        assert len(receiver.received()) == 1  # sent once, by the owner


async def _owns(node: Engine, url: str) -> bool:
    return membership_of(node).owns(url)
