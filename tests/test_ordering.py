"""Deliveries start oldest first; an ORDERED webhook's go one at a time, in publish order,
through failures, retries and a kill -9, and only that webhook waits."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
import trio

from hookd.client import HookdClient
from hookd.client.client import event_input
from hookd.engine import EventInput
from hookd.engine.jobs import PreparedEvent
from hookd.engine.model import Ordering
from hookd.engine.retry import RetryPolicy
from hookd.engine.store import delivery_ops
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine
from tests.support.receiver import Received, Receiver, Reply, fail_first, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends


def succeeded(client: HookdClient, hook: str) -> list[pb.Delivery]:
    return list(client.list_deliveries(hook, state=pb.Delivery.SUCCEEDED, page_size=1000).deliveries)


def test_held_deliveries_start_oldest_first(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url(), status=pb.Webhook.INACTIVE)
    client.publish_events([event_input("order", "created", {"n": n}) for n in range(16)])
    client.set_status(hook.name, pb.Webhook.ACTIVE)
    deliveries = wait_until(lambda: (found := succeeded(client, hook.name)) and len(found) == 16 and found)
    starts = {
        int(d.name.rsplit("/", 1)[1]): client.list_attempts(d.name).attempts[0].start_time.ToNanoseconds()
        for d in deliveries
    }
    by_id = [starts[delivery] for delivery in sorted(starts)]
    assert by_id == sorted(by_id), "the first attempts did not start in publish order"


class OrderRecorder:
    """Fails the first ``failures`` requests of event ``n == stuck`` with 503 and a ``Retry-After``
    of a second (a retry delay no shorter than the retry cap, so the wait behind it lasts long
    enough to be seen); records the order in
    which events first succeeded and any request for an event past one not yet succeeded."""

    def __init__(self, stuck: int, failures: int) -> None:
        self.stuck, self.failures = stuck, failures
        self.tries: Counter[int] = Counter()
        self.succeeded: list[int] = []
        self.jumped: list[tuple[int, list[int]]] = []
        self._lock = threading.Lock()

    def __call__(self, request: Received, count: int) -> Reply:
        body = request.json()
        if body["type"] != "order.created":
            return Reply()
        n = body["data"]["n"]
        with self._lock:
            self.tries[n] += 1
            expected = [m for m in range(n) if m not in self.succeeded]
            if expected:
                self.jumped.append((n, expected))
            if n == self.stuck and self.tries[n] <= self.failures:
                return Reply(status=503, headers={"Retry-After": "1"})
            if n not in self.succeeded:
                self.succeeded.append(n)
            return Reply()


def test_an_ordered_webhook_goes_one_at_a_time_through_retries_and_a_restart(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--retry-base", "0.3", "--retry-cap", "0.6", "--max-in-flight", "8").start()
    recorder = OrderRecorder(stuck=3, failures=2)
    receiver = Receiver(recorder)
    try:
        client = server.client()
        ordered = client.create_webhook("order", "created", receiver.url(), ordering=pb.Webhook.ORDERED)
        beside = client.create_webhook("order", "updated", receiver.url())  # the same URL, not ordered
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(6)])
        client.publish_events([event_input("order", "updated", {"n": n}) for n in range(10)])

        # While event 3 is being retried, the ones behind it wait, and say so; the other webhook
        # on the same URL does not wait.
        def waiting() -> list[pb.Delivery]:
            pending = client.list_deliveries(ordered.name, state=pb.Delivery.PENDING, page_size=100).deliveries
            return [d for d in pending if d.waiting_for]

        behind = wait_until(waiting, timeout=30)
        head = behind[0].waiting_for
        assert all(d.waiting_for == head for d in behind)
        stream = client.stream_health(webhooks=[ordered.name])
        assert next(stream).webhooks[0].held_behind == head
        stream.close()  # type: ignore[attr-defined]
        assert len(succeeded(client, beside.name)) == 10

        wait_until(lambda: len(succeeded(client, ordered.name)) == 6, timeout=30)
        # Then a kill -9 with more on the way, and a restart.
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(6, 30)])
        wait_until(lambda: len(recorder.succeeded) >= 12)
        server.kill()
        server.start()
        client = server.client()
        wait_until(lambda: len(succeeded(client, ordered.name)) == 30, timeout=60)
        assert recorder.succeeded == list(range(30))
        assert recorder.jumped == [], f"sent past a delivery not yet through: {recorder.jumped[:5]}"
        assert recorder.tries[3] == 3
    finally:
        receiver.close()
        server.stop()


def test_an_ordered_webhook_moves_on_when_its_head_fails_for_good(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--retry-base", "0.05", "--retry-cap", "0.1", "--max-attempts", "2").start()
    recorder = OrderRecorder(stuck=1, failures=10)  # event 1 never succeeds
    receiver = Receiver(recorder)
    try:
        client = server.client()
        hook = client.create_webhook("order", "created", receiver.url(), ordering=pb.Webhook.ORDERED)
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(4)])
        wait_until(lambda: len(succeeded(client, hook.name)) == 3, timeout=30)
        failed = client.list_deliveries(hook.name, state=pb.Delivery.FAILED).deliveries
        assert len(failed) == 1 and failed[0].attempt_count == 2
        assert recorder.succeeded == [0, 2, 3] and recorder.tries[1] == 2
        time.sleep(0.3)
        assert sum(recorder.tries.values()) == 5
    finally:
        receiver.close()
        server.stop()


async def test_an_older_publish_completing_during_a_first_attempt_waits_for_its_retry(
    tmp_path: Path,
) -> None:
    """A large publish staged first (lower ids) completes while a later one's delivery is on its
    first attempt. That attempt is not counted until its outcome commits, so a read made then
    takes the older one for the head; it must stay on disk, and go after the retry when the
    first attempt fails (the one that failed holds the ones behind it)."""
    receiver = Receiver(fail_first(1, Reply(status=500, delay=1.0)))
    engine = local_engine(tmp_path, retry=RetryPolicy(max_attempts=5, base_s=0.05, cap_s=0.1))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            data = WebhookInput(resource="order", event="created", url=receiver.url("/o"), ordering=Ordering.ORDERED)
            await engine.create_webhook(data)
            hooks = await engine._readers.run(partial(delivery_ops.subscribers, resource="order", event="created"))
            older = PreparedEvent(
                "evt_staged_first", "order.created", "order", "created", engine.now(), '{"data":{"n":1}}', ""
            )
            await engine._writer.execute(partial(delivery_ops.stage_deliveries, parts=[(older, hooks)]))
            await engine.publish([EventInput("order", "created", {"n": 2}, {})], batch=False)
            while receiver.in_progress == 0:  # the first attempt is under way, its answer held
                await trio.sleep(0.01)
            _, urls = await engine._writer.execute(partial(delivery_ops.finish_staged, events=[older], counts=[1]))
            for url in urls:
                engine._dispatcher.poke(url)  # as the publish's own commit does
            await trio.to_thread.run_sync(lambda: receiver.wait_for(3, timeout=20))
            assert [json.loads(r.body)["data"]["n"] for r in receiver.received()] == [2, 2, 1]
            nursery.cancel_scope.cancel()
    finally:
        receiver.close()
