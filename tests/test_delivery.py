"""Events flow: publish over gRPC, delivery to real receivers on 127.0.0.1, every attempt on record."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import standardwebhooks
import svix.webhooks
import trio

from hookd.client import FailedPrecondition, HookdClient, InvalidArgument, NotFound
from hookd.engine import EventInput, core
from hookd.engine.errors import Unavailable
from hookd.engine.jobs import PreparedEvent
from hookd.engine.store import delivery_ops
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine
from tests.support.receiver import Receiver, Reply, always, fail_first, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends


def deliveries(client: HookdClient, parent: str = "webhooks/-", **filters: object) -> list[pb.Delivery]:
    return list(client.list_deliveries(parent, page_size=1000, **filters).deliveries)  # type: ignore[arg-type]


def wait_state(client: HookdClient, parent: str, state: int, count: int = 1, timeout: float = 20) -> list[pb.Delivery]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (found := deliveries(client, parent, state=state)) and len(found) >= count and found,
        timeout=timeout,
    )


def test_delivery_is_signed_enveloped_and_recorded(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    published = client.publish_event(
        "order", "created", data={"id": 1001, "total": "25.00"}, related={"customer": {"id": 7}}
    )
    assert published.delivery_count == 1 and published.name.startswith("events/evt_")
    (request,) = receiver.wait_for(1)
    envelope = request.json()
    assert envelope["id"] == published.name.removeprefix("events/")
    assert envelope["type"] == "order.created"
    assert envelope["timestamp"].endswith("Z") and "T" in envelope["timestamp"]
    assert envelope["data"] == {"id": 1001, "total": "25.00"}
    assert envelope["related"] == {"customer": {"id": 7}}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("hookd/")
    standardwebhooks.Webhook(hook.signing_secret).verify(request.body, request.headers)
    svix.webhooks.Webhook(hook.signing_secret).verify(request.body, request.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(client.create_webhook("order", "updated", receiver.url()).signing_secret).verify(
            request.body, request.headers
        )

    (delivery,) = wait_state(client, hook.name, pb.Delivery.SUCCEEDED)
    assert delivery.event == published.name and delivery.attempt_count == 1
    assert delivery.message_id == request.headers["webhook-id"]
    (attempt,) = client.list_attempts(delivery.name).attempts
    assert attempt.outcome == pb.SUCCESS and attempt.status_code == 200 and attempt.response_excerpt == "ok"
    assert attempt.url == receiver.url()
    event = client.get_event(published.name)
    assert event.type == "order.created" and event.delivery_count == 1
    assert dict(event.data) == {"id": 1001, "total": "25.00"}


def test_destination_authentication_is_sent(client: HookdClient, receiver: Receiver) -> None:
    client.create_webhook(
        "order", "created", receiver.url("/bearer"), auth=pb.DestinationAuth(bearer=pb.BearerAuth(token="t0ken"))
    )
    client.create_webhook(
        "order",
        "created",
        receiver.url("/basic"),
        auth=pb.DestinationAuth(basic=pb.BasicAuth(username="erp", password="pw")),
    )
    client.create_webhook(
        "order",
        "created",
        receiver.url("/headers"),
        auth=pb.DestinationAuth(headers=pb.HeaderAuth(headers={"X-Api-Key": "k1"})),
    )
    client.publish_event("order", "created", data={"id": 1})
    receiver.wait_for(3)
    assert receiver.received("/bearer")[0].headers["authorization"] == "Bearer t0ken"
    assert receiver.received("/basic")[0].headers["authorization"] == "Basic " + base64.b64encode(b"erp:pw").decode()
    assert receiver.received("/headers")[0].headers["x-api-key"] == "k1"


def test_failures_are_retried_with_a_stable_message_id(client: HookdClient) -> None:
    receiver = Receiver(fail_first(2, Reply(status=500, body=b"boom")))
    try:
        hook = client.create_webhook("payment", "completed", receiver.url())
        client.publish_event("payment", "completed", data={"id": 9})
        (delivery,) = wait_state(client, hook.name, pb.Delivery.SUCCEEDED)
        requests = receiver.received()
        assert len(requests) == 3
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        attempts = client.list_attempts(delivery.name).attempts
        assert [a.outcome for a in attempts] == [pb.SERVER_ERROR, pb.SERVER_ERROR, pb.SUCCESS]
        assert attempts[0].status_code == 500 and attempts[0].response_excerpt == "boom"
        assert delivery.attempt_count == 3
    finally:
        receiver.close()


def test_exhausted_delivery_fails_and_can_be_retried(client: HookdClient) -> None:
    receiver = Receiver(always(Reply(status=503)))
    try:
        hook = client.create_webhook("payment", "failed", receiver.url())
        client.publish_event("payment", "failed", data={"id": 1})
        (delivery,) = wait_state(client, hook.name, pb.Delivery.FAILED)
        assert delivery.attempt_count == 4  # --max-attempts 4
        assert "503" in delivery.last_error
        receiver.behaviour = always(Reply(status=204))
        retried = client.retry_delivery(delivery.name)
        assert retried.state == pb.Delivery.PENDING
        wait_state(client, hook.name, pb.Delivery.SUCCEEDED)
        assert len(client.list_attempts(delivery.name).attempts) == 5
        number = delivery.name.rsplit("/", 1)[1]
        assert client.get_delivery(f"webhooks/-/deliveries/{number}").name == delivery.name
        assert client.get_delivery(delivery.name).state == pb.Delivery.SUCCEEDED
        other = client.create_webhook("payment", "refunded", receiver.url())
        with pytest.raises(NotFound):
            client.get_delivery(f"{other.name}/deliveries/{number}")
        # A succeeded delivery can be sent again (a replay), under the same message id.
        client.retry_delivery(f"webhooks/-/deliveries/{number}")
        wait_until(lambda: len(receiver.received()) == 6)
        assert receiver.received()[-1].headers["webhook-id"] == delivery.message_id
        with pytest.raises(NotFound):
            client.retry_delivery(f"{hook.name}/deliveries/999999")
        with pytest.raises(InvalidArgument, match="name"):
            client.retry_delivery("deliveries/1")
    finally:
        receiver.close()


def test_retrying_a_waiting_delivery_is_refused(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url(), status=pb.Webhook.INACTIVE)
    client.publish_event("order", "created", data={})
    (held,) = deliveries(client, hook.name)
    assert held.state == pb.Delivery.HELD
    with pytest.raises(FailedPrecondition):
        client.retry_delivery(held.name)


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--retry-base", "0.01", "--retry-cap", "10").start()
    receiver = Receiver(fail_first(1, Reply(status=429, headers={"Retry-After": "2"})))
    try:
        client = server.client()
        hook = client.create_webhook("order", "created", receiver.url())
        client.publish_event("order", "created", data={})
        first, second = receiver.wait_for(2)
        # Without Retry-After the retry would come within 10 ms (--retry-base 0.01).
        assert second.time - first.time >= 1.9
        (delivery,) = wait_state(client, hook.name, pb.Delivery.SUCCEEDED)
        assert [a.outcome for a in client.list_attempts(delivery.name).attempts] == [pb.RATE_LIMITED, pb.SUCCESS]
    finally:
        receiver.close()
        server.stop()


def test_outcomes_are_classified(client: HookdClient) -> None:
    hanging = Receiver(always(Reply(hang=True)))
    resetting = Receiver(always(Reply(reset=True)))
    statuses = Receiver(lambda request, count: Reply(status=int(request.path.strip("/"))))
    refused_port = Receiver()
    refused_url = refused_port.url()
    refused_port.close()
    try:
        cases = {
            hanging.url(): pb.TIMEOUT,
            resetting.url(): pb.CONNECTION,
            refused_url: pb.CONNECTION,
            statuses.url("/401"): pb.AUTH_FAILURE,
            statuses.url("/403"): pb.AUTH_FAILURE,
            statuses.url("/429"): pb.RATE_LIMITED,
            statuses.url("/404"): pb.CLIENT_ERROR,
            statuses.url("/302"): pb.CLIENT_ERROR,
            statuses.url("/500"): pb.SERVER_ERROR,
        }
        hooks = {client.create_webhook("order", "fulfilled", url, timeout_s=0.3).name: url for url in cases}
        client.publish_event("order", "fulfilled", data={})
        for name, url in hooks.items():

            def first_attempt(name: str = name) -> pb.Attempt | None:
                found = deliveries(client, name)
                if not found:
                    return None
                attempts = client.list_attempts(found[0].name).attempts
                return attempts[0] if attempts else None

            attempt = wait_until(first_attempt)
            assert attempt.outcome == cases[url], (url, attempt)
            assert attempt.error
        redirect = next(n for n, u in hooks.items() if u.endswith("/302"))
        attempt = client.list_attempts(deliveries(client, redirect)[0].name).attempts[0]
        assert "redirect not followed" in attempt.error
    finally:
        hanging.close()
        resetting.close()
        statuses.close()


def test_inactive_queue_holds_then_sends_in_order(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("product", "updated", receiver.url(), status=pb.Webhook.INACTIVE)
    for number in range(5):
        client.publish_event("product", "updated", data={"n": number})
    assert len(deliveries(client, hook.name, state=pb.Delivery.HELD)) == 5
    assert receiver.received() == []
    client.set_status(hook.name, pb.Webhook.ACTIVE)
    received = receiver.wait_for(5)
    assert sorted(r.json()["data"]["n"] for r in received) == list(range(5))
    wait_state(client, hook.name, pb.Delivery.SUCCEEDED, count=5)


def test_inactive_discard_never_sends(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook(
        "product", "deleted", receiver.url(), status=pb.Webhook.INACTIVE, inactive_policy=pb.Webhook.DISCARD
    )
    client.publish_event("product", "deleted", data={})
    (delivery,) = deliveries(client, hook.name)
    assert delivery.state == pb.Delivery.DISCARDED
    client.set_status(hook.name, pb.Webhook.ACTIVE)
    client.publish_event("product", "deleted", data={"after": True})
    (request,) = receiver.wait_for(1)
    assert request.json()["data"] == {"after": True}


def test_deactivating_stops_sending(client: HookdClient) -> None:
    # Each retry 5 s later: the delivery's attempts cannot all be used up before the update lands.
    receiver = Receiver(always(Reply(status=503, headers={"Retry-After": "5"})))
    try:
        hook = client.create_webhook("order", "created", receiver.url())
        client.publish_event("order", "created", data={})
        receiver.wait_for(1)
        client.set_status(hook.name, pb.Webhook.INACTIVE)
        wait_state(client, hook.name, pb.Delivery.HELD)
        count = len(receiver.received())
        client.publish_event("order", "created", data={})
        assert len(deliveries(client, hook.name, state=pb.Delivery.HELD)) == 2
        assert len(receiver.received()) <= count + 1  # at most the attempt already in flight
    finally:
        receiver.close()


def test_delete_cancels_pending_and_in_flight(client: HookdClient) -> None:
    receiver = Receiver(always(Reply(hang=True)))
    try:
        hook = client.create_webhook("order", "created", receiver.url(), timeout_s=30)
        for _ in range(3):
            client.publish_event("order", "created", data={})
        receiver.wait_for(1)
        assert client.delete_webhook(hook.name).cancelled_deliveries == 3
        cancelled = deliveries(client, hook.name, state=pb.Delivery.CANCELLED)
        assert len(cancelled) == 3
        # The request in flight was aborted: no attempt was recorded for any of them.
        assert all(not client.list_attempts(d.name).attempts for d in cancelled)
    finally:
        receiver.close()


def test_new_url_applies_to_next_attempt(client: HookdClient) -> None:
    old = Receiver(always(Reply(status=503, headers={"Retry-After": "5"})))  # attempts left when the update lands
    new = Receiver()
    try:
        hook = client.create_webhook("customer", "created", old.url())
        client.publish_event("customer", "created", data={"id": 3})
        old.wait_for(1)
        client.update_webhook(pb.Webhook(name=hook.name, url=new.url()), ["url"])
        (request,) = new.wait_for(1)
        assert request.json()["data"] == {"id": 3}
        (delivery,) = wait_state(client, hook.name, pb.Delivery.SUCCEEDED)
        urls = [a.url for a in client.list_attempts(delivery.name).attempts]
        assert urls[0] == old.url() and urls[-1] == new.url()
    finally:
        old.close()
        new.close()


def test_rotated_secret_signs_alongside_the_old_one(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    rotated = client.rotate_secret(hook.name, grace_period_s=3600)
    assert rotated.signing_secret != hook.signing_secret and "*" not in rotated.signing_secret
    assert rotated.previous_secret_expire_time.seconds > 0
    client.publish_event("order", "created", data={})
    (request,) = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(hook.signing_secret).verify(request.body, request.headers)
    standardwebhooks.Webhook(rotated.signing_secret).verify(request.body, request.headers)
    retired = client.rotate_secret(hook.name, grace_period_s=0)
    client.publish_event("order", "created", data={})
    request = receiver.wait_for(2)[1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    standardwebhooks.Webhook(retired.signing_secret).verify(request.body, request.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(rotated.signing_secret).verify(request.body, request.headers)
    with pytest.raises(InvalidArgument, match="grace_period"):
        client.rotate_secret(hook.name, grace_period_s=30 * 86400)


def test_idempotency_key_sends_once(client: HookdClient, receiver: Receiver) -> None:
    client.create_webhook("order", "cancelled", receiver.url())
    first = client.publish_event("order", "cancelled", data={"id": 1}, idempotency_key="order-1-cancel")
    again = client.publish_event("order", "cancelled", data={"id": 1}, idempotency_key="order-1-cancel")
    assert again.name == first.name and again.duplicate and not first.duplicate
    receiver.wait_for(1)
    assert len(deliveries(client)) == 1
    other = client.publish_event("order", "cancelled", data={"id": 2}, idempotency_key="order-2-cancel")
    assert other.name != first.name


def test_test_webhook_pings_now_and_records(client: HookdClient) -> None:
    receiver = Receiver(always(Reply(status=418, body=b"teapot")))
    try:
        hook = client.create_webhook("shipping", "delivered", receiver.url())
        attempt = client.test_webhook(hook.name).attempt
        assert attempt.status_code == 418 and attempt.outcome == pb.CLIENT_ERROR
        assert attempt.duration.ToNanoseconds() > 0 and attempt.response_excerpt == "teapot"
        (request,) = receiver.received()
        assert request.json()["type"] == "webhook.ping"
        standardwebhooks.Webhook(hook.signing_secret).verify(request.body, request.headers)
        (delivery,) = deliveries(client, hook.name)
        assert delivery.state == pb.Delivery.FAILED and delivery.attempt_count == 1
        assert request.headers["webhook-id"] == delivery.message_id
        assert len(receiver.received()) == 1  # no retries
        with pytest.raises(NotFound):
            client.test_webhook("webhooks/wh_nope")
    finally:
        receiver.close()


def test_test_pings_wait_for_the_destinations_limits(tmp_path: Path) -> None:
    """A ping is a request like any other: it takes a request slot and a rate-limit token."""
    server = HookdProcess(tmp_path, "--max-in-flight", "2").start()
    slow = Receiver(always(Reply(delay=0.3)))
    try:
        client = server.client()
        hook = client.create_webhook("order", "created", slow.url(), rate_limit=2)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.test_webhook(hook.name).attempt, range(8)))
        assert all(answer.outcome == pb.SUCCESS for answer in answers)
        assert slow.most_in_progress <= 2
        times = sorted(r.time for r in slow.received())
        assert times[-1] - times[0] >= (8 - 2) / 2 * 0.9  # 2 per second after a burst of 2
    finally:
        slow.close()
        server.stop()


def test_batch_publish_and_listing(client: HookdClient, receiver: Receiver) -> None:
    from hookd.client.client import event_input

    a = client.create_webhook("order", "created", receiver.url("/a"))
    client.create_webhook("order", "created", receiver.url("/b"))
    answer = client.publish_events([event_input("order", "created", {"n": n}) for n in range(10)])
    assert [r.delivery_count for r in answer.results] == [2] * 10
    receiver.wait_for(20)
    wait_state(client, "webhooks/-", pb.Delivery.SUCCEEDED, count=20)
    mine = deliveries(client, a.name)
    assert len(mine) == 10 and all(d.name.startswith(a.name + "/") for d in mine)
    assert [d.name for d in mine] == sorted((d.name for d in mine), key=lambda n: -int(n.rsplit("/", 1)[1]))
    by_event = deliveries(client, event=answer.results[0].name)
    assert len(by_event) == 2
    pages, token = [], ""
    while True:
        page = client.list_deliveries(a.name, page_size=4, page_token=token)
        pages.append(len(page.deliveries))
        token = page.next_page_token
        if not token:
            break
    assert pages == [4, 4, 2]
    with pytest.raises(NotFound):
        client.list_deliveries("webhooks/wh_unknown")
    with pytest.raises(NotFound):
        client.get_event("events/evt_unknown")


def test_event_limits_are_enforced(client: HookdClient) -> None:
    from hookd.client.client import event_input

    with pytest.raises(InvalidArgument, match=r"event\.data.*262144"):
        client.publish_event("order", "created", data={"blob": "x" * 300_000})
    with pytest.raises(InvalidArgument, match="events"):
        client.publish_events([event_input("order", "created")] * 1001)
    with pytest.raises(InvalidArgument, match="events"):
        client.publish_events([])
    with pytest.raises(InvalidArgument, match=r"events\[1\]\.resource"):
        client.publish_events([event_input("order", "created"), event_input("cart", "created")])
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        client.publish_event("order", "created", idempotency_key="k" * 300)
    assert deliveries(client) == []


def test_backlog_larger_than_the_queue_is_all_delivered(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--queue-size", "4", "--max-in-flight", "2").start()
    receiver = Receiver()
    try:
        client = server.client()
        from hookd.client.client import event_input

        hook = client.create_webhook("order", "updated", receiver.url())
        client.publish_events([event_input("order", "updated", {"n": n}) for n in range(60)])
        received = receiver.wait_for(60)
        assert sorted(r.json()["data"]["n"] for r in received) == list(range(60))
        wait_state(client, hook.name, pb.Delivery.SUCCEEDED, count=60)
        assert len({r.headers["webhook-id"] for r in received}) == 60
    finally:
        receiver.close()
        server.stop()


def test_envelope_numbers_keep_their_type(client: HookdClient, receiver: Receiver) -> None:
    client.create_webhook("order", "created", receiver.url())
    client.publish_event("order", "created", data={"qty": 3, "price": 2.5, "big": 9007199254740993.0})
    body = json.loads(receiver.wait_for(1)[0].body)
    assert body["data"]["qty"] == 3 and isinstance(body["data"]["qty"], int)
    assert body["data"]["price"] == 2.5


async def test_a_ping_given_up_on_is_never_sent(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TestWebhook gives up on a ping that found no turn in time and tells the caller to try
    again; the ping it gave up on must not arrive later beside the new one (it stayed queued,
    waiting for its rate-limit token, and went out once it came)."""
    monkeypatch.setattr(core, "PING_QUEUE_WAIT_S", 0.3)
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        data = WebhookInput(resource="order", event="created", url=receiver.url("/limited"), rate_limit=0.5)
        hook = await engine.create_webhook(replace(data, timeout_s=0.1))
        await engine.publish([EventInput("order", "created", {}, {})], batch=False)  # takes the one token
        await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        with pytest.raises(Unavailable):
            await engine.test_webhook(hook.id)  # waits 0.3 s for a token two seconds away
        await trio.sleep(2.5)  # the token it waited for has come
        assert [json.loads(r.body)["type"] for r in receiver.received()] == ["order.created"]
        nursery.cancel_scope.cancel()


async def test_a_ping_cancelled_on_disk_is_not_sent(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a cluster, a caller that gives up on its ping through another node can only cancel it
    on disk; the owner, holding it in its queue, reads it again before sending and drops it.
    Here the ping is queued on the owner as the owner's TestWebhook would queue it, and cancelled
    on disk as another node's would."""
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        data = WebhookInput(resource="order", event="created", url=receiver.url("/limited"), rate_limit=0.5)
        hook = await engine.create_webhook(data)
        await engine.publish([EventInput("order", "created", {}, {})], batch=False)  # takes the one token
        await trio.to_thread.run_sync(lambda: receiver.wait_for(1, timeout=10))
        now = engine.now()
        ping = PreparedEvent("evt_ping_elsewhere", "webhook.ping", "webhook", "ping", now, "{}", "")
        job = await engine._writer.execute(
            partial(delivery_ops.insert_test_ping, event=ping, webhook_id=hook.id, url=hook.url),
            on_commit=lambda job: engine._dispatcher.offer(hook.url, job),
        )  # queued, waiting for the next token, two seconds away
        await engine._writer.execute(partial(delivery_ops.abandon_ping, delivery_id=job.delivery_id, now=now))
        await trio.sleep(2.5)  # the token it waited for has come
        assert [json.loads(r.body)["type"] for r in receiver.received()] == ["order.created"]
        nursery.cancel_scope.cancel()
