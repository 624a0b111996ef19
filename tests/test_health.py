"""Health figures against known traffic: StreamHealth and the Prometheus endpoint."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from hookd.client import HookdClient, InvalidArgument, NotFound, ResourceExhausted
from hookd.client.client import event_input
from hookd.engine.monitor import SNAPSHOT_STEP
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb
from tests.support.engine import local_engine
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess
from tests.support.stalled_watcher import StalledWatcher

pytestmark = pytest.mark.backends


def snapshot(client: HookdClient, **filters: object) -> pb.HealthSnapshot:
    stream = client.stream_health(**filters)  # type: ignore[arg-type]
    try:
        return next(stream)
    finally:
        stream.close()  # type: ignore[attr-defined]


def stats_for(snap: pb.HealthSnapshot, key: str) -> pb.HealthStats:
    for stats in [snap.service, *snap.webhooks, *snap.destinations]:
        if stats.key == key:
            return stats
    raise AssertionError(f"{key} not in snapshot")


def five_minutes(stats: pb.HealthStats) -> pb.WindowStats:
    (window,) = [w for w in stats.windows if w.window.seconds == 300]
    return window


def test_figures_match_known_traffic(tmp_path: Path) -> None:
    # A breaker that never opens, so every scheduled attempt is made and counted.
    hookd = HookdProcess(
        tmp_path, "--retry-base", "0.05", "--retry-cap", "0.5", "--max-attempts", "4", "--breaker-threshold", "1000"
    ).start()
    client = hookd.client()
    timing = Receiver(lambda request, count: Reply(delay=0.2 if count > 8 else 0.02))
    failing = Receiver(always(Reply(status=500, body=b"down")))
    limited = Receiver(always(Reply(status=429)))
    try:
        fast = client.create_webhook("order", "created", timing.url())
        broken = client.create_webhook("order", "created", failing.url())
        throttled = client.create_webhook("order", "created", limited.url())
        for n in range(10):
            client.publish_event("order", "created", data={"n": n})
        timing.wait_for(10)
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.FAILED, page_size=100).deliveries) == 20)
        # The last answers the fast one had are slow: wait for their outcomes too.
        wait_until(lambda: len(client.list_deliveries(fast.name, state=pb.Delivery.SUCCEEDED).deliveries) == 10)

        snap = snapshot(client)
        good = five_minutes(stats_for(snap, fast.name))
        assert (good.attempts, good.successes, good.success_rate) == (10, 10, 1.0)
        assert dict(good.errors) == {}
        assert 18 <= good.p50_ms <= 150  # eight requests took >= 20 ms
        assert 190 <= good.p99_ms <= 1500  # two took >= 200 ms
        assert good.p95_ms >= good.p50_ms

        bad = five_minutes(stats_for(snap, broken.name))
        assert (bad.attempts, bad.successes, bad.success_rate) == (40, 0, 0.0)  # 10 deliveries x 4 attempts
        assert dict(bad.errors) == {"SERVER_ERROR": 40}
        assert stats_for(snap, broken.name).last_error == "HTTP 500"
        assert dict(five_minutes(stats_for(snap, throttled.name)).errors) == {"RATE_LIMITED": 40}

        destination = stats_for(snap, failing.url())
        assert five_minutes(destination).attempts == 40
        service = five_minutes(snap.service)
        assert service.attempts == 90 and service.successes == 10
        assert abs(service.success_rate - 10 / 90) < 1e-9
        assert dict(service.errors) == {"SERVER_ERROR": 40, "RATE_LIMITED": 40}
        assert stats_for(snap, fast.name).last_success_time.seconds > 0

        hookd.restart()  # figures come from the stored attempts
        after = snapshot(hookd.client())
        assert five_minutes(after.service).attempts == 90
        assert dict(five_minutes(stats_for(after, broken.name)).errors) == {"SERVER_ERROR": 40}
    finally:
        timing.close()
        failing.close()
        limited.close()
        hookd.stop()


def test_queue_depth_while_a_destination_hangs(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--max-in-flight", "2", "--queue-size", "4").start()
    hanging = Receiver(always(Reply(hang=True)))
    try:
        client = server.client()
        hook = client.create_webhook("product", "updated", hanging.url(), timeout_s=30)
        client.publish_events([event_input("product", "updated", {"n": n}) for n in range(20)])
        hanging.wait_for(2)

        def settled() -> pb.HealthStats | None:
            stats = stats_for(snapshot(client), hanging.url())
            return stats if stats.in_flight == 2 and stats.queued_in_memory > 0 else None

        destination = wait_until(settled)
        assert destination.backlog == 20
        assert destination.queued_in_memory <= 4
        webhook = stats_for(snapshot(client, webhooks=[hook.name]), hook.name)
        assert (webhook.in_flight, webhook.backlog) == (2, 20)
        assert snapshot(client).service.backlog == 20
    finally:
        hanging.close()
        server.stop()


def test_breaker_opens_after_failures(tmp_path: Path) -> None:
    server = HookdProcess(
        tmp_path,
        "--breaker-threshold",
        "3",
        "--breaker-cooldown",
        "60",
        "--retry-base",
        "0.01",
        "--retry-cap",
        "0.05",
        "--max-in-flight",
        "1",
    ).start()
    failing = Receiver(always(Reply(status=503)))
    try:
        client = server.client()
        hook = client.create_webhook("payment", "failed", failing.url())
        client.publish_events([event_input("payment", "failed", {"n": n}) for n in range(5)])
        stats = wait_until(
            lambda: (
                (s := stats_for(snapshot(client), failing.url())).breaker_state == pb.OPEN
                and s.retries_scheduled == 3
                and s
            )
        )
        assert stats.breaker_since.seconds > 0 and stats.backlog == 5
        assert stats_for(snapshot(client), hook.name).breaker_state == pb.OPEN
        # Open: nothing more is sent although the three retries fell due milliseconds later.
        assert len(failing.received()) == 3
    finally:
        failing.close()
        server.stop()


def test_stream_sends_snapshot_then_updates_and_ends_on_cancel(client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    other = client.create_webhook("order", "updated", receiver.url("/other"))
    stream = client.stream_health(webhooks=[hook.name], interval_s=0.1)
    first = next(stream)
    assert [s.key for s in first.webhooks] == [hook.name]
    assert [s.key for s in first.destinations] == [receiver.url()]
    client.publish_event("order", "created", data={})
    receiver.wait_for(1)
    update = wait_until(lambda: (m := next(stream)) and five_minutes(stats_for(m, hook.name)).attempts == 1 and m)
    assert update.time.ToNanoseconds() > first.time.ToNanoseconds()
    stream.close()  # type: ignore[attr-defined]
    # The server is still serving streams and calls after the cancel.
    assert snapshot(client, destinations=[receiver.url("/other")]).webhooks[0].key == other.name
    with pytest.raises(NotFound):
        snapshot(client, webhooks=["webhooks/wh_unknown"])
    with pytest.raises(InvalidArgument, match="webhooks"):
        snapshot(client, webhooks=["webhooks/a/b"])


def test_filters_are_capped_and_deduplicated(client: HookdClient, receiver: Receiver) -> None:
    """One call used to name 200,000 destinations (freezing the server for seconds) or one webhook
    100,000 times (a 22 MB snapshot): over 1,000 entries is refused, duplicates count once."""
    a = client.create_webhook("order", "created", receiver.url("/a"))
    b = client.create_webhook("order", "created", receiver.url("/b"))
    for field, values in (
        ("webhooks", [a.name] * 1001),
        ("destinations", [f"https://example.com/{n}" for n in range(1001)]),
    ):
        with pytest.raises(InvalidArgument) as refused:
            snapshot(client, **{field: values})
        assert refused.value.details == f"{field}: at most 1000 entries", refused.value.details
    with pytest.raises(InvalidArgument, match=r": destinations\[2\]: is longer than 2048 characters"):
        snapshot(client, destinations=["https://example.com/", "x", "https://example.com/" + "y" * 2048])

    snap = snapshot(client, webhooks=[a.name, b.name] * 500)
    assert [s.key for s in snap.webhooks] == [a.name, b.name]
    assert sorted(s.key for s in snap.destinations) == [receiver.url("/a"), receiver.url("/b")]
    snap = snapshot(client, destinations=[receiver.url("/b")] * 999 + [receiver.url("/a")])
    assert [s.key for s in snap.destinations] == [receiver.url("/b"), receiver.url("/a")]
    assert [s.key for s in snap.webhooks] == [b.name, a.name]


class _TaskSteps(trio.abc.Instrument):
    """Counts how many times one task is scheduled: each step is a turn it takes on the loop."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_big_snapshot_takes_turns_with_the_loop(tmp_path: Path) -> None:
    """A snapshot's work is split into steps of at most SNAPSHOT_STEP keys, each ending at a
    checkpoint, so gRPC calls and the actors run in between (one used to hold the loop for 7 s)."""
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for n in range(2 * SNAPSHOT_STEP):
            data = WebhookInput(resource="order", event="created", url=f"http://127.0.0.1:9/{n}")
            await engine.create_webhook(data)
        cases = {
            "everything": (None, None, 4 * SNAPSHOT_STEP),
            "destinations": (None, [f"https://example.com/{n}" for n in range(1000)], 1000),
        }
        await engine.health_snapshot(None, ["https://example.com/warm-up"])  # loads the backlog counts
        for name, (hooks, urls, keys) in cases.items():
            counter = _TaskSteps(trio.lowlevel.current_task())
            trio.lowlevel.add_instrument(counter)
            try:
                snap = await engine.health_snapshot(hooks, urls)
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert len(snap.webhooks) + len(snap.destinations) == keys, name
            assert counter.steps >= keys // SNAPSHOT_STEP, (name, counter.steps)
        nursery.cancel_scope.cancel()


def test_many_watchers_are_served(client: HookdClient) -> None:
    streams = [client.stub.StreamHealth(pb.StreamHealthRequest()) for _ in range(100)]
    try:
        assert all(next(iter(s)).service.key == "service" for s in streams)
        assert client.list_event_types().event_types  # unary calls still answered
    finally:
        for s in streams:
            s.cancel()  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as error:
        next(iter(streams[0]))
    assert error.value.code() == grpc.StatusCode.CANCELLED


def test_a_stalled_watcher_is_dropped_with_its_connection(tmp_path: Path) -> None:
    """A watcher that stops reading used to hold its handler, and grpc's record of the call with
    a snapshot in it, for ever (6 MB per 200 such streams, never freed): its connection looked
    alive, since it kept answering pings. Now a snapshot it has not taken within
    --watcher-send-timeout drops it, and its connection is closed, which frees the call."""
    server = HookdProcess(tmp_path, "--watcher-send-timeout", "1").start()
    try:
        client = server.client()
        for n in range(20):  # snapshots of a few KiB, so a 16 KiB window fills at once
            client.create_webhook("order", "created", f"http://127.0.0.1:9/{n}")
        request = pb.StreamHealthRequest()
        request.interval.FromMilliseconds(100)
        stalled = [StalledWatcher(server.port, request.SerializeToString()) for _ in range(3)]
        leaving = StalledWatcher(server.port, request.SerializeToString())
        wait_until(lambda: leaving.received)
        leaving.close()  # a watcher that really closes its connection is let go at once, as before
        for watcher in stalled:
            assert watcher.closed.wait(30), "the server never ended the stalled watcher's connection"
            assert watcher.received == 16 * 1024  # it stalled: it had used up its window
        assert wait_until(lambda: snapshot(client).watchers == 1)  # this one
        dropped = [line for line in server.log().splitlines() if "health watcher dropped" in line]
        assert len(dropped) == 3, dropped
        assert client.list_event_types().event_types  # and the server serves on
    finally:
        server.stop()


def test_watchers_are_capped(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, env={"HOOKD_MAX_WATCHERS": "3"}).start()
    try:
        client = server.client()
        streams = [client.stream_health() for _ in range(3)]
        assert all(next(stream).watchers >= 1 for stream in streams)
        with pytest.raises(ResourceExhausted) as refused:
            snapshot(client)
        assert "3 watchers" in refused.value.details and "--max-watchers" in refused.value.details
        streams.pop().close()  # type: ignore[attr-defined]

        def admitted() -> bool:
            try:
                return snapshot(client).watchers == 3
            except ResourceExhausted:
                return False  # the closed stream's slot is freed as its handler ends, soon after

        assert wait_until(admitted)
        for stream in streams:
            stream.close()  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_prometheus_endpoint(tmp_path: Path) -> None:
    # One attempt: a retry (due at random within 30 s) could otherwise be counted too.
    server = HookdProcess(tmp_path, "--metrics-listen", "127.0.0.1:0", "--max-attempts", "1").start()
    receiver = Receiver(always(Reply(status=500)))
    try:
        client = server.client()
        client.create_webhook("order", "created", receiver.url(), timeout_s=1)
        idle = client.create_webhook("order", "updated", receiver.url("/idle"))
        client.publish_event("order", "created", data={})
        receiver.wait_for(1)
        port = int((tmp_path / "port.metrics").read_text())

        def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            return {
                family.name: [(sample.labels, sample.value) for sample in family.samples]
                for family in text_string_to_metric_families(text)
            }

        metrics = wait_until(lambda: (m := scrape()) and m.get("hookd_attempts") and m)
        assert ({"destination": receiver.url(), "outcome": "SERVER_ERROR"}, 1.0) in metrics["hookd_attempts"]
        ratio = dict(
            (labels["window"], value)
            for labels, value in metrics["hookd_success_ratio"]
            if labels["scope"] == "service"
        )
        assert ratio == {"5m": 0.0, "1h": 0.0, "1d": 0.0}
        # A webhook without attempts has a count of 0 and no ratio or durations (0 would read as
        # every attempt failing, and fire an alert on every idle webhook).
        idle_attempts = [value for labels, value in metrics["hookd_window_attempts"] if labels["key"] == idle.name]
        assert idle_attempts == [0.0, 0.0, 0.0]
        for family in ("hookd_success_ratio", "hookd_attempt_duration_seconds"):
            assert not [labels for labels, _ in metrics[family] if labels["key"] == idle.name]
        states = {labels["state"]: value for labels, value in metrics["hookd_breaker_state"]}
        assert states == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
        assert "hookd_backlog_deliveries" in metrics and "hookd_attempt_duration_seconds" in metrics
    finally:
        receiver.close()
        server.stop()


def test_figures_survive_a_restart(tmp_path: Path) -> None:
    """The rolling figures come back from the stored counts: before and after a restart agree."""
    server = HookdProcess(tmp_path, "--breaker-threshold", "1000", "--max-attempts", "1").start()
    good = Receiver(lambda request, count: Reply(delay=0.001 * (count % 7)))
    bad = Receiver(always(Reply(status=503)))
    try:
        client = server.client()
        client.create_webhook("order", "created", good.url())
        client.create_webhook("order", "created", bad.url())
        for n in range(12):
            client.publish_event("order", "created", data={"n": n})
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.FAILED, page_size=100).deliveries) == 12)
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.SUCCEEDED, page_size=100).deliveries) == 12)

        def figures(snap: pb.HealthSnapshot) -> dict[str, object]:
            return {
                stats.key: (
                    [
                        (w.attempts, w.successes, w.success_rate, w.p50_ms, w.p95_ms, w.p99_ms, dict(w.errors))
                        for w in stats.windows
                    ],
                    stats.last_success_time.ToNanoseconds() // 1_000_000,
                    stats.last_failure_time.ToNanoseconds() // 1_000_000,
                    stats.last_error,
                )
                for stats in [snap.service, *snap.webhooks, *snap.destinations]
            }

        before = figures(snapshot(client))
        assert five_minutes(stats_for(snapshot(client), "service")).attempts == 24
        server.restart()
        assert figures(snapshot(server.client())) == before
    finally:
        good.close()
        bad.close()
        server.stop()
