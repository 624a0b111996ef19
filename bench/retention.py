"""Retention under steady load: does the file stay flat, and what does pruning cost?

Two servers in turn take the same saturating load (a publisher keeps a bounded backlog in
front of one fast destination): one with retention off, one with a short retention that prunes
all the time once its first period has passed. Measured: deliveries per second of each over the
same length of steady run, their ratio (target >= 0.9), the SQLite file's size at the start and
the end of the retention run's steady part (and the other's at its end, for scale), and the p99
of unary publishes made on the side meanwhile (pruning commits in small batches between them).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.harness import ReceiverProcess, hookd, percentile
from bench.scenarios import Profile
from hookd.client import HookdClient
from hookd.client.client import event_input

#: The retention of the pruning run, and how long it runs before its steady part starts (a
#: period and a bit: from then on each maintenance run removes about what came in meanwhile).
RETENTION_S = 10.0
WARM_S = RETENTION_S + 3.0
#: The steady part of each run.
STEADY_S = {"quick": 25.0, "full": 90.0}
#: The publisher keeps at most this many deliveries published but not yet received.
WINDOW = 4000
BATCH = 200
#: Unary publishes on the side, per second (their latency shows whether pruning holds them up).
SIDE_RATE = 20
PATH = "okretention"
PAD = "x" * 400  # a realistic order body


@dataclass
class _Load:
    """The saturating publisher and the side publisher, until stopped."""

    client: HookdClient
    receiver: ReceiverProcess
    published: int = 0
    side_ms: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def received(self) -> int:
        return int(self.receiver.stats()["counts"].get(PATH, 0))

    def saturate(self) -> None:
        while not self.stop.is_set():
            if self.published - self.received() >= WINDOW:
                time.sleep(0.01)
                continue
            self.client.publish_events([event_input("order", "created", {"n": n, "pad": PAD}) for n in range(BATCH)])
            self.published += BATCH

    def side(self) -> None:
        while not self.stop.wait(1.0 / SIDE_RATE):
            started = time.perf_counter()
            self.client.publish_event("customer", "created", data={"side": True})
            self.side_ms.append((time.perf_counter() - started) * 1000)


def _run(receiver: ReceiverProcess, retention: str, warm_s: float, steady_s: float) -> dict[str, float]:
    """One server under the load: its steady rate, file sizes and side-publish p99."""
    receiver.reset()
    with hookd("--retention", retention) as server:
        client = server.client()
        client.create_webhook("order", "created", receiver.url(PATH))
        load = _Load(client, receiver)
        threads = [threading.Thread(target=load.saturate), threading.Thread(target=load.side)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(warm_s)
            size_start = os.path.getsize(server.database)
            received_start, started = load.received(), time.perf_counter()
            load.side_ms.clear()
            time.sleep(steady_s)
            rate = (load.received() - received_start) / (time.perf_counter() - started)
            size_end = os.path.getsize(server.database)
            side_p99 = percentile(load.side_ms, 0.99)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join()
    return {"rate": rate, "size_start": size_start, "size_end": size_end, "side_p99": side_p99}


def retention(profile: Profile, receiver: ReceiverProcess) -> dict[str, Any]:
    steady_s = STEADY_S[profile.name]
    off = _run(receiver, "0", WARM_S, steady_s)
    on = _run(receiver, f"{RETENTION_S:g}s", WARM_S, steady_s)
    mb = 1024 * 1024
    return {
        "retention_s": RETENTION_S,
        "steady_s": steady_s,
        "db_mb_start": round(on["size_start"] / mb, 1),
        "db_mb_end": round(on["size_end"] / mb, 1),
        "db_mb_end_retention_off": round(off["size_end"] / mb, 1),
        "deliveries_per_s_retention_on": round(on["rate"], 1),
        "deliveries_per_s_retention_off": round(off["rate"], 1),
        "ratio": round(on["rate"] / off["rate"], 3),
        "side_publish_p99_ms_retention_on": round(on["side_p99"], 1),
        "side_publish_p99_ms_retention_off": round(off["side_p99"], 1),
    }
