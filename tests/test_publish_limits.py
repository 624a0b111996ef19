"""Large publishes: every commit stays short, the limits hold, and nothing is sent before a
publish is stored whole (or ever, when it is abandoned)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from hookd.client import InvalidArgument, ResourceExhausted
from hookd.client.client import event_input
from hookd.engine import Engine, EventInput
from hookd.engine.errors import NotFound
from hookd.engine.errors import ResourceExhausted as EngineResourceExhausted
from hookd.engine.jobs import AttemptResult, PreparedEvent
from hookd.engine.model import DeliveryState, InactivePolicy, Ordering, Outcome, Status, Webhook, WebhookFilter
from hookd.engine.store import delivery_ops, queries, webhook_ops
from hookd.engine.store.backend import Backend
from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.shared_schema import PENDING_PINGS
from hookd.engine.store.sql import Tx
from hookd.engine.validation import WebhookInput
from tests.support.engine import local_engine, until
from tests.support.receiver import Receiver
from tests.support.server import HookdProcess
from tests.support.stores import reopened, wait_for_a_lock_wait
from tests.support.webhooks import stored_webhook

pytestmark = pytest.mark.backends


async def subscribe(engine: Engine, receiver: Receiver, event: str, count: int) -> None:
    for n in range(count):
        await engine.create_webhook(WebhookInput(resource="order", event=event, url=receiver.url(f"/{event}{n}")))


def events(event: str, count: int) -> list[EventInput]:
    return [EventInput("order", event, {"n": n}, {}) for n in range(count)]


async def commits_beyond(engine: Engine, count: int) -> None:
    """Until the store has made more than ``count`` commits."""

    async def beyond() -> bool:
        return engine.store_statistics().commits > count

    await until(beyond)


async def test_a_large_fan_out_is_written_in_short_commits(tmp_path: Path, receiver: Receiver) -> None:
    engine = local_engine(tmp_path, publish_chunk=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await subscribe(engine, receiver, "created", 20)
        await subscribe(engine, receiver, "updated", 1)
        before = engine.store_statistics().commits
        big_done = trio.Event()

        async def big() -> None:
            results = await engine.publish(events("created", 30), batch=True)  # 600 deliveries
            assert [r.delivery_count for r in results] == [20] * 30
            big_done.set()

        nursery.start_soon(big)
        await commits_beyond(engine, before + 1)
        await engine.publish(events("updated", 1), batch=True)
        assert not big_done.is_set(), "a small publish waited for the whole large one"
        await big_done.wait()
        assert engine.store_statistics().commits - before >= 600 // 50 + 1
        await trio.to_thread.run_sync(lambda: receiver.wait_for(601, timeout=30))
        nursery.cancel_scope.cancel()


async def test_an_abandoned_publish_sends_nothing_and_leaves_nothing(tmp_path: Path, receiver: Receiver) -> None:
    engine = local_engine(tmp_path, publish_chunk=20)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await subscribe(engine, receiver, "created", 10)
        before = engine.store_statistics().commits
        with trio.move_on_after(30) as scope:
            publishing = trio.CancelScope()

            async def big() -> None:
                with publishing:
                    await engine.publish(events("created", 50), batch=True)  # 500 deliveries, 25 chunks

            nursery.start_soon(big)
            # Two chunks are stored (they would be due at once if they were visible)...
            await commits_beyond(engine, before + 2)
            publishing.cancel()  # ...then the caller goes away.
        assert not scope.cancelled_caught

        async def cleaned() -> bool:
            page = await engine.list_deliveries(None, "", None, 1000, "")
            return not page.items

        await until(cleaned)
        await trio.sleep(0.5)
        assert receiver.received() == []
        nursery.cancel_scope.cancel()


async def test_staged_deliveries_wait_for_their_event(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunks already stored stay unsent while the publish is not complete."""
    engine = local_engine(tmp_path, publish_chunk=30)
    release = threading.Event()
    original = delivery_ops.finish_staged

    def held(tx: Tx, events: list[PreparedEvent], counts: list[int]) -> Any:
        release.wait(30)  # the only stand-in: the last commit of the publish is slow to come
        return original(tx, events, counts)

    monkeypatch.setattr(delivery_ops, "finish_staged", held)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await subscribe(engine, receiver, "created", 30)
        before = engine.store_statistics().commits
        nursery.start_soon(partial(engine.publish, events("created", 3), batch=True))
        await commits_beyond(engine, before + 2)  # 3 chunks, 90 deliveries, on disk
        await trio.sleep(0.5)
        assert receiver.received() == []
        release.set()
        await trio.to_thread.run_sync(lambda: receiver.wait_for(90, timeout=30))
        nursery.cancel_scope.cancel()


async def test_deliveries_of_an_ordinary_publish_are_due_at_once(tmp_path: Path, receiver: Receiver) -> None:
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await subscribe(engine, receiver, "created", 2)
        await engine.publish(events("created", 3), batch=True)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(6))

        async def done() -> bool:
            page = await engine.list_deliveries(None, "", DeliveryState.SUCCEEDED, 100, "")
            return len(page.items) == 6

        await until(done)
        nursery.cancel_scope.cancel()


async def test_creates_at_once_cannot_pass_the_webhooks_per_type_limit_together(tmp_path: Path) -> None:
    # Six creates under way together on a type with room for three: each is counted in the
    # transaction that stores it, so exactly three get in (not all six on one count taken first).
    engine = local_engine(tmp_path, max_webhooks_per_type=3)
    outcomes: list[str] = []

    async def create(n: int) -> None:
        try:
            await engine.create_webhook(WebhookInput(resource="order", event="created", url=f"http://127.0.0.1:9/{n}"))
            outcomes.append("created")
        except EngineResourceExhausted as error:
            assert "order.created already has 3 webhooks" in str(error)
            outcomes.append("refused")

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        async with trio.open_nursery() as creates:
            for n in range(6):
                creates.start_soon(create, n)
        assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 3
        page = await engine.list_webhooks(WebhookFilter(), 10, "")
        assert len(page.items) == 3
        nursery.cancel_scope.cancel()


def test_limits_on_webhooks_per_type_and_deliveries_per_call(tmp_path: Path, receiver: Receiver) -> None:
    server = HookdProcess(tmp_path, "--max-webhooks-per-type", "3", "--max-deliveries-per-call", "10").start()
    try:
        client = server.client()
        for n in range(3):
            client.create_webhook("order", "created", receiver.url(f"/{n}"))
        with pytest.raises(ResourceExhausted, match="order.created already has 3 webhooks"):
            client.create_webhook("order", "created", receiver.url("/3"))
        other = client.create_webhook("order", "updated", receiver.url("/3"))
        with pytest.raises(ResourceExhausted):  # moving a webhook onto a full type counts too
            client.update_webhook(other.__class__(name=other.name, event="created"), ["event"])
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(3)])  # 9 deliveries
        with pytest.raises(InvalidArgument, match="events: this call would create 12 deliveries"):
            client.publish_events([event_input("order", "created", {"n": n}) for n in range(4)])
        receiver.wait_for(9)
    finally:
        server.stop()


def _event(event_id: str, event: str = "created") -> PreparedEvent:
    return PreparedEvent(event_id, f"order.{event}", "order", event, 1.0, "{}", "")


def test_a_staged_chunk_is_written_from_its_webhooks_as_they_are_when_it_commits(store: Backend) -> None:
    """A staged publish reads its subscribers before each chunk's commit, outside it. Webhooks
    changed in between get their deliveries as they are now: the new URL, held or discarded
    while inactive, none once deleted or moved to another event type (a stale copy left them
    PENDING for ever, where no change of the webhook would reach them)."""
    policies = {"wh_discarding": InactivePolicy.DISCARD}
    for name in ("wh_moved_url", "wh_deleted", "wh_discarding", "wh_retyped", "wh_unchanged"):
        hook = stored_webhook(
            name, url=f"http://127.0.0.1:9/{name}", inactive_policy=policies.get(name, InactivePolicy.QUEUE)
        )
        store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    read_before = store.read(partial(delivery_ops.subscribers, resource="order", event="created"))
    assert len(read_before) == 5

    def change(tx: Tx) -> None:
        webhook_ops.update_webhook(tx, "wh_moved_url", {"url": "http://127.0.0.1:9/new"}, now=2.0)
        webhook_ops.delete_webhook(tx, "wh_deleted", now=2.0)
        webhook_ops.update_webhook(tx, "wh_discarding", {"status": Status.INACTIVE}, now=2.0)
        webhook_ops.update_webhook(tx, "wh_retyped", {"event": "updated"}, now=2.0)

    store.write(change)
    event = _event("evt_staged")
    store.write(partial(delivery_ops.stage_deliveries, parts=[(event, read_before)]))
    [result], _ = store.write(partial(delivery_ops.finish_staged, events=[event], counts=[len(read_before)]))
    rows = store.read(
        lambda tx: tx.all("SELECT webhook_id, destination, state FROM deliveries WHERE event_id = 'evt_staged'")
    )
    assert sorted(rows) == [
        ("wh_discarding", "http://127.0.0.1:9/wh_discarding", DeliveryState.DISCARDED.value),
        ("wh_moved_url", "http://127.0.0.1:9/new", DeliveryState.PENDING.value),
        ("wh_unchanged", "http://127.0.0.1:9/wh_unchanged", DeliveryState.PENDING.value),
    ]
    assert result.delivery_count == 3


def test_an_unfinished_staged_publish_does_not_hold_up_an_ordered_webhook(store: Backend) -> None:
    """A delivery whose event is not stored (its publish still being written, or abandoned by a
    crash until housekeeping drops it) is not published, so it is not the ordered webhook's
    head: the publishes that completed go out meanwhile."""
    hook = stored_webhook("wh_ordered", ordering=Ordering.ORDERED)
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    subscribed = store.read(partial(delivery_ops.subscribers, resource="order", event="created"))
    store.write(partial(delivery_ops.stage_deliveries, parts=[(_event("evt_unfinished"), subscribed)]))
    [published] = store.write(partial(delivery_ops.publish, events=[_event("evt_complete")]))
    [(_, job)] = published.jobs
    due = store.read(partial(queries.due_jobs, destination=hook.url, now=10.0, limit=10, ordered=[hook.id]))
    assert [j.delivery_id for j in due] == [job.delivery_id]
    assert store.read(partial(queries.ordered_heads, webhook_ids=[hook.id])) == {hook.id: (job.delivery_id, 0)}


def test_deliveries_of_a_publish_still_being_written_are_not_listed(store: Backend) -> None:
    """They are not sent yet and may be dropped (the publish abandoned): not shown either."""
    store.write(partial(webhook_ops.insert_webhook, webhook=stored_webhook("wh_listed"), limit=10))
    subscribed = store.read(partial(delivery_ops.subscribers, resource="order", event="created"))
    event = _event("evt_being_written")
    store.write(partial(delivery_ops.stage_deliveries, parts=[(event, subscribed)]))
    [staged_id] = store.read(lambda tx: [row[0] for row in tx.all("SELECT id FROM deliveries")])

    def listed() -> list[int]:
        page = store.read(
            partial(queries.list_deliveries, webhook_id=None, event_id="", state=None, before_id=None, limit=10)
        )
        return [delivery.id for delivery in page]

    assert listed() == []
    with pytest.raises(NotFound):
        store.read(partial(queries.get_delivery, webhook_id=None, delivery_id=staged_id))
    store.write(partial(delivery_ops.finish_staged, events=[event], counts=[1]))
    assert listed() == [staged_id]
    assert store.read(partial(queries.get_delivery, webhook_id=None, delivery_id=staged_id)).id == staged_id


def test_a_retried_head_is_not_overtaken_by_a_staged_publish_that_completes_later(store: Backend) -> None:
    """An ordered webhook's head is being retried when a large publish whose deliveries were
    written first (lower ids) completes: the retried one stays the head, and the later publish
    waits behind it (the one that failed holds the ones behind it)."""
    hook = stored_webhook("wh_ordered", ordering=Ordering.ORDERED)
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    subscribed = store.read(partial(delivery_ops.subscribers, resource="order", event="created"))
    staged = _event("evt_staged_first")
    store.write(partial(delivery_ops.stage_deliveries, parts=[(staged, subscribed)]))
    [published] = store.write(partial(delivery_ops.publish, events=[_event("evt_completed_first")]))
    [(_, job)] = published.jobs
    failure = AttemptResult(hook.url, 10.0, 1.0, 500, Outcome.SERVER_ERROR, "HTTP 500", "")
    store.write(partial(delivery_ops.record_failure, job=job, attempt=failure, now=10.0, retry_at=100.0))
    store.write(partial(delivery_ops.finish_staged, events=[staged], counts=[1]))

    assert store.read(partial(queries.ordered_heads, webhook_ids=[hook.id])) == {hook.id: (job.delivery_id, 1)}
    due = store.read(partial(queries.due_jobs, destination=hook.url, now=50.0, limit=10, ordered=[hook.id]))
    assert due == []  # the head's retry is not due yet, and nothing goes before it
    assert store.read(partial(queries.next_due, destination=hook.url, after=50.0, ordered=[hook.id])) == 100.0
    due = store.read(partial(queries.due_jobs, destination=hook.url, now=100.0, limit=10, ordered=[hook.id]))
    assert [j.delivery_id for j in due] == [job.delivery_id]


def test_a_ping_is_read_ahead_of_a_backlog_longer_than_the_read(store: Backend) -> None:
    """A ping asked for through another node reaches the destination's owner from disk. Read
    behind a backlog longer than the read it was never loaded, and the caller gave up; it comes
    first, found through an index of pending pings (not by walking the backlog)."""
    hook = stored_webhook("wh_backlogged")
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    store.write(partial(delivery_ops.publish, events=[_event(f"evt_{n}") for n in range(20)]))
    ping = PreparedEvent("evt_ping", "webhook.ping", "webhook", "ping", 5.0, "{}", "")
    job = store.write(partial(delivery_ops.insert_test_ping, event=ping, webhook_id=hook.id, url=hook.url))
    due = store.read(partial(queries.due_jobs, destination=hook.url, now=10.0, limit=5))
    assert due[0].delivery_id == job.delivery_id and due[0].single_attempt
    assert len(due) == 5 and all(not j.single_attempt for j in due[1:])
    if store.read(lambda tx: tx.dialect.name) == "sqlite":
        plan = store.read(
            lambda tx: tx.all(
                f"EXPLAIN QUERY PLAN SELECT d.id FROM deliveries d WHERE d.destination = ? AND {PENDING_PINGS}",
                [hook.url],
            )
        )
        assert any("deliveries_pings" in str(row[-1]) for row in plan), plan


def _paused_while(store: Backend, first: Callable[[Tx], Any], *seconds: Callable[[Tx], Any]) -> None:
    """``first`` in a transaction of another node's connection that stays open while ``store``
    commits each of ``seconds`` in turn: it commits once one of them waits for a lock
    (PostgreSQL), or all have committed (a race lost), or straight away on SQLite (one writer
    at a time: the first of ``seconds`` waits for it). The failures of either side are raised."""
    other = reopened(store, holds_transactions_open=True)
    ran, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def paused(tx: Tx) -> Any:
        result = first(tx)
        ran.set()
        release.wait(30)
        return result

    def run(*writes: Callable[[], Any]) -> None:
        try:
            for write in writes:
                write()
        except BaseException as error:  # reported by the test's thread below
            errors.append(error)

    pausing = threading.Thread(target=run, args=(lambda: other.write(paused),))
    racing = threading.Thread(target=run, args=[partial(store.write, second) for second in seconds])
    try:
        pausing.start()
        if ran.wait(30):
            racing.start()
            if isinstance(store, PostgresBackend):
                wait_for_a_lock_wait(store, unless=lambda: not racing.is_alive())
    finally:
        release.set()
        for thread in (pausing, racing):
            if thread.is_alive():
                thread.join(60)
        other.close()
    assert not errors, errors
    assert ran.is_set()


def _caught_up(old: Webhook) -> Callable[[Tx], Any]:
    """What a node does after a change of ``old`` in a cluster (``Engine._waiting_catch_up``),
    in one transaction."""
    catch_up, barrier = webhook_ops.catch_up_write(old, now=3.0)
    return lambda tx: (barrier(tx), catch_up(tx))


_OLD_URL, _NEW_URL = "http://127.0.0.1:9/old", "http://127.0.0.1:9/new"


_INACTIVE_QUEUEING = {"status": Status.INACTIVE, "inactive_policy": InactivePolicy.QUEUE}


@pytest.mark.parametrize(
    ("made", "change", "expected"),
    [
        ({}, {"url": _NEW_URL}, (_NEW_URL, DeliveryState.PENDING)),
        ({"status": Status.INACTIVE}, {"status": Status.ACTIVE}, (_OLD_URL, DeliveryState.PENDING)),
        ({}, {"status": Status.INACTIVE}, (_OLD_URL, DeliveryState.HELD)),
        (_INACTIVE_QUEUEING, {"inactive_policy": InactivePolicy.DISCARD}, (_OLD_URL, DeliveryState.DISCARDED)),
        ({}, None, (_OLD_URL, DeliveryState.CANCELLED)),
    ],
    ids=["new-url", "activated", "deactivated", "discarding", "deleted"],
)
def test_a_webhook_change_committed_during_a_publish_reaches_its_delivery(
    store: Backend, made: dict[str, Any], change: dict[str, Any] | None, expected: tuple[str, DeliveryState]
) -> None:
    """Another node changes the webhook while a publish, having read it, is yet to commit. The
    change updates the webhook's waiting deliveries but cannot see the publish's, which kept
    the old URL (PENDING for ever, as no actor sends to it) or the old state (HELD while
    active, say). After the change, the node waits for the publishes of the type under way and
    sets their deliveries right; without the wait it ran before the publish committed."""
    hook = stored_webhook("wh_raced", url=_OLD_URL, **made)
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))

    def changed(tx: Tx) -> None:
        if change is None:
            webhook_ops.delete_webhook(tx, "wh_raced", now=2.0)
        else:
            webhook_ops.update_webhook(tx, "wh_raced", change, now=2.0)

    _paused_while(store, partial(delivery_ops.publish, events=[_event("evt_raced")]), changed, _caught_up(hook))
    rows = store.read(lambda tx: tx.all("SELECT destination, state FROM deliveries WHERE event_id = 'evt_raced'"))
    assert [(destination, DeliveryState(state)) for destination, state in rows] == [expected]


def test_a_new_url_committed_during_a_retry_reaches_the_retried_delivery(store: Backend) -> None:
    """RetryDelivery reads the webhook's URL and makes the delivery PENDING there; a new URL
    committed meanwhile by another node saw the delivery as finished and left it at the old URL."""
    hook = stored_webhook("wh_retried", url=_OLD_URL)
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    [published] = store.write(partial(delivery_ops.publish, events=[_event("evt_retried")]))
    [(_, job)] = published.jobs
    failed = [DeliveryState.FAILED.value, job.delivery_id]
    store.write(lambda tx: tx.execute("UPDATE deliveries SET state = ? WHERE id = ?", failed))

    _paused_while(
        store,
        partial(delivery_ops.retry_delivery, webhook_id="wh_retried", delivery_id=job.delivery_id, now=2.0),
        partial(webhook_ops.update_webhook, webhook_id="wh_retried", changes={"url": _NEW_URL}, now=2.0),
    )
    row = store.read(lambda tx: tx.one("SELECT destination, state FROM deliveries WHERE id = ?", [job.delivery_id]))
    assert (row[0], DeliveryState(row[1])) == (_NEW_URL, DeliveryState.PENDING)


def test_a_new_url_committed_during_a_staged_chunk_reaches_its_deliveries(store: Backend) -> None:
    """A chunk of a staged publish reads its webhooks again in its own transaction, under the
    type's lock: a new URL committed by another node before the chunk commits is caught up."""
    hook = stored_webhook("wh_staged", url=_OLD_URL)
    store.write(partial(webhook_ops.insert_webhook, webhook=hook, limit=10))
    subscribed = store.read(partial(delivery_ops.subscribers, resource="order", event="created"))
    event = _event("evt_staged_raced")
    _paused_while(
        store,
        partial(delivery_ops.stage_deliveries, parts=[(event, subscribed)]),
        partial(webhook_ops.update_webhook, webhook_id="wh_staged", changes={"url": _NEW_URL}, now=2.0),
        _caught_up(hook),
    )
    store.write(partial(delivery_ops.finish_staged, events=[event], counts=[1]))
    rows = store.read(lambda tx: tx.all("SELECT destination FROM deliveries WHERE event_id = 'evt_staged_raced'"))
    assert rows == [(_NEW_URL,)]
