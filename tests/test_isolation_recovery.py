"""The two promises the design exists for: isolation of slow destinations, and nothing lost to kill -9."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hookd.client.client import event_input
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends


def test_fast_destination_keeps_its_pace_while_others_hang(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path).start()
    fast = Receiver()
    hanging = Receiver(always(Reply(hang=True)))
    failing = Receiver(always(Reply(status=500)))
    try:
        client = server.client()
        slow_hooks = [
            client.create_webhook("order", "created", hanging.url(f"/slow{n}"), timeout_s=20).name for n in range(20)
        ]
        client.create_webhook("order", "created", failing.url())
        fast_hook = client.create_webhook("order", "created", fast.url())
        for batch in range(5):
            client.publish_events([event_input("order", "created", {"n": batch * 10 + n}) for n in range(10)])
        fast.wait_for(50)
        wait_until(
            lambda: (
                len(client.list_deliveries(fast_hook.name, state=pb.Delivery.SUCCEEDED, page_size=100).deliveries) == 50
            )
        )
        # Every hanging destination still has its first request open: none of them finished,
        # yet the fast one got all 50 events.
        for name in slow_hooks:
            for delivery in client.list_deliveries(name, page_size=100).deliveries:
                assert delivery.attempt_count == 0 and delivery.state == pb.Delivery.PENDING, client.list_attempts(
                    delivery.name
                ).attempts
        assert len(hanging.received()) >= 20
    finally:
        fast.close()
        hanging.close()
        failing.close()
        server.stop()


def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--max-in-flight", "2").start()
    receiver = Receiver(always(Reply(delay=0.05)))
    try:
        client = server.client()
        client.create_webhook("payment", "completed", receiver.url("/a"))
        client.create_webhook("payment", "completed", receiver.url("/b"))
        published: list[str] = []
        for batch in range(4):
            events = [event_input("payment", "completed", {"b": batch, "n": n}) for n in range(10)]
            answer = client.publish_events(events)
            published.extend(r.name.removeprefix("events/") for r in answer.results)
        receiver.wait_for(6)
        server.kill()
        in_flight_bound = 2 * 2  # two destinations, two requests each
        server.start()
        wait_until(lambda: len({r.json()["id"] for r in receiver.received("/a")}) == 40, timeout=60)
        wait_until(lambda: len({r.json()["id"] for r in receiver.received("/b")}) == 40, timeout=60)
        client = server.client()
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.SUCCEEDED, page_size=1000).deliveries) == 80)
        for path in ("/a", "/b"):
            counts = Counter(r.json()["id"] for r in receiver.received(path))
            assert set(counts) == set(published)
            duplicates = sum(c - 1 for c in counts.values())
            assert duplicates <= in_flight_bound
    finally:
        receiver.close()
        server.stop()
