"""Auto-disable: a webhook whose every attempt failed for ``--auto-disable-after`` is switched off
with a reason, and ``webhook.disabled`` goes to whoever subscribed (real server, both stores);
the failure streak it is judged by, as the store keeps it (in-process, both stores)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
import standardwebhooks
import trio

from hookd.engine.health import WEBHOOK
from hookd.engine.model import Outcome
from hookd.engine.store import health_ops
from hookd.engine.store.sql import Tx
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends


def attempts(outcomes: list[tuple[float, Outcome]], tx: Tx) -> None:
    """Attempts of one webhook, added in this order in one transaction."""
    for start, outcome in outcomes:
        health_ops.counts(tx).add("wh_1", "http://127.0.0.1:9/x", start, 10.0, outcome, f"error at {start:g}")


async def test_the_failure_streak_starts_at_the_first_failure_after_a_success(tmp_path: Path) -> None:
    engine = local_engine(tmp_path, auto_disable_after_s=0, retention_s=0)
    ok, failed = Outcome.SUCCESS, Outcome.SERVER_ERROR
    steps = [
        ([(100.0, failed)], 100.0),  # the first failure starts the streak
        ([(200.0, failed)], 100.0),  # later failures keep it
        ([(300.0, ok)], 0.0),  # a success ends it
        ([(400.0, failed), (500.0, ok), (600.0, failed)], 600.0),  # in the order they were added
        ([(700.0, failed), (710.0, failed)], 600.0),
        ([(800.0, ok), (900.0, failed)], 900.0),  # a batch that saw a success knows for itself
    ]

    def stored(tx: Tx) -> float:
        return float(tx.scalar("SELECT failing_since FROM health_last WHERE kind = ? AND key = ?", [WEBHOOK, "wh_1"]))

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for outcomes, expected in steps:
            await engine._writer.execute(partial(attempts, outcomes))
            assert await engine._readers.run(stored) == expected, outcomes
        await engine._writer.execute(partial(health_ops.reset_failing, webhook_id="wh_1"))
        assert await engine._readers.run(stored) == 0.0
        nursery.cancel_scope.cancel()


@pytest.fixture
def down() -> Iterator[Receiver]:
    receiver = Receiver(always(Reply(status=500)))
    yield receiver
    receiver.close()


def hookctl(server: HookdProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hookd.client.cli", "--address", server.address, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_webhook_failing_for_the_setting_is_disabled_and_says_so(tmp_path: Path, down: Receiver) -> None:
    server = HookdProcess(
        tmp_path, "--auto-disable-after", "2s", "--max-attempts", "1", "--breaker-threshold", "100000"
    ).start()
    ops = Receiver()
    healthy = Receiver()
    try:
        client = server.client()
        queued = client.create_webhook("order", "created", down.url("/queued"))
        discarded = client.create_webhook(
            "order", "created", down.url("/discarded"), inactive_policy=pb.Webhook.DISCARD
        )
        fine = client.create_webhook("order", "created", healthy.url())
        watcher = client.create_webhook("webhook", "disabled", ops.url())
        client.publish_event("order", "created", data={"n": 1})

        def disabled(name: str) -> pb.Webhook | None:
            hook = client.get_webhook(name)
            return hook if hook.status == pb.Webhook.INACTIVE else None

        off = wait_until(lambda: disabled(queued.name))
        assert off.disabled_reason.startswith("every attempt failed since ")
        assert off.disabled_reason.endswith("; last error: HTTP 500")
        assert off.disable_time.ToSeconds() > 0
        wait_until(lambda: disabled(discarded.name))
        assert client.get_webhook(fine.name).status == pb.Webhook.ACTIVE
        listed = {hook.name: hook for hook in client.list_webhooks().webhooks}
        assert listed[queued.name].disabled_reason == off.disabled_reason
        assert listed[queued.name].disable_time == off.disable_time

        # The operational event, signed like any other, to the webhook subscribed to it.
        announced = {r.json()["data"]["name"]: r for r in ops.wait_for(2)}
        assert set(announced) == {queued.name, discarded.name}
        body = announced[queued.name]
        standardwebhooks.Webhook(watcher.signing_secret).verify(body.body, body.headers)
        event = body.json()
        assert event["type"] == "webhook.disabled"
        assert event["data"]["url"] == down.url("/queued")
        assert event["data"]["reason"] == off.disabled_reason
        since = datetime.fromisoformat(event["data"]["failing_since"]).timestamp()
        assert since <= datetime.fromisoformat(event["data"]["disable_time"]).timestamp()
        assert abs(datetime.fromisoformat(event["data"]["disable_time"]).timestamp() - off.disable_time.ToSeconds()) < 1

        shown = hookctl(server, "webhooks", "get", queued.name)
        assert "Disabled" in shown and "every attempt failed since" in shown and "HTTP 500" in shown
        assert "Disabled" in hookctl(server, "webhooks", "list")

        # From now on, its policy: held, or discarded.
        client.publish_event("order", "created", data={"n": 2})
        wait_until(lambda: client.list_deliveries(queued.name, state=pb.Delivery.HELD).deliveries)
        wait_until(lambda: client.list_deliveries(discarded.name, state=pb.Delivery.DISCARDED).deliveries)

        # Activated again (the endpoint fixed): reason and time are cleared, what was held goes.
        down.behaviour = always(Reply())
        again = client.set_status(queued.name, pb.Webhook.ACTIVE)
        assert again.disabled_reason == "" and not again.HasField("disable_time")
        wait_until(lambda: down.received("/queued") and down.received("/queued")[-1].json()["data"]["n"] == 2)
        assert client.get_webhook(queued.name).status == pb.Webhook.ACTIVE
        assert "Disabled" not in hookctl(server, "webhooks", "get", queued.name)
    finally:
        ops.close()
        healthy.close()
        server.stop()
