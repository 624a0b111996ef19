"""RecoverDeliveries: everything that failed since an outage, sent again in one call (real
server, both stores), and the background part that never holds up other work (in-process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hookd.client import FailedPrecondition, HookdClient, InvalidArgument, NotFound
from hookd.client.client import event_input
from hookd.engine import EventInput
from hookd.engine.breaker import BreakerPolicy
from hookd.engine.model import DeliveryState
from hookd.engine.retry import RetryPolicy
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine, until
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

#: One attempt each, and a breaker that never opens: every delivery fails at once, for good.
FAIL_FAST = ("--max-attempts", "1", "--breaker-threshold", "100000")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HookdProcess]:
    process = HookdProcess(tmp_path, *FAIL_FAST).start()
    yield process
    process.stop()


@pytest.fixture
def failing() -> Iterator[Receiver]:
    receiver = Receiver(always(Reply(status=500)))
    yield receiver
    receiver.close()


def states(client: HookdClient, parent: str) -> list[int]:
    return sorted(d.state for d in client.iter_deliveries(parent, page_size=1000))


def all_in(client: HookdClient, parent: str, state: int, count: int) -> bool:
    return states(client, parent) == [state] * count


def test_recover_sends_failures_again_at_the_current_url_but_never_pings(
    server: HookdProcess, failing: Receiver
) -> None:
    client = server.client()
    a = client.create_webhook("order", "created", failing.url("/a"))
    b = client.create_webhook("order", "created", failing.url("/b"))
    held = client.create_webhook("order", "created", failing.url("/held"), status=pb.Webhook.INACTIVE)
    client.publish_events([event_input("order", "created", {"n": n}) for n in range(3)])
    client.test_webhook(a.name)  # a failed ping: never sent again
    wait_until(lambda: all_in(client, a.name, pb.Delivery.FAILED, 4) and all_in(client, b.name, pb.Delivery.FAILED, 3))

    failing.behaviour = always(Reply())  # the outage is over; and a's endpoint moved meanwhile
    client.update_webhook(pb.Webhook(name=a.name, url=failing.url("/a2")), ["url"])
    assert client.recover_deliveries(a.name).recovered_count == 3
    wait_until(lambda: len(failing.received("/a2")) == 3)
    assert client.recover_deliveries().recovered_count == 3  # webhooks/-: b's three, not the ping
    wait_until(lambda: all_in(client, b.name, pb.Delivery.SUCCEEDED, 3))

    wait_until(lambda: states(client, a.name).count(pb.Delivery.SUCCEEDED) == 3)
    recovered = [d for d in client.iter_deliveries(a.name) if d.event_type == "order.created"]
    assert all(d.state == pb.Delivery.SUCCEEDED and d.attempt_count == 2 for d in recovered)
    assert {r.headers["webhook-id"] for r in failing.received("/a2")} == {d.message_id for d in recovered}
    (ping,) = [d for d in client.iter_deliveries(a.name) if d.event_type == "webhook.ping"]
    assert ping.state == pb.Delivery.FAILED
    assert states(client, held.name) == [pb.Delivery.HELD] * 3  # waiting, not finished: untouched
    assert client.recover_deliveries().recovered_count == 0  # nothing failed is left
    time.sleep(0.3)
    assert len(failing.received("/a2")) == 3 and len(failing.received("/b")) == 6


def test_recover_filters_by_time_state_and_webhook(server: HookdProcess, failing: Receiver) -> None:
    client = server.client()
    hook = client.create_webhook("order", "created", failing.url())
    client.publish_events([event_input("order", "created", {"n": n}) for n in range(2)])
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.FAILED, 2))
    middle = time.time()
    time.sleep(0.05)
    client.publish_events([event_input("order", "created", {"n": n}) for n in range(3)])
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.FAILED, 5))

    assert client.recover_deliveries(hook.name, states=[pb.Delivery.SUCCEEDED]).recovered_count == 0
    assert client.recover_deliveries(hook.name, end_time=middle).recovered_count == 2
    wait_until(lambda: len(failing.received()) == 7)  # failed again, for good
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.FAILED, 5))
    failing.behaviour = always(Reply())
    assert client.recover_deliveries(hook.name, start_time=middle).recovered_count == 3
    wait_until(lambda: states(client, hook.name).count(pb.Delivery.SUCCEEDED) == 3)
    both = [pb.Delivery.FAILED, pb.Delivery.SUCCEEDED]
    assert client.recover_deliveries(hook.name, start_time=middle - 3600, states=both).recovered_count == 5
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.SUCCEEDED, 5))


def test_recover_refuses_what_cannot_be_recovered(server: HookdProcess, failing: Receiver) -> None:
    client = server.client()
    hook = client.create_webhook("order", "created", failing.url())
    for state in (pb.Delivery.PENDING, pb.Delivery.HELD):
        with pytest.raises(InvalidArgument, match="states: .* is not a finished state"):
            client.recover_deliveries(states=[state])
    with pytest.raises(InvalidArgument, match="states: unknown delivery state 42"):
        client.recover_deliveries(states=[42])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="end_time: must be after start_time"):
        client.recover_deliveries(start_time=2000.0, end_time=1000.0)
    with pytest.raises(InvalidArgument, match="parent"):
        client.recover_deliveries("webhooks/../x")
    with pytest.raises(NotFound):
        client.recover_deliveries("webhooks/wh_missing")
    client.set_status(hook.name, pb.Webhook.INACTIVE)
    with pytest.raises(FailedPrecondition, match="inactive; activate it"):
        client.recover_deliveries(hook.name)


def test_a_large_set_is_recovered_in_the_background(server: HookdProcess, failing: Receiver) -> None:
    client = server.client()
    hook = client.create_webhook("order", "created", failing.url())
    total = 2500  # more than a batch (1,000): the first before the answer, the rest after
    for start in range(0, total, 500):
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(start, start + 500)])
    failing.wait_for(total, timeout=60)
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.FAILED, total), interval=0.5)
    failing.behaviour = always(Reply())
    assert client.recover_deliveries(hook.name).recovered_count == total
    failing.wait_for(2 * total, timeout=60)
    wait_until(lambda: all_in(client, hook.name, pb.Delivery.SUCCEEDED, total), interval=0.5)
    assert f"recovery finished name=webhooks/{hook.name.removeprefix('webhooks/')} recovered=1500" in server.log()


async def test_background_recovery_lets_publishes_through(tmp_path: Path, failing: Receiver) -> None:
    engine = local_engine(
        tmp_path,
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=100000),
        maintenance_batch=50,
        retention_s=0,
        auto_disable_after_s=0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        hook = await engine.create_webhook(WebhookInput(resource="order", event="created", url=failing.url()))
        await engine.publish([EventInput("order", "created", {"n": n}, {}) for n in range(500)], batch=True)

        async def failed() -> int:
            page = await engine.list_deliveries(hook.id, "", DeliveryState.FAILED, 1000, "")
            return len(page.items)

        async def all_failed() -> bool:
            return await failed() == 500

        async def none_failed() -> bool:
            return await failed() == 0

        await until(all_failed)
        failing.behaviour = always(Reply(hang=True))  # nothing recovered can settle meanwhile
        assert await engine.recover_deliveries(hook.id, None, None, []) == 500
        # The first batch of 50 committed with the answer; a publish now commits between the
        # background batches, long before the other 450 are all queued.
        await engine.publish([EventInput("order", "created", {"n": 500}, {})], batch=False)
        assert 0 < await failed() <= 450
        await until(none_failed)
        nursery.cancel_scope.cancel()
