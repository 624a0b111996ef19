"""Retention: exactly what goes once old (in-process, both stores), and a steady run with a short
retention that keeps the SQLite file flat without losing anything pending or held (real server).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from hookd.client import HookdClient
from hookd.client.client import event_input
from hookd.engine import Engine, EventInput
from hookd.engine.errors import FailedPrecondition, NotFound
from hookd.engine.model import DeliveryRecord, DeliveryState, InactivePolicy, Status
from hookd.engine.retry import RetryPolicy
from hookd.engine.store import retention_ops
from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Tx
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine, until
from tests.support.plans import write_planned
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

RETENTION_S = 3600.0


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {
        "ok": Receiver(),
        "failing": Receiver(always(Reply(status=500))),
        # Retry-After is honoured: the delivery stays PENDING, its next attempt an hour away.
        "later": Receiver(always(Reply(status=429, headers={"retry-after": "3600"}))),
    }
    yield made
    for receiver in made.values():
        receiver.close()


async def deliveries(engine: Engine, webhook_id: str | None = None) -> list[DeliveryRecord]:
    return list((await engine.list_deliveries(webhook_id, "", None, 1000, "")).items)


async def attempt_count(engine: Engine, delivery_id: int) -> int:
    def count(tx: Tx) -> int:
        return int(tx.scalar("SELECT COUNT(*) FROM attempts WHERE delivery_id = ?", [delivery_id]))

    return int(await engine._readers.run(count))


async def event_exists(engine: Engine, event_id: str) -> bool:
    try:
        await engine.get_event(event_id)
    except NotFound:
        return False
    return True


async def test_retention_removes_old_settled_rows_and_keeps_everything_waiting(
    tmp_path: Path, receivers: dict[str, Receiver]
) -> None:
    engine = local_engine(
        tmp_path,
        retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=3600),
        retention_s=RETENTION_S,
        auto_disable_after_s=0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)

        async def hook(resource: str, event: str, url: str, **options: object) -> str:
            data = WebhookInput(resource=resource, event=event, url=url, **options)  # type: ignore[arg-type]
            return (await engine.create_webhook(data)).id

        async def publish(resource: str, event: str, key: str = "") -> str:
            results = await engine.publish([EventInput(resource, event, {"n": 1}, {}, key)], batch=True)
            return results[0].event_id

        ok = await hook("order", "created", receivers["ok"].url())
        failing = await hook("order", "created", receivers["failing"].url())
        later = await hook("order", "created", receivers["later"].url())
        held = await hook("order", "created", receivers["ok"].url("/held"), status=Status.INACTIVE)
        await hook(
            "order",
            "created",
            receivers["ok"].url("/discarded"),
            status=Status.INACTIVE,
            inactive_policy=InactivePolicy.DISCARD,
        )
        cancelled = await hook("order", "updated", receivers["ok"].url("/cancelled"), status=Status.INACTIVE)
        retried = await hook("payment", "failed", receivers["failing"].url("/retried"))

        # Old: everything made before the cutoff.
        mixed = await publish("order", "created")  # one delivery in each state
        only_cancelled = await publish("order", "updated")
        await engine.delete_webhook(cancelled)
        unsubscribed = await publish("product", "created")
        keyed = await publish("customer", "created", key="order-1001")
        only_failed = await publish("payment", "failed")

        def settled(event_id: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                page = await engine.list_deliveries(None, event_id, None, 100, "")
                states = {(d.webhook_id, d.state, d.attempt_count) for d in page.items}
                return {
                    (ok, DeliveryState.SUCCEEDED, 1),
                    (failing, DeliveryState.FAILED, 2),
                    (later, DeliveryState.PENDING, 1),
                } <= states

            return check

        async def old_payment_failed() -> bool:
            return [d.state for d in await deliveries(engine, retried)] == [DeliveryState.FAILED]

        await until(settled(mixed))
        await until(old_payment_failed)
        cutoff = engine.now()
        await trio.sleep(0.01)

        # New: after the cutoff; and the old failed payment is retried, so it changed recently.
        recent = await publish("order", "created")
        (old_retried,) = await deliveries(engine, retried)
        await engine.retry_delivery(retried, old_retried.id)

        async def retried_again() -> bool:
            (delivery,) = await deliveries(engine, retried)
            return delivery.state is DeliveryState.FAILED and delivery.attempt_count == 3

        await until(retried_again)
        await until(settled(recent))
        before = {d.id: d for d in await deliveries(engine)}

        report = await engine.run_maintenance(now=cutoff + RETENTION_S)

        after = {d.id: d for d in await deliveries(engine)}
        removed = {before[i].webhook_id: before[i].state for i in set(before) - set(after)}
        assert sorted(state.value for state in removed.values()) == ["CANCELLED", "DISCARDED", "FAILED", "SUCCEEDED"]
        assert removed[ok] is DeliveryState.SUCCEEDED and removed[failing] is DeliveryState.FAILED
        assert report.deliveries_removed == 4
        for delivery_id in set(before) - set(after):
            assert await attempt_count(engine, delivery_id) == 0
            with pytest.raises(NotFound):
                await engine.get_delivery(None, delivery_id)
        # Never a pending or held one, nor anything recent, nor a delivery changed recently.
        kept = {(d.webhook_id, d.state) for d in after.values() if d.event_id == mixed}
        assert kept == {(later, DeliveryState.PENDING), (held, DeliveryState.HELD)}
        assert all(d.event_id in (mixed, recent, only_failed) for d in after.values())
        assert len([d for d in after.values() if d.event_id == recent]) == 5
        assert await attempt_count(engine, old_retried.id) == 3

        # Events: kept while a pending or held delivery needs them, or while their key is
        # remembered (a day); the others old enough go.
        assert await event_exists(engine, mixed) and await event_exists(engine, recent)
        assert await event_exists(engine, keyed)
        assert (await engine.publish([EventInput("customer", "created", {}, {}, "order-1001")], batch=True))[
            0
        ].duplicate
        for gone in (only_cancelled, unsubscribed, only_failed):
            assert not await event_exists(engine, gone)
        assert report.events_removed == 3
        with pytest.raises(FailedPrecondition, match="removed after the retention period"):
            await engine.retry_delivery(retried, old_retried.id)

        again = await engine.run_maintenance(now=cutoff + RETENTION_S)
        assert (again.deliveries_removed, again.events_removed) == (0, 0)

        # What was held still goes out, with its event, once the webhook is active again.
        await engine.update_webhook(held, WebhookInput(status=Status.ACTIVE), ["status"])

        async def held_arrived() -> bool:
            return len(receivers["ok"].received("/held")) == 2

        await until(held_arrived)
        assert {r.json()["id"] for r in receivers["ok"].received("/held")} == {mixed, recent}
        nursery.cancel_scope.cancel()


@pytest.mark.sqlite_only
async def test_new_databases_give_freed_space_back(tmp_path: Path) -> None:
    engine = local_engine(tmp_path, retention_s=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        nursery.cancel_scope.cancel()
    conn = sqlite3.connect(tmp_path / "hookd.db")
    try:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_pruning_reads_the_oldest_settled_deliveries_from_their_index(store: Backend) -> None:
    """SQLite's plan of a batch's candidates (the same on an empty file as on a full one: hookd
    keeps no statistics): the oldest settled deliveries in order from ``deliveries_settled``,
    about ``limit`` rows read. Left to itself SQLite took ``deliveries_state`` and sorted every
    settled delivery of the retention window for each batch of 500 (70 ms at 270,000, in the
    writer's transaction)."""
    removed, planned = write_planned(store, partial(retention_ops.prune_deliveries, older_than=time.time(), limit=500))
    assert removed == 0
    (candidates,) = planned
    assert "SEARCH deliveries USING INDEX deliveries_settled (update_time<?)" in candidates.plan
    assert not any("TEMP B-TREE" in line for line in candidates.plan), candidates.plan


def publish_round(client: HookdClient, count: int, round_number: int) -> None:
    pad = "x" * 1000  # a realistic order body, so the file's growth shows
    client.publish_events(
        [event_input("order", "created", {"round": round_number, "n": n, "pad": pad}) for n in range(count)]
    )


@pytest.mark.sqlite_only
def test_short_retention_under_steady_load_keeps_the_file_flat_and_loses_nothing_waiting(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--retention", "2s", "--auto-disable-after", "0").start()
    fast = Receiver()
    later = Receiver(always(Reply(status=429, headers={"retry-after": "3600"})))
    try:
        client = server.client()
        client.create_webhook("order", "created", fast.url())
        held = client.create_webhook("payment", "failed", fast.url("/held"), status=pb.Webhook.INACTIVE)
        pending = client.create_webhook("payment", "failed", later.url())
        waiting = [client.publish_event("payment", "failed", data={"n": n}).name for n in range(20)]
        later.wait_for(20)

        rounds, per_round, pace_s = 64, 50, 0.25
        sizes: dict[int, int] = {}
        for number in range(rounds):
            started = time.monotonic()
            publish_round(client, per_round, number)
            if number in (rounds // 3, rounds - 1):
                sizes[number] = os.path.getsize(server.database)
            time.sleep(max(0.0, pace_s - (time.monotonic() - started)))  # a steady rate, not a timing check
        fast.wait_for(rounds * per_round, timeout=60)

        early, late = sizes[rounds // 3], sizes[rounds - 1]
        published_bytes = rounds * per_round * 1000
        # Two thirds of the load more, and the file has not grown with it: old rows made room.
        assert late <= early * 1.25 + 256 * 1024, sizes
        assert late < published_bytes / 2, sizes
        stored = len(list(client.iter_deliveries(page_size=1000)))
        assert stored < rounds * per_round / 2
        # Nothing waiting was removed: every held and pending delivery, with its event.
        assert len(list(client.iter_deliveries(held.name, state=pb.Delivery.HELD))) == 20
        assert len(list(client.iter_deliveries(pending.name, state=pb.Delivery.PENDING))) == 20
        for name in waiting:
            client.get_event(name)
        client.set_status(held.name, pb.Webhook.ACTIVE)
        wait_until(lambda: len(fast.received("/held")) == 20)
    finally:
        fast.close()
        later.close()
        server.stop()


async def test_pruning_commits_in_small_batches_that_let_publishes_through(tmp_path: Path) -> None:
    receiver = Receiver()
    engine = local_engine(tmp_path, maintenance_batch=20, retention_s=60, auto_disable_after_s=0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
            await engine.publish([EventInput("order", "created", {"n": n}, {}) for n in range(200)], batch=True)

            async def all_succeeded() -> bool:
                page = await engine.list_deliveries(None, "", DeliveryState.SUCCEEDED, 1000, "")
                return len(page.items) == 200

            await until(all_succeeded)
            done = trio.Event()
            reports = []

            async def prune() -> None:
                reports.append(await engine.run_maintenance(now=engine.now() + 120))
                done.set()

            nursery.start_soon(prune)
            # Acknowledged while the pruning, begun first, still has most of its batches to go.
            await engine.publish([EventInput("customer", "created", {}, {})], batch=False)
            assert not done.is_set()
            await done.wait()
            (report,) = reports
            assert report.deliveries_removed == 200 and report.events_removed >= 200
            assert report.commits >= 200 // 20 * 2
            nursery.cancel_scope.cancel()
    finally:
        receiver.close()
