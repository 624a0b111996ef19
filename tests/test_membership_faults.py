"""Cluster membership through store faults, with real nodes (engines in this process) on a real
PostgreSQL database: the only thing not real is the fault itself, injected into the one call it
hits. A lost reply to a COMMIT cannot be provoked on purpose, so the stand-in is to make the call,
then raise as the driver would have. The acceptance tests start whole nodes (test_cluster.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import trio

from hookd.engine import Engine, EngineConfig, EventInput
from hookd.engine.cluster import Membership, rendezvous, slot_of
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.errors import Unavailable
from hookd.engine.model import DeliveryState
from hookd.engine.store import cluster_ops
from hookd.engine.store.backend import SharedBackend, open_backend
from hookd.engine.store.sql import Conflict, StoreFault
from hookd.engine.validation import WebhookInput
from tests.support.nodes import membership_of, url_owned_by
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver, Reply, always, fail_first

LEASE_S = 2.0
LOST_REPLY = "the database cannot be reached: server closed the connection unexpectedly"

Control = Callable[..., Any]


def _node(database: str, node_id: str) -> Engine:
    return Engine(
        EngineConfig(
            database=database,
            node_id=node_id,
            lease_s=LEASE_S,
            destinations=DestinationPolicy.from_entries(["127.0.0.0/8"], allow_http=True),
        )
    )


def _inject(monkeypatch: pytest.MonkeyPatch, node_id: str, around: Callable[[Control, Control], Control]) -> None:
    """Route ``node_id``'s membership transactions through ``around(fn, real)`` (the others' go
    straight through). Patched on the class, so it holds from the node's very first step."""
    real = Membership._control

    async def control(self: Membership, fn: Control, **kwargs: Any) -> Any:
        async def call(fn: Control, **kwargs: Any) -> Any:
            return await real(self, fn, **kwargs)

        if self.node_id != node_id:
            return await call(fn, **kwargs)
        return await around(fn, call)(**kwargs)

    monkeypatch.setattr(Membership, "_control", control)


async def _eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


@asynccontextmanager
async def _running(*nodes: Engine) -> AsyncIterator[trio.Nursery]:
    """The nodes, started in order; stopped at the end. A node whose run ends by an error ends
    the test with it: what a store fault must never do."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            yield nursery
            nursery.cancel_scope.cancel()


def _database_slots(database: str) -> dict[str, set[int]]:
    """node id -> the slots the database says it holds."""
    backend = cast(SharedBackend, open_backend(database))
    backend.open(readers=1)
    try:
        view = backend.control(cluster_ops.view)
    finally:
        backend.close()
    held: dict[str, set[int]] = {}
    for row in view.slots:
        if row.node_id is not None:
            held.setdefault(row.node_id, set()).add(row.slot)
    return held


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hookd.cluster" and text in r.getMessage()]


async def test_a_claim_committed_whose_reply_was_lost_is_adopted_and_its_destinations_sent(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the node's memory never held the slots while the database said it did, and its
    # every renewal kept them: nobody sent to their destinations (nor ran the housekeeping, when
    # slot 0 was among them) for as long as the node lived.
    database = postgres_server.new_database()
    receiver = Receiver()
    url = url_owned_by(receiver, "b", ["a", "b"])
    lost: list[dict[int, int]] = []

    def lose_the_claims_reply(fn: Control, call: Control) -> Control:
        async def control(**kwargs: Any) -> Any:
            result = await call(fn, **kwargs)
            if fn is cluster_ops.claim and result and not lost:
                lost.append(result)  # committed: the database holds the slots for b
                raise StoreFault(LOST_REPLY)
            return result

        return control

    _inject(monkeypatch, "b", lose_the_claims_reply)
    a, b = _node(database, "a"), _node(database, "b")
    try:
        async with _running(a, b):
            await _eventually(lambda: bool(lost))  # a handed b's share over; b claimed it
            assert slot_of(url) in lost[0]
            await a.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await a.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
            assert membership_of(b).owns(url) and not membership_of(a).owns(url)
            held = await trio.to_thread.run_sync(_database_slots, database)
            assert set(membership_of(b)._slots.held) == held["b"]
            assert set(membership_of(a)._slots.held) == held["a"]
            assert [m.node_id for m in (membership_of(a), membership_of(b)) if m.leads()] in (["a"], ["b"])
    finally:
        receiver.close()


async def test_a_release_that_fails_during_a_hand_over_is_tried_again_not_fatal(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The hand-over runs in the membership's nursery: before, its release's StoreFault ended the
    # membership, the engine, and the node (no leave; its slots waited out their lease).
    caplog.set_level(logging.WARNING, logger="hookd.cluster")
    database = postgres_server.new_database()
    receiver = Receiver()
    url = url_owned_by(receiver, "b", ["a", "b"])
    failures: list[str] = []

    def fail_the_first_releases(fn: Control, call: Control) -> Control:
        async def control(**kwargs: Any) -> Any:
            if fn is cluster_ops.release and len(failures) < 2:
                if not failures:
                    failures.append("refused")  # the connection was gone
                    raise StoreFault("the database cannot be reached: terminating connection")
                failures.append("reply lost")  # it committed: trying again must change nothing
                await call(fn, **kwargs)
                raise StoreFault(LOST_REPLY)
            return await call(fn, **kwargs)

        return control

    _inject(monkeypatch, "a", fail_the_first_releases)
    a, b = _node(database, "a"), _node(database, "b")
    try:
        async with _running(a, b):
            await _eventually(lambda: membership_of(b).owns(url))
            assert not membership_of(a).owns(url)
            assert failures == ["refused", "reply lost"]
            await _eventually(lambda: not membership_of(a)._slots.leaving)
            held = await trio.to_thread.run_sync(_database_slots, database)
            owners = rendezvous(["a", "b"])
            assert held["b"] == {slot for slot, node in owners.items() if node == "b"}
            assert set(membership_of(a)._slots.held) == held["a"]
            await a.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await a.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        assert len(_warnings(caplog, "membership hand-over failed node=a")) == 1  # once per streak
    finally:
        receiver.close()


async def test_a_failed_read_of_the_work_after_a_claim_is_tried_again_not_fatal(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a claim, the new owner reads which destinations have deliveries waiting. That read
    # raises Unavailable when the store cannot be read: before, it ended the node; caught and
    # not tried again, the deliveries would wait for the 30 s catch-up.
    database = postgres_server.new_database()
    retry_after_s = 5.0
    receiver = Receiver(fail_first(1, Reply(status=503, headers={"Retry-After": str(int(retry_after_s))})))
    url = url_owned_by(receiver, "b", ["a", "b"])
    a, b = _node(database, "a"), _node(database, "b")
    failed: list[float] = []
    resume = Dispatcher.resume

    async def resume_failing_once_after_the_claim(self: Dispatcher, owned: Callable[[str], bool]) -> None:
        membership = self._ctx.ownership
        if isinstance(membership, Membership) and membership.node_id == "b" and membership.owns(url) and not failed:
            failed.append(time.monotonic())
            raise Unavailable("the store cannot be read: server closed the connection; retry later")
        await resume(self, owned)

    monkeypatch.setattr(Dispatcher, "resume", resume_failing_once_after_the_claim)
    try:
        async with _running(a) as nursery:
            await a.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await a.publish([EventInput("order", "created", {}, {})], batch=False)
            first = (await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10)))[0]
            # The delivery waits on disk for its retry; b joins and takes its slot over.
            await nursery.start(b.run)
            await _eventually(lambda: bool(failed))
            assert failed[0] < first.time + retry_after_s  # b took over before the retry was due
            second = (await trio.to_thread.run_sync(lambda: receiver.wait_for(2, timeout=15)))[1]
            assert second.time >= first.time + retry_after_s - 0.1  # the retry, sent when due
            assert membership_of(b).owns(url) and not membership_of(a).owns(url)
    finally:
        receiver.close()


async def test_store_faults_in_the_first_step_and_a_conflict_later_are_waited_out(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, a fault in the first step (after the node had registered) ended its start, and a
    # Conflict that outlasted the backend's retries in any later step ended the node.
    caplog.set_level(logging.WARNING, logger="hookd.cluster")
    database = postgres_server.new_database()
    receiver = Receiver(always(Reply()))
    url = receiver.url("/solo")
    faults: list[str] = []

    def fail_three_steps(fn: Control, call: Control) -> Control:
        async def control(**kwargs: Any) -> Any:
            if fn is cluster_ops.view and not faults:
                faults.append("view")
                raise StoreFault("the database cannot be reached: connection refused")
            if fn is cluster_ops.renew and 1 <= len(faults) < 3:
                faults.append("renew")
                raise Conflict("deadlock detected")
            return await call(fn, **kwargs)

        return control

    _inject(monkeypatch, "solo", fail_three_steps)
    solo = _node(database, "solo")
    try:
        async with _running(solo):
            await _eventually(lambda: len(membership_of(solo)._slots.held) == cluster_ops.SLOT_COUNT)
            assert faults == ["view", "renew", "renew"]
            assert membership_of(solo).leads()
            await solo.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await solo.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        # One streak: logged when it began and when it ended, not at every step in between.
        assert len(_warnings(caplog, "membership step failed node=solo")) == 1
        assert len(_warnings(caplog, "membership step works again node=solo")) == 1
    finally:
        receiver.close()


async def test_a_leaving_node_keeps_its_leases_while_its_requests_finish(postgres_server: PostgresServer) -> None:
    # The answer takes longer than the lease. Before, leaving stopped the heartbeats before the
    # drain: the lease ran out mid-request, b claimed the slot and sent the delivery again, and
    # a's record of the answer was refused (fenced).
    database = postgres_server.new_database()
    receiver = Receiver(always(Reply(delay=LEASE_S * 1.5)))
    url = url_owned_by(receiver, "a", ["a", "b"])
    a, b = _node(database, "a"), _node(database, "b")
    try:
        async with _running(a, b):
            hook = await a.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await a.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
            await a.leave(grace_s=LEASE_S * 3)
            await _eventually(lambda: membership_of(b).owns(url))
            [delivery] = (await b.list_deliveries(hook.id, "", None, 10, "")).items
            assert (delivery.state, delivery.attempt_count) == (DeliveryState.SUCCEEDED, 1)
            await trio.sleep(LEASE_S)  # time for b to send anything it found pending
            assert len(receiver.received()) == 1
    finally:
        receiver.close()


async def test_a_node_leaving_while_the_database_fails_stops_and_its_slots_move_at_lease_end(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, the first failed write of leave raised: the actors were neither drained nor
    # stopped, and the server swallowed the error without a word.
    caplog.set_level(logging.WARNING, logger="hookd.cluster")
    database = postgres_server.new_database()
    receiver = Receiver(always(Reply(delay=0.5)))
    url = url_owned_by(receiver, "a", ["a", "b"])
    failing: list[bool] = []

    def fail_while_leaving(fn: Control, call: Control) -> Control:
        async def control(**kwargs: Any) -> Any:
            if failing and fn is not cluster_ops.view:
                raise StoreFault("the database cannot be reached: terminating connection")
            return await call(fn, **kwargs)

        return control

    _inject(monkeypatch, "a", fail_while_leaving)
    a, b = _node(database, "a"), _node(database, "b")
    try:
        async with _running(a, b):
            await _eventually(lambda: membership_of(a).owns(url))
            await a.create_webhook(WebhookInput(resource="order", event="created", url=url))
            await a.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
            assert a._dispatcher.statistics()  # the destination's actor, its request in flight
            failing.append(True)
            await a.leave(grace_s=LEASE_S)
            assert not membership_of(a).owns(url) and not a._dispatcher.statistics()
            assert _warnings(caplog, "leaving: mark failed") and _warnings(caplog, "leaving: release failed")
            assert _warnings(caplog, "node left without handing over id=a")
            # Nobody released a's slots: b takes them once their lease runs out, and sends.
            await _eventually(lambda: membership_of(b).owns(url), timeout=LEASE_S * 5)
            await b.publish([EventInput("order", "created", {}, {})], batch=False)
            await trio.to_thread.run_sync(lambda: receiver.wait_for(2, timeout=10))
    finally:
        receiver.close()
