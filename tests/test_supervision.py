"""Actors are supervised: a crash is logged and the actor restarts without losing deliveries;
idle actors retire and come back on demand."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from hookd.client.client import event_input
from hookd.engine import Engine, EventInput
from hookd.engine import actor as actor_module
from hookd.engine import dispatcher as dispatcher_module
from hookd.engine.actor import DestinationActor
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.errors import Unavailable
from hookd.engine.jobs import AttemptResult, Job
from hookd.engine.model import DeliveryState, Outcome
from hookd.engine.ownership import SingleNode
from hookd.engine.retry import RetryPolicy
from hookd.engine.store.writer import Readers
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine, until
from tests.support.receiver import Receiver, Reply, always, fail_first, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends


async def test_crashed_actor_restarts_and_delivers(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A crash cannot be provoked from outside, so the first look at the queue raises (with the
    # jobs loaded, so the restart must forget them and load them again): fault injection, the
    # only stand-in in this test. Everything else (store, actor, HTTP) is real.
    original = DestinationActor._next_job
    crashes: list[str] = []

    def crash_once(self: DestinationActor) -> tuple[int, Job] | None:
        if not crashes:
            crashes.append(self.url)
            raise RuntimeError("injected crash")
        return original(self)

    monkeypatch.setattr(DestinationActor, "_next_job", crash_once)
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        await engine.publish([EventInput("order", "created", {"n": n}, {}) for n in range(5)], batch=True)

        async def all_succeeded() -> bool:
            page = await engine.list_deliveries(None, "", DeliveryState.SUCCEEDED, 100, "")
            return len(page.items) == 5

        await until(all_succeeded)
        assert crashes == [receiver.url()]
        assert (await engine.health_snapshot()).actor_restarts == 1
        assert sorted(r.json()["data"]["n"] for r in receiver.received()) == list(range(5))
        nursery.cancel_scope.cancel()
    assert any("actor crashed" in record.getMessage() for record in caplog.records)


def test_idle_actors_retire_and_return(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--actor-idle", "0.3").start()
    receiver = Receiver()
    hanging = Receiver(always(Reply(hang=True)))
    try:
        client = server.client()
        for n in range(3):
            client.create_webhook("order", "created", receiver.url(f"/d{n}"))
        client.create_webhook("order", "created", hanging.url(), timeout_s=30)

        def health() -> pb.HealthSnapshot:
            stream = client.stream_health()
            try:
                return next(stream)
            finally:
                stream.close()  # type: ignore[attr-defined]

        assert health().actors == 0
        client.publish_events([event_input("order", "created", {"n": 1})])
        receiver.wait_for(3)
        hanging.wait_for(1)
        # The three finished destinations retire; the one with a request open stays.
        wait_until(lambda: health().actors == 1)
        client.publish_event("order", "created", data={"n": 2})
        receiver.wait_for(6)
        wait_until(lambda: health().actors == 1)
        assert health().actor_restarts == 0
    finally:
        receiver.close()
        hanging.close()
        server.stop()


async def test_update_does_not_undo_a_concurrent_rotation(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        hook = await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        # Hold the update inside its destination check (a slow DNS answer, in life) while a
        # rotation commits: the only stand-in here.
        release = trio.Event()
        original = DestinationPolicy.check_destination

        async def slow_check(self: DestinationPolicy, url: str, field_name: str = "url") -> None:
            await release.wait()
            await original(self, url, field_name)

        monkeypatch.setattr(DestinationPolicy, "check_destination", slow_check)
        updated: list[Any] = []

        async def update() -> None:
            data = WebhookInput(url=receiver.url("/v2"))
            updated.append(await engine.update_webhook(hook.id, data, ["url"]))

        nursery.start_soon(update)
        await trio.sleep(0.05)
        rotated = await engine.rotate_secret(hook.id, 0.0)
        release.set()
        with trio.fail_after(10):
            while not updated:
                await trio.sleep(0.01)
        stored = await engine.get_webhook(hook.id)
        assert stored.secret == rotated.secret != hook.secret
        assert stored.url == receiver.url("/v2")
        nursery.cancel_scope.cancel()


async def test_a_delivery_that_keeps_crashing_its_actor_ends_failed(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug that crashes the actor's own loop while one delivery is in flight cannot be provoked
    # from outside: recording that delivery's outcome raises. The only stand-in in this test.
    original = DestinationActor._record

    async def crash_on_poison(self: DestinationActor, entry: Any, result: Any) -> None:
        if json.loads(entry.job.envelope)["data"].get("poison"):
            raise RuntimeError("injected crash")
        await original(self, entry, result)

    monkeypatch.setattr(DestinationActor, "_record", crash_on_poison)
    engine = local_engine(tmp_path, retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        await engine.publish([EventInput("order", "created", {"poison": True}, {})], batch=False)

        async def failed() -> Any:
            page = await engine.list_deliveries(None, "", DeliveryState.FAILED, 10, "")
            return page.items

        (poison,) = await until(failed, timeout=30)
        assert poison.attempt_count == 3
        attempts = (await engine.list_attempts(None, poison.id, 10, "")).items
        assert [a.outcome for a in attempts] == [Outcome.INTERNAL] * 3
        await trio.sleep(1)  # and it is left alone from then on
        assert len(receiver.received()) == 3
        assert (await engine.health_snapshot()).actor_restarts == 3
        # The actor itself is fine: the next delivery goes through.
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(4))
        nursery.cancel_scope.cancel()


async def test_a_bug_while_sending_is_recorded_not_fatal(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signing fails for one delivery (the stand-in for a bug on the send path).
    original = actor_module.request_headers

    def failing(webhook: Any, msg_id: str, body: bytes, now: float) -> dict[str, str]:
        if b'"poison"' in body:
            raise ValueError("injected bug")
        return original(webhook, msg_id, body, now)

    monkeypatch.setattr(actor_module, "request_headers", failing)
    engine = local_engine(tmp_path, retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.05))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        await engine.publish(
            [EventInput("order", "created", {"poison": True}, {}), EventInput("order", "created", {"n": 1}, {})],
            batch=True,
        )

        async def settled() -> Any:
            page = await engine.list_deliveries(None, "", None, 10, "")
            done = [d for d in page.items if d.state in (DeliveryState.SUCCEEDED, DeliveryState.FAILED)]
            return len(done) == 2 and page.items

        deliveries = await until(settled)
        states = sorted(d.state.value for d in deliveries)
        assert states == ["FAILED", "SUCCEEDED"]
        assert len(receiver.received()) == 1
        assert (await engine.health_snapshot()).actor_restarts == 0
        nursery.cancel_scope.cancel()


async def test_the_backstop_sends_what_the_bookkeeping_lost(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The bug this guards against was never caught in the act, so it is planted: the first
    # delivery offered is counted as loaded but never queued (the only stand-in in this test).
    monkeypatch.setattr(dispatcher_module, "BACKSTOP_S", 0.3)
    original = DestinationActor.offer
    lost: list[int] = []

    def losing_offer(self: DestinationActor, job: Any) -> None:
        if not lost:
            lost.append(job.delivery_id)
            self.known[job.delivery_id] = None
            self.backlog = False
            return
        original(self, job)

    monkeypatch.setattr(DestinationActor, "offer", losing_offer)
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        nursery.cancel_scope.cancel()
    assert lost and any("actor bookkeeping lost deliveries" in r.getMessage() for r in caplog.records)


async def test_an_actor_without_work_parks_and_then_retires(tmp_path: Path, receiver: Receiver) -> None:
    # Ten thousand destinations that have just been sent to must not cost ten thousand tasks: an
    # actor's task ends when it runs out of work, the actor (breaker, connections) stays until
    # it has been idle for actor_idle_s, and new work starts the same actor again.
    engine = local_engine(tmp_path, actor_idle_s=3.0)  # time for the second publish to find it parked
    actors: dict[str, DestinationActor] = {}
    url = receiver.url()

    async def parked() -> DestinationActor | None:
        actor = actors.get(url)
        return actor if actor is not None and not actor.running else None

    async def retired() -> bool:
        return url not in actors

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        actors = engine._dispatcher._actors
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=url))
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        actor = await until(parked)
        assert actor._connections is not None  # its keep-alive connections kept for the next delivery
        await engine.publish([EventInput("order", "created", {"n": 2}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(2, timeout=10))
        assert await until(parked) is actor  # woken, not replaced
        await until(retired, timeout=10)
        await engine.publish([EventInput("order", "created", {"n": 3}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(3, timeout=10))
        assert actors[url] is not actor  # a new actor for new work after retirement
        assert (await engine.health_snapshot()).actor_restarts == 0
        nursery.cancel_scope.cancel()


async def test_a_hand_over_retires_an_actor_whose_task_has_not_started_yet(tmp_path: Path, receiver: Receiver) -> None:
    # drain() while the poked actor still waits for the loader to read its deliveries: it must
    # retire at once, or the hand-over (and the destinations it holds) would wait for ever.
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        dispatcher = engine._dispatcher
        dispatcher.poke(receiver.url())
        with trio.fail_after(5):
            await dispatcher.drain(lambda url: True)
        assert not dispatcher._actors
        nursery.cancel_scope.cancel()


async def _order_webhooks(engine: Engine, receiver: Receiver, count: int) -> None:
    """``count`` destinations for order.created, at the receiver's /d0, /d1, ..."""
    for n in range(count):
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url(f"/d{n}")))


async def test_woken_destinations_are_loaded_together_and_start_with_their_work(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One publish to a hundred new destinations: their due deliveries are read a batch at a time
    # by the dispatcher, so no actor's task starts just to wait for a reader.
    own_reads: list[str] = []
    original = DestinationActor._refill

    async def counted(self: DestinationActor) -> None:
        own_reads.append(self.url)
        await original(self)

    monkeypatch.setattr(DestinationActor, "_refill", counted)
    engine = local_engine(tmp_path, max_webhooks_per_type=100)
    batches: list[int] = []
    read_windows = dispatcher_module._read_windows

    def loaded(tx: Any, refills: list[actor_module.Refill]) -> Any:
        batches.append(len(refills))
        return read_windows(tx, refills)

    monkeypatch.setattr(dispatcher_module, "_read_windows", loaded)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await _order_webhooks(engine, receiver, 100)
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(100, timeout=30))
        nursery.cancel_scope.cancel()
    assert sorted({r.path for r in receiver.received()}) == sorted(f"/d{n}" for n in range(100))
    assert len(receiver.received()) == 100
    assert sum(batches) == 100 and max(batches) == dispatcher_module.LOAD_BATCH
    assert own_reads == []


async def test_destinations_whose_load_fails_read_for_themselves(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The batch read raising (a bug, or the store down) must not strand the actors waiting on
    # it: each starts and reads its own deliveries.
    def broken(tx: Any, refills: list[actor_module.Refill]) -> Any:
        raise RuntimeError("injected load failure")

    monkeypatch.setattr(dispatcher_module, "_read_windows", broken)
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await _order_webhooks(engine, receiver, 3)
        await engine.publish([EventInput("order", "created", {"n": n}, {}) for n in range(2)], batch=True)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(6, timeout=30))
        nursery.cancel_scope.cancel()
    assert sorted(r.path for r in receiver.received()) == sorted(f"/d{n}" for n in range(3) for _ in range(2))
    assert any("loading due deliveries failed" in record.getMessage() for record in caplog.records)


class HeldLoad:
    """The dispatcher's batch read, held in its worker thread until the test lets it go; with
    ``read_first``, the rows are read before it is held (as if it lost a race after reading)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, read_first: bool = False) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        read_windows = dispatcher_module._read_windows

        def held(tx: Any, refills: list[actor_module.Refill]) -> Any:
            windows = read_windows(tx, refills) if read_first else None
            self.entered.set()
            self.gate.wait(timeout=30)
            return windows if read_first else read_windows(tx, refills)

        monkeypatch.setattr(dispatcher_module, "_read_windows", held)

    @asynccontextmanager
    async def publishing(self, tmp_path: Path, receiver: Receiver) -> AsyncIterator[tuple[Engine, trio.Nursery]]:
        """A running engine with one webhook, one event published to it, and its load held."""
        engine = local_engine(tmp_path)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.run)
                await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
                await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
                await trio.to_thread.run_sync(lambda: self.entered.wait(timeout=30))
                yield engine, nursery
                nursery.cancel_scope.cancel()
        finally:
            self.gate.set()  # never leave the worker thread waiting


async def test_an_actor_stopped_while_its_deliveries_load_never_sends(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node lost the destination while the loader read for it: the read's rows go nowhere.
    load = HeldLoad(monkeypatch)
    async with load.publishing(tmp_path, receiver) as (engine, _):
        engine._dispatcher.stop(lambda url: True)
        load.gate.set()
        await trio.sleep(0.5)  # time enough for a wrongly started actor to send
        assert receiver.received() == []
        assert receiver.url() not in engine._dispatcher._actors


async def test_a_hand_over_while_deliveries_load_retires_the_actor(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # drain() while the loader reads: the actor starts with what was read, sees the drain, and
    # retires; the hand-over ends.
    load = HeldLoad(monkeypatch)
    async with load.publishing(tmp_path, receiver) as (engine, nursery):
        nursery.start_soon(trio.to_thread.run_sync, load.gate.set)
        with trio.fail_after(10):
            await engine._dispatcher.drain(lambda url: True)
        assert not engine._dispatcher._actors


async def test_a_publish_during_the_load_is_not_left_on_disk(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch read has its rows when a second event arrives for the same destination: the
    # actor must not take the short read to mean its backlog is empty (the second delivery would
    # wait for the backstop).
    monkeypatch.setattr(dispatcher_module, "BACKSTOP_S", 3600.0)
    load = HeldLoad(monkeypatch, read_first=True)
    async with load.publishing(tmp_path, receiver) as (engine, _):
        await engine.publish([EventInput("order", "created", {"n": 2}, {})], batch=False)
        load.gate.set()
        await trio.to_thread.run_sync(lambda: receiver.wait_for(2, timeout=10))
    assert sorted(r.json()["data"]["n"] for r in receiver.received()) == [1, 2]


async def test_an_unreadable_store_makes_actors_wait_not_crash(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The store cannot be read for a while (a database restarting): the actors' reads fail, and
    # they wait and read again rather than crash, restart and charge their deliveries for it.
    monkeypatch.setattr(actor_module, "READ_RETRY_FIRST_S", 0.05)
    failures = [0]
    down = [False]
    run = Readers.run

    async def unreadable_for_a_while(self: Readers, fn: Any) -> Any:
        if down[0] and failures[0] < 6:
            failures[0] += 1
            raise Unavailable("the store cannot be read: injected; retry later")
        return await run(self, fn)

    monkeypatch.setattr(Readers, "run", unreadable_for_a_while)
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await _order_webhooks(engine, receiver, 2)
        down[0] = True
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.to_thread.run_sync(lambda: receiver.wait_for(2, timeout=20))
        assert engine._dispatcher.restarts == 0
        nursery.cancel_scope.cancel()
    assert failures[0] == 6
    assert sorted(r.path for r in receiver.received()) == ["/d0", "/d1"]
    messages = [record.getMessage() for record in caplog.records]
    assert sum("reading due deliveries failed" in message for message in messages) == 2  # once per actor
    assert not any("actor crashed" in message for message in messages)


async def test_a_crash_charges_each_delivery_in_flight_once(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor's own loop fails (a bug) while a request is under way: the nursery cancels that
    request, which may have reached the destination. It is charged an INTERNAL attempt before the
    restart sends it again, as for a crash anywhere else, not sent again as if never tried."""
    original = DestinationActor._next_job
    crashed: list[int] = []

    def crash_while_one_is_in_flight(self: DestinationActor) -> tuple[int, Job] | None:
        if self.in_flight and not crashed:
            crashed.append(len(self.in_flight))
            raise RuntimeError("injected crash")
        return original(self)

    monkeypatch.setattr(DestinationActor, "_next_job", crash_while_one_is_in_flight)
    slow_first = Receiver(fail_first(1, Reply(delay=1.0)))
    engine = local_engine(tmp_path, retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await engine.create_webhook(WebhookInput(resource="order", event="created", url=slow_first.url()))
            # The loop looks for a second job as soon as the first is in flight: the crash comes
            # then, cancelling the first attempt as it starts. The restart sends it again.
            [first] = await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: slow_first.wait_for(1))
            await engine.publish([EventInput("order", "created", {"n": 2}, {})], batch=False)

            async def both_succeeded() -> bool:
                page = await engine.list_deliveries(None, "", DeliveryState.SUCCEEDED, 10, "")
                return len(page.items) == 2

            await until(both_succeeded)
            assert crashed == [1]
            [delivery] = (await engine.list_deliveries(None, first.event_id, None, 10, "")).items
            attempts = (await engine.list_attempts(None, delivery.id, 10, "")).items
            assert [a.outcome for a in attempts] == [Outcome.INTERNAL, Outcome.SUCCESS]
            nursery.cancel_scope.cancel()
    finally:
        slow_first.close()


async def test_a_crash_does_not_charge_a_delivery_whose_outcome_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two answers land in one scheduling batch; recording the second raises (a bug). The first
    had queued its outcome already (handing it to the writer yields once after): it is not
    charged an INTERNAL attempt on top of its success. Stand-ins: the request (so both answers
    come at once) and the bug."""
    answer = trio.Event()
    started: list[str] = []

    async def post(client: Any, url: str, headers: Any, body: bytes, timeout_s: float, now: float) -> AttemptResult:
        started.append(url)
        await answer.wait()
        return AttemptResult(url, now, 1.0, 200, Outcome.SUCCESS, "", "")

    original_judge = DestinationActor._judge
    judged: list[AttemptResult] = []

    def judge(self: DestinationActor, result: AttemptResult) -> None:
        judged.append(result)
        if len(judged) == 2:
            raise RuntimeError("injected crash")
        original_judge(self, result)

    monkeypatch.setattr(actor_module, "post", post)
    monkeypatch.setattr(DestinationActor, "_judge", judge)
    engine = local_engine(tmp_path, retry=RetryPolicy(max_attempts=5, base_s=0.01, cap_s=0.05))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url="http://127.0.0.1:9/x"))
        events = [EventInput("order", "created", {"n": n}, {}) for n in range(2)]
        await engine.publish(events, batch=True)
        with trio.fail_after(10):
            while len(started) < 2:
                await trio.sleep(0.01)
        answer.set()

        async def both_succeeded() -> bool:
            page = await engine.list_deliveries(None, "", DeliveryState.SUCCEEDED, 10, "")
            return len(page.items) == 2

        await until(both_succeeded)
        await trio.sleep(0.3)  # a charge would have been written by now
        outcomes = []
        for delivery in (await engine.list_deliveries(None, "", None, 10, "")).items:
            attempts = (await engine.list_attempts(None, delivery.id, 10, "")).items
            outcomes.append([attempt.outcome for attempt in attempts])
        assert sorted(outcomes, key=len) == [[Outcome.SUCCESS], [Outcome.INTERNAL, Outcome.SUCCESS]]
        nursery.cancel_scope.cancel()


@pytest.mark.sqlite_only  # the stand-in is the single node's hold; a cluster's has its own tests
async def test_a_delivery_the_lease_refused_is_read_again_soon(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose hold on a destination lapsed for a moment (a late renewal) refuses to send,
    and keeps the destination: the delivery it dropped from memory is read again within a
    second or so, not left to the 30 s backstop. The lapse is the one stand-in."""
    holding = [False]
    monkeypatch.setattr(SingleNode, "may_send", lambda self, url: holding[0])
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=receiver.url()))
        await engine.publish([EventInput("order", "created", {"n": 1}, {})], batch=False)
        await trio.sleep(0.3)  # offered, refused
        assert receiver.received() == []
        holding[0] = True
        with trio.fail_after(5):
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=5))
        nursery.cancel_scope.cancel()
