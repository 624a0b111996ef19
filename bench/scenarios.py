"""The benchmark scenarios. Each returns the figures for one top-level key of results.json.

Where a ratio compares two short bursts (isolation, watchers), each side is the best of two runs:
other work on a shared machine only ever slows a run down, so the best is the fairer estimate.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import baselines
from bench.harness import (
    ReceiverProcess,
    count_state,
    cpu_seconds,
    hookd,
    percentile,
    rss_mb,
    server_pid,
    wait_for,
)
from hookd.client import HookdClient
from hookd.client.client import event_input
from hookd.engine.health import latency_slot
from hookd.engine.store import health_ops
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc
from tests.support.server import HookdProcess

BATCH = 500
CONCURRENCY = 16  # hookd's default requests in flight per destination, and the baselines'


@dataclass(frozen=True)
class Profile:
    name: str
    throughput_events: int
    isolation_events: int
    isolation_window_s: float
    latency_rate: int
    latency_seconds: float
    ingestion_batches: int
    unary_seconds: float
    destinations: int
    backlog: int
    backlog_watch_s: float
    health_attempts: int
    watcher_events: int


PROFILES = {
    "quick": Profile("quick", 6000, 3000, 8.0, 200, 8.0, 60, 4.0, 10_000, 200_000, 20.0, 1_000_000, 3000),
    "full": Profile("full", 30000, 10000, 20.0, 300, 30.0, 200, 10.0, 10_000, 200_000, 60.0, 1_000_000, 10000),
}


def _sample_body() -> bytes:
    return json.dumps(
        {
            "id": "evt_0",
            "type": "order.created",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "data": {"id": 1001, "total": "25.00", "sent_at": time.time()},
            "related": {},
        },
        separators=(",", ":"),
    ).encode()


def _publish(client: HookdClient, resource: str, event: str, count: int, stamp: bool = False) -> None:
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        data = {"id": 0, "total": "25.00"}
        if stamp:
            data["sent_at"] = time.time()  # type: ignore[assignment]
        client.publish_events([event_input(resource, event, data) for _ in range(size)])


def _drain(server: HookdProcess, expected: int, timeout: float) -> None:
    wait_for(lambda: count_state(server.database, "SUCCEEDED") >= expected, timeout)


def _engine_rate(server: HookdProcess, client: HookdClient, total: int, already: int) -> float:
    start = time.perf_counter()
    _publish(client, "order", "created", total)
    _drain(server, already + total, timeout=600)
    return total / (time.perf_counter() - start)


# -- throughput -----------------------------------------------------------------------------------


def throughput(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    body = _sample_body()
    capacity = baselines.receiver_capacity(receiver.port)
    baseline = baselines.bare_httpx(receiver.url("ok"), body, profile.throughput_events, CONCURRENCY)
    with hookd() as server:
        client = server.client()
        client.create_webhook("order", "created", receiver.url("ok"))
        warm = 500
        _publish(client, "order", "created", warm)
        _drain(server, warm, timeout=120)
        cpu_before = cpu_seconds(server_pid(server))
        rate = _engine_rate(server, client, profile.throughput_events, warm)
        cpu_ms = (cpu_seconds(server_pid(server)) - cpu_before) * 1000.0 / profile.throughput_events
    second = baselines.bare_httpx(receiver.url("ok"), body, profile.throughput_events, CONCURRENCY)
    baseline = (baseline + second) / 2
    return {
        "deliveries_per_s": round(rate, 1),
        "baseline_httpx_per_s": round(baseline, 1),
        "ratio": round(rate / baseline, 3),
        "cpu_ms_per_delivery": round(cpu_ms, 3),
        "receiver_capacity_per_s": round(capacity, 1),
        "concurrency": CONCURRENCY,
        "events": profile.throughput_events,
    }


# -- isolation --------------------------------------------------------------------------------------

SLOW_DESTINATIONS = 50
SLOW_TIMEOUT_S = 5.0
#: Events per second for the hanging and failing destinations: enough that each always has
#: requests open and a backlog waiting, while the fast destination gets the full stream.
#: Events per second, each to all the hanging and failing destinations. At 1 every slow
#: destination always has about five requests hanging; the heavy run adds ten times that load.
SLOW_EVENT_RATE = 1
HEAVY_SLOW_EVENT_RATE = 10
PACED_RATE = 200


def _fast_burst(client: HookdClient, receiver: ReceiverProcess, events: int) -> float:
    """Deliveries per second to the fast destination for a burst of ``events``."""
    receiver.reset()
    start = time.perf_counter()
    _publish(client, "order", "created", events)
    wait_for(lambda: receiver.stats()["counts"].get("latfast", 0) >= events, timeout=600, interval=0.1)
    return events / (time.perf_counter() - start)


#: Pause between a burst and the paced run after it: the paced run measures the steady state,
#: not the tail of the burst (its last outcomes' commits, the slow destinations' work it held up),
#: which otherwise fell on the first batches and, at 800 events, could be the p99 by itself.
SETTLE_S = 1.0


def _fast_paced(client: HookdClient, receiver: ReceiverProcess, seconds: float) -> float:
    """p99 publish-to-arrival latency at a steady ``PACED_RATE``, in batches of a tenth of a second."""
    time.sleep(SETTLE_S)
    receiver.reset()
    batch = PACED_RATE // 10
    rounds = int(seconds * 10)
    start = time.perf_counter()
    for n in range(rounds):
        pause = start + n * 0.1 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        _publish(client, "order", "created", batch, stamp=True)
    wait_for(lambda: receiver.stats()["counts"].get("latfast", 0) >= batch * rounds, timeout=120, interval=0.1)
    return percentile(receiver.stats()["latencies_ms"], 0.99)


def _slow_traffic(client: HookdClient, stop: threading.Event, rate: int) -> None:
    """order.updated events for the hanging and failing destinations, until stopped."""
    while not stop.wait(1.0 / rate):
        client.publish_event("order", "updated", data={"slow": True})


def isolation(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    with hookd() as server:
        client = server.client()
        client.create_webhook("order", "created", receiver.url("latfast"))
        _fast_burst(client, receiver, 500)  # warm-up
        solo = max(_fast_burst(client, receiver, profile.isolation_events) for _ in range(2))
        p99_solo = _fast_paced(client, receiver, profile.latency_seconds)
        for n in range(SLOW_DESTINATIONS):
            client.create_webhook("order", "updated", receiver.url(f"hang{n}"), timeout_s=SLOW_TIMEOUT_S)
        client.create_webhook("order", "updated", receiver.url("fail"))
        measured = {}
        for rate in (SLOW_EVENT_RATE, HEAVY_SLOW_EVENT_RATE):
            stop = threading.Event()
            slow = threading.Thread(target=_slow_traffic, args=(client, stop, rate))
            slow.start()
            try:
                time.sleep(1.0)  # every slow destination now has requests hanging
                rate_per_s = max(_fast_burst(client, receiver, profile.isolation_events) for _ in range(2))
                p99 = _fast_paced(client, receiver, profile.latency_seconds)
                hanging = sum(v for k, v in receiver.stats()["counts"].items() if k.startswith("hang"))
                measured[rate] = (rate_per_s, p99, hanging)
            finally:
                stop.set()
                slow.join()
    with_slow, p99_slow, hanging_seen = measured[SLOW_EVENT_RATE]
    heavy, p99_heavy, _ = measured[HEAVY_SLOW_EVENT_RATE]
    body = _sample_body()
    fast_url = receiver.url("okfast")
    slow_round = [receiver.url(f"hang{n}") for n in range(SLOW_DESTINATIONS)] + [receiver.url("fail")]
    # The same mix for the pool: each round of slow jobs per second of fast traffic the engine saw.
    per_round = max(1, int(solo / SLOW_EVENT_RATE))
    jobs: list[str] = []
    while len(jobs) < profile.isolation_events * 4:
        jobs.extend(slow_round)
        jobs.extend([fast_url] * per_round)
    window = profile.isolation_window_s
    pool, pool_done = baselines.worker_pool(jobs, body, CONCURRENCY, SLOW_TIMEOUT_S, window, fast_url)
    pool_solo, _ = baselines.worker_pool(
        [fast_url] * profile.isolation_events, body, CONCURRENCY, SLOW_TIMEOUT_S, window, fast_url
    )
    return {
        "solo_per_s": round(solo, 1),
        "with_slow_per_s": round(with_slow, 1),
        "ratio": round(with_slow / solo, 3),
        "p99_ms_solo": round(p99_solo, 1),
        "p99_ms_with_slow": round(p99_slow, 1),
        "p99_rate_per_s": PACED_RATE,
        "worker_pool_per_s": round(pool, 1),
        "worker_pool_solo_per_s": round(pool_solo, 1),
        "worker_pool_fast_delivered": pool_done,
        "slow_destinations": SLOW_DESTINATIONS,
        "slow_requests_hanging_seen": hanging_seen,
        "slow_event_rate_per_s": SLOW_EVENT_RATE,
        "heavy_slow_event_rate_per_s": HEAVY_SLOW_EVENT_RATE,
        "heavy_with_slow_per_s": round(heavy, 1),
        "heavy_ratio": round(heavy / solo, 3),
        "heavy_p99_ms_with_slow": round(p99_heavy, 1),
        "slow_timeout_s": SLOW_TIMEOUT_S,
        "workers": CONCURRENCY,
    }


# -- latency ----------------------------------------------------------------------------------------


def latency(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    with hookd() as server:
        client = server.client()
        client.create_webhook("order", "created", receiver.url("latency"))
        receiver.reset()
        total = int(profile.latency_rate * profile.latency_seconds)
        interval = 1.0 / profile.latency_rate
        start = time.perf_counter()
        for n in range(total):
            target = start + n * interval
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            client.publish_event("order", "created", data={"sent_at": time.time()})
        wait_for(lambda: receiver.stats()["counts"].get("latency", 0) >= total, timeout=120, interval=0.1)
        values = receiver.stats()["latencies_ms"]
    return {
        "rate_per_s": profile.latency_rate,
        "events": total,
        "p50_ms": round(percentile(values, 0.50), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
    }


# -- ingestion --------------------------------------------------------------------------------------


def _for_seconds(threads: int, seconds: float, call: Any) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def run(index: int) -> None:
        while time.perf_counter() < stop:
            call()
            counts[index] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - start)


def ingestion(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    with hookd() as server:
        client = server.client()
        # Deliveries are written (held) but not sent, so this measures durable ingestion alone.
        client.create_webhook("order", "created", receiver.url("ok"), status=pb.Webhook.INACTIVE)
        batch = [event_input("order", "created", {"id": n, "total": "25.00"}) for n in range(BATCH)]
        threads = 4
        done = [0]
        lock = threading.Lock()

        def publish_batches() -> None:
            while True:
                with lock:
                    if done[0] >= profile.ingestion_batches:
                        return
                    done[0] += 1
                client.publish_events(batch)

        start = time.perf_counter()
        workers = [threading.Thread(target=publish_batches) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        batch_rate = profile.ingestion_batches * BATCH / (time.perf_counter() - start)

        channel = grpc.insecure_channel(server.address)
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        noop = _for_seconds(8, profile.unary_seconds, lambda: health.Check(request))
        unary = _for_seconds(8, profile.unary_seconds, lambda: client.publish_event("order", "created", {"id": 1}))
        noop_again = _for_seconds(8, profile.unary_seconds, lambda: health.Check(request))
        channel.close()
    noop = (noop + noop_again) / 2
    return {
        "batch_events_per_s": round(batch_rate, 1),
        "batch_size": BATCH,
        "unary_per_s": round(unary, 1),
        "grpc_noop_per_s": round(noop, 1),
        "unary_ratio": round(unary / noop, 3),
        "client_threads": 8,
    }


# -- scale ------------------------------------------------------------------------------------------


def scale(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # Ten thousand webhooks on one event type, so one publish wakes every destination at once.
    with hookd("--max-webhooks-per-type", str(profile.destinations)) as server:
        pid = server_pid(server)
        client = server.client()
        idle_rss = rss_mb(pid)
        names = [f"ok{n}" for n in range(profile.destinations)]
        lock = threading.Lock()

        def create() -> None:
            while True:
                with lock:
                    if not names:
                        return
                    path = names.pop()
                client.create_webhook("customer", "updated", receiver.url(path))

        workers = [threading.Thread(target=create) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        client.publish_event("customer", "updated", {"id": 1})
        _drain(server, profile.destinations, timeout=600)
        results.update(
            destinations=profile.destinations,
            idle_rss_mb=round(idle_rss, 1),
            rss_mb=round(rss_mb(pid), 1),  # every destination's actor is alive (idle) now
        )
    with hookd("--max-in-flight", "4") as server:
        pid = server_pid(server)
        client = server.client()
        client.create_webhook("order", "created", receiver.url("slow50"))
        start_rss = rss_mb(pid)
        peak = start_rss
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb(pid))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        _publish(client, "order", "created", profile.backlog)
        published = time.perf_counter() - started
        after_publish = rss_mb(pid)
        time.sleep(profile.backlog_watch_s)
        stop.set()
        sampler.join()
        delivered = count_state(server.database, "SUCCEEDED")
        results.update(
            backlog=profile.backlog,
            backlog_publish_s=round(published, 1),
            backlog_delivered_while_watched=delivered,
            backlog_start_rss_mb=round(start_rss, 1),
            backlog_rss_after_publish_mb=round(after_publish, 1),
            rss_growth_mb=round(peak - start_rss, 1),
        )
    return results


# -- health -----------------------------------------------------------------------------------------


def _fill_history(server: HookdProcess, count: int, hooks: list[tuple[str, str]]) -> None:
    """Write ``count`` attempts spread over the last day for ``hooks`` (id, url) straight into a
    stopped server's SQLite file, with the health counts hookd keeps beside them (minute rows
    for the last two hours, hour rows before), as a server that made them would have left. The
    counts are taken over every stored attempt, so they replace those of an earlier fill."""
    conn = sqlite3.connect(server.database)
    now = time.time()
    conn.execute("CREATE TEMP TABLE hooks (idx INTEGER PRIMARY KEY, id TEXT, url TEXT)")
    conn.executemany("INSERT INTO hooks VALUES (?, ?, ?)", [(n, hook, url) for n, (hook, url) in enumerate(hooks)])
    # Generated in SQLite itself: ten million rows in seconds, not minutes.
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO attempts (delivery_id, webhook_id, url, start_time, duration_ms, status_code, outcome, "
        "error, response_excerpt) "
        "SELECT i % 1000 + 1, h.id, h.url, ? - (i * 86000.0 / ?), 5 + (i * 7919) % 495, 200, "
        "CASE WHEN i % 10 = 8 THEN 'SERVER_ERROR' WHEN i % 10 = 9 THEN 'TIMEOUT' ELSE 'SUCCESS' END, '', '' "
        "FROM n JOIN hooks h ON h.idx = i % ?",
        [count - 1, now, count, len(hooks)],
    )
    conn.create_function("hookd_slot", 1, latency_slot, deterministic=True)
    minutes: dict[tuple[str, str, int], Counter[tuple[str, int]]] = {}
    hours: dict[tuple[str, str, int], Counter[tuple[str, int]]] = {}
    recent = int(now // 60) - health_ops.MINUTE_ROWS_KEPT
    for hook, url, minute, outcome, slot, attempts in conn.execute(
        "SELECT webhook_id, url, CAST(start_time / 60 AS INTEGER), outcome, hookd_slot(duration_ms), COUNT(*) "
        "FROM attempts GROUP BY 1, 2, 3, 4, 5"
    ):
        for kind, key in (("w", hook), ("d", url)):
            if minute >= recent:
                minutes.setdefault((kind, key, minute), Counter())[(outcome, slot)] += attempts
            else:
                hours.setdefault((kind, key, minute // 60), Counter())[(outcome, slot)] += attempts
    conn.executemany(
        "INSERT OR REPLACE INTO health_minutes (kind, key, minute, counts, changed_at) VALUES (?, ?, ?, ?, ?)",
        [(*key, health_ops.encode(cells), now) for key, cells in minutes.items()],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO health_hours (kind, key, hour, counts) VALUES (?, ?, ?, ?)",
        [(*key, health_ops.encode(cells)) for key, cells in hours.items()],
    )
    conn.commit()
    conn.close()


def _startup_s(server: HookdProcess) -> float:
    """From starting the process to its answering, best of two."""
    times = []
    for _ in range(2):
        server.stop()
        started = time.perf_counter()
        server.start(timeout=300)
        times.append(time.perf_counter() - started)
    return min(times)


def ordered(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    """An ORDERED webhook sends one delivery at a time, in publish order; the same traffic to an
    unordered one goes 16 at a time. Both in the same run, to the same fast receiver."""
    events = profile.throughput_events // 3
    rates = {}
    for name, ordering in (("unordered", pb.Webhook.UNORDERED), ("ordered", pb.Webhook.ORDERED)):
        with hookd() as server:
            client = server.client()
            client.create_webhook("order", "created", receiver.url(f"ok-{name}"), ordering=ordering)
            _publish(client, "order", "created", 200)
            _drain(server, 200, timeout=120)
            rates[name] = _engine_rate(server, client, events, 200)
    return {
        "events": events,
        "ordered_per_s": round(rates["ordered"], 1),
        "unordered_per_s": round(rates["unordered"], 1),
        "ordered_ratio": round(rates["ordered"] / rates["unordered"], 3),
    }


def restart(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    """Start-up time with a day of history: the health figures come back from stored counts."""
    results: dict[str, Any] = {}
    with hookd() as server:
        client = server.client()
        hooks = []
        for n in range(100):
            hook = client.create_webhook("order", "created", f"http://127.0.0.1:1/d{n}", status=pb.Webhook.INACTIVE)
            hooks.append((hook.name.removeprefix("webhooks/"), hook.url))
        results["startup_empty_s"] = round(_startup_s(server), 2)
        stored = 0
        for target in (1_000_000, 10_000_000):
            server.stop()
            _fill_history(server, target - stored, hooks)
            stored = target
            label = f"{target // 1_000_000}m"
            results[f"startup_{label}_attempts_s"] = round(_startup_s(server), 2)
            stream = server.client().stream_health()
            results[f"service_attempts_1d_after_{label}"] = next(stream).service.windows[2].attempts
            stream.close()  # type: ignore[attr-defined]
        results["database_mb"] = round(Path(server.database).stat().st_size / 1e6, 1)
    return results


def health(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with hookd() as server:
        client = server.client()
        hooks = []
        for n in range(100):
            hook = client.create_webhook("order", "created", f"http://127.0.0.1:1/d{n}", status=pb.Webhook.INACTIVE)
            hooks.append((hook.name.removeprefix("webhooks/"), hook.url))
        server.stop()
        _fill_history(server, profile.health_attempts, hooks)
        server.start(timeout=300)
        client = server.client()
        timings = []
        for _ in range(20):
            time.sleep(0.2)  # past the server's snapshot sharing, so each call computes afresh
            begin = time.perf_counter()
            stream = client.stream_health()
            first = next(stream)
            timings.append((time.perf_counter() - begin) * 1000.0)
            stream.close()  # type: ignore[attr-defined]
        results.update(
            attempts_stored=profile.health_attempts,
            snapshot_ms=round(percentile(timings, 0.5), 2),
            snapshot_ms_max=round(max(timings), 2),
            snapshot_webhooks=len(first.webhooks),
            snapshot_destinations=len(first.destinations),
            snapshot_service_attempts_1d=first.service.windows[2].attempts,
        )
    with hookd() as server:
        client = server.client()
        client.create_webhook("order", "created", receiver.url("ok"))
        _publish(client, "order", "created", 300)
        _drain(server, 300, timeout=120)
        none = max(
            _engine_rate(server, client, profile.watcher_events, 300 + n * profile.watcher_events) for n in range(2)
        )
        channel = grpc.insecure_channel(server.address)
        stub = hookd_pb2_grpc.WebhookServiceStub(channel)
        watchers = [stub.StreamHealth(pb.StreamHealthRequest()) for _ in range(100)]
        for watcher in watchers:
            next(iter(watcher))
        watched = max(
            _engine_rate(server, client, profile.watcher_events, 300 + n * profile.watcher_events) for n in range(2, 4)
        )
        for watcher in watchers:
            watcher.cancel()  # type: ignore[no-untyped-call]
        channel.close()
    results.update(
        watchers=100,
        watcher_interval_s=1.0,
        throughput_no_watchers_per_s=round(none, 1),
        throughput_100_watchers_per_s=round(watched, 1),
        watchers_ratio=round(watched / none, 3),
    )
    return results
