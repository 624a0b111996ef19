"""kill -9 under load: the harness behind tests/test_crash.py and bench/crash_soak.py.

Client threads publish without pause while the server is SIGKILLed at random moments and
restarted on the same database. Only what a publish call acknowledged is promised: such an
event must reach every webhook it matches at least once. A call that raised (the server died
under it) promises nothing either way. Duplicates can only come from requests in flight when a
kill landed, since the outcome of those was never committed; so they are bounded by
``max_in_flight x destinations x kills``.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from hookd.client import HookdClient, HookdError
from hookd.client.client import event_input
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

#: (resource, event, path) of each webhook. Two share a type, so one event fans out to two
#: destinations; the third takes another type, so "matching" is checked, not assumed.
WEBHOOKS = (("order", "created", "/a"), ("order", "created", "/b"), ("payment", "completed", "/c"))


@dataclass
class CrashReport:
    """What a run produced, counted at the receivers."""

    seed: int
    kills: int
    #: Events whose publish call returned.
    published: int
    #: Publish calls that raised because the server died under them (or was down).
    failed_calls: int
    #: (acknowledged event, matching webhook) pairs the receivers got at least once.
    delivered: int
    #: Copies received beyond the first, for any event (acknowledged or not).
    duplicated: int
    #: (acknowledged event, matching webhook) pairs never received: must be 0.
    lost: int
    #: The most duplicates kills can explain.
    duplicate_bound: int
    #: Requests whose body arrived torn (the sender died mid-request); not counted as delivered.
    torn: int
    #: Events a destination got that it does not subscribe to: must be 0.
    misrouted: int
    lost_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"kills={self.kills} published={self.published} delivered={self.delivered} "
            f"duplicated={self.duplicated} (bound {self.duplicate_bound}) lost={self.lost} "
            f"failed_calls={self.failed_calls} torn={self.torn} misrouted={self.misrouted} seed={self.seed}"
        )


class CrashHarness:
    """One server, one receiver, three webhooks, a few publishing threads; ``run`` kills and checks."""

    def __init__(
        self,
        workdir: Path,
        *,
        publishers: int = 3,
        max_in_flight: int = 4,
        reply_delay: float = 0.005,
        seed: int | None = None,
    ) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.max_in_flight = max_in_flight
        self.publishers = publishers
        # A short delay at the receiver keeps requests in flight, so kills land on some.
        self.receiver = Receiver(always(Reply(delay=reply_delay)))
        # Every kill resets the receiver's connections mid-request; that is the point, not news.
        self.receiver._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.server = HookdProcess(
            workdir, "--max-in-flight", str(max_in_flight), "--retry-base", "0.05", "--retry-cap", "0.5"
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.acked: dict[str, str] = {}  # event id -> type
        self.failed_calls = 0

    def close(self) -> None:
        self._stop.set()
        self.receiver.close()
        self.server.stop()

    # -- publishers ------------------------------------------------------------------------------

    def _publish(self, index: int) -> None:
        """Publish until told to stop, following the server to its new port after each restart."""
        rng = random.Random(self.seed + 1 + index)
        client: HookdClient | None = None
        port = 0
        seq = 0
        try:
            while not self._stop.is_set():
                if client is None or port != self.server.port:
                    if client is not None:
                        client.close()
                    port = self.server.port
                    client = HookdClient(f"127.0.0.1:{port}", timeout=10.0)
                resource, event = rng.choice((("order", "created"), ("payment", "completed")))
                size = rng.choice((1, 1, 1, 4))
                batch = [event_input(resource, event, {"publisher": index, "n": seq + n}) for n in range(size)]
                seq += size
                try:
                    if size == 1:
                        answers = [client.stub.PublishEvent(pb.PublishEventRequest(event=batch[0]), timeout=10.0)]
                    else:
                        answers = list(client.publish_events(batch).results)
                except (HookdError, grpc.RpcError):
                    with self._lock:
                        self.failed_calls += 1
                    time.sleep(0.02)
                    continue
                with self._lock:
                    for answer in answers:
                        self.acked[answer.name.removeprefix("events/")] = f"{resource}.{event}"
                # Stay near what the destinations absorb, so the drain at the end is short.
                time.sleep(rng.uniform(0.0, 0.01))
        finally:
            if client is not None:
                client.close()

    # -- the run ---------------------------------------------------------------------------------

    def _received(self) -> tuple[dict[str, Counter[str]], int, dict[str, set[str]]]:
        """Per path: copies per event id; torn bodies; event types seen."""
        counts: dict[str, Counter[str]] = {path: Counter() for _, _, path in WEBHOOKS}
        types: dict[str, set[str]] = {path: set() for _, _, path in WEBHOOKS}
        torn = 0
        for request in self.receiver.received():
            try:
                body = json.loads(request.body)
            except ValueError:
                torn += 1
                continue
            counts[request.path][body["id"]] += 1
            types[request.path].add(body["type"])
        return counts, torn, types

    def _missing(self) -> list[str]:
        counts, _, _ = self._received()
        with self._lock:
            acked = dict(self.acked)
        return [
            f"{event_id}->{path}"
            for event_id, event_type in acked.items()
            for resource, event, path in WEBHOOKS
            if event_type == f"{resource}.{event}" and event_id not in counts[path]
        ]

    def run(self, kills: int, *, up_time: tuple[float, float] = (0.4, 1.2), drain_timeout: float = 60.0) -> CrashReport:
        self.server.start()
        with self.server.client() as client:
            for resource, event, path in WEBHOOKS:
                client.create_webhook(resource, event, self.receiver.url(path))
        threads = [threading.Thread(target=self._publish, args=(n,), daemon=True) for n in range(self.publishers)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(kills):
                time.sleep(self.rng.uniform(*up_time))
                self.server.kill()
                self.server.start()
            time.sleep(self.rng.uniform(*up_time))
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(30)
        # A wait that times out is not an error here: what is missing is reported as lost.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not self._missing(), timeout=drain_timeout, interval=0.1)
        # Let the server finish everything (unacknowledged events too) before counting copies.
        with self.server.client() as client, contextlib.suppress(AssertionError):
            wait_until(
                lambda: not client.list_deliveries(state=pb.Delivery.PENDING, page_size=1).deliveries,
                timeout=drain_timeout,
                interval=0.1,
            )
        counts, torn, types = self._received()
        missing = self._missing()
        with self._lock:
            acked = dict(self.acked)
        expected = sum(1 for t in acked.values() for r, e, _ in WEBHOOKS if t == f"{r}.{e}")
        misrouted = sum(len(types[path] - {f"{r}.{e}"}) for r, e, path in WEBHOOKS)
        return CrashReport(
            seed=self.seed,
            kills=kills,
            published=len(acked),
            failed_calls=self.failed_calls,
            delivered=expected - len(missing),
            duplicated=sum(copies - 1 for per_path in counts.values() for copies in per_path.values()),
            lost=len(missing),
            duplicate_bound=self.max_in_flight * len(WEBHOOKS) * kills,
            torn=torn,
            misrouted=misrouted,
            lost_examples=missing[:10],
        )
