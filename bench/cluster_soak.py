"""Cluster soak: three nodes on one PostgreSQL, a random node killed (kill -9) or paused past its
lease every few seconds for two minutes under publishing load; prints what was published,
delivered, duplicated and lost.

Run from the repository root (not part of ``make test``)::

    .venv/bin/python -m bench.cluster_soak --minutes 2

A killed node is started again (under a new id) a few seconds later; a paused one is resumed
after its lease ran out and must not send or record anything for the destinations it lost.
The exit status is 1 when an acknowledged event was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from hookd.client import HookdClient, HookdError
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

PATHS = [f"/s{n}" for n in range(8)]


def _node_id(node: HookdProcess) -> str:
    return str(node.args[node.args.index("--node-id") + 1])


class Soak:
    def __init__(self, root: Path, database: str, lease_s: float, max_in_flight: int, seed: int) -> None:
        self.root = root
        self.database = database
        self.lease_s = lease_s
        self.max_in_flight = max_in_flight
        self.rng = random.Random(seed)
        self.generation = 0
        self.nodes: list[HookdProcess] = [self._start() for _ in range(3)]
        self.acknowledged: list[str] = []
        self.failed_calls = 0
        self.kills = 0
        self.pauses = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: dict[int, HookdClient] = {}

    def _start(self) -> HookdProcess:
        self.generation += 1
        workdir = self.root / f"node-{self.generation}"
        workdir.mkdir()
        node = HookdProcess(
            workdir,
            "--node-id",
            f"node-{self.generation}",
            "--lease",
            str(self.lease_s),
            "--max-in-flight",
            str(self.max_in_flight),
            "--retry-base",
            "0.2",
            "--log-level",
            "warning",
            database=self.database,
        )
        return node.start(timeout=60)

    def _client(self) -> HookdClient | None:
        with self._lock:
            live = [n for n in self.nodes if n.process is not None and n.process.poll() is None and n.port]
            if not live:
                return None
            node = self.rng.choice(live)
            if id(node) not in self._clients:
                self._clients[id(node)] = node.client(timeout=2.0)
            return self._clients[id(node)]

    def publish(self) -> None:
        count = 0
        while not self._stop.is_set():
            client = self._client()
            if client is None:
                time.sleep(0.1)
                continue
            count += 1
            try:
                answer = client.publish_event("order", "created", data={"n": count})
                with self._lock:
                    self.acknowledged.append(answer.name.removeprefix("events/"))
            except (grpc.RpcError, HookdError):
                self.failed_calls += 1  # the node died or stopped under the call: nothing promised
            time.sleep(0.01)

    def disrupt(self, until: float) -> None:
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(3, 6))
            index = self.rng.randrange(len(self.nodes))
            node = self.nodes[index]
            assert node.process is not None
            if self.rng.random() < 0.5:
                self.kills += 1
                print(f"  kill -9  {_node_id(node)}", flush=True)
                with self._lock:
                    node.kill()
                time.sleep(self.rng.uniform(1, 3))
                replacement = self._start()
                with self._lock:
                    self.nodes[index] = replacement
            else:
                self.pauses += 1
                print(f"  SIGSTOP  {_node_id(node)} for {self.lease_s * 1.5:.0f} s", flush=True)
                node.process.send_signal(signal.SIGSTOP)
                time.sleep(self.lease_s * 1.5)
                node.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self._stop.set()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
                node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to disrupt the cluster")
    parser.add_argument("--lease", type=float, default=3.0, help="the nodes' --lease, seconds")
    parser.add_argument("--max-in-flight", type=int, default=4, help="the nodes' --max-in-flight")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    postgres = PostgresServer(durable=True).start()
    receiver = Receiver(always(Reply(delay=0.005)))
    root = Path(tempfile.mkdtemp(prefix="hookd-cluster-soak-"))
    soak = Soak(root, postgres.new_database(), args.lease, args.max_in_flight, seed)
    started = time.monotonic()
    try:
        setup = soak.nodes[0].client()
        for path in PATHS:
            setup.create_webhook("order", "created", receiver.url(path))
        publishers = [threading.Thread(target=soak.publish, daemon=True) for _ in range(2)]
        for thread in publishers:
            thread.start()
        soak.disrupt(time.monotonic() + args.minutes * 60)
        soak._stop.set()
        for thread in publishers:
            thread.join(10)
        for node in soak.nodes:  # everyone awake again
            if node.process is not None:
                node.process.send_signal(signal.SIGCONT)
        wanted = {(path, event) for path in PATHS for event in soak.acknowledged}

        def received() -> set[tuple[str, str]]:
            return {(r.path, r.json()["id"]) for r in receiver.received()}

        with contextlib.suppress(AssertionError):  # counted below, whatever arrived
            wait_until(lambda: wanted <= received(), timeout=180, interval=0.5)
        got = Counter((r.path, r.json()["id"]) for r in receiver.received())
        lost = len(wanted - set(got))
        duplicated = sum(count - 1 for count in got.values())
        elapsed = time.monotonic() - started
        print(f"cluster soak: {elapsed:.0f} s, seed {seed}, lease {args.lease:g} s, 3 nodes")
        print(f"  disruptions   {soak.kills} kill -9, {soak.pauses} SIGSTOP past the lease")
        print(f"  destinations  {len(PATHS)} webhooks, max in flight {args.max_in_flight} each")
        print(f"  published     {len(soak.acknowledged)} events acknowledged ({soak.failed_calls} calls failed)")
        print(f"  delivered     {len(wanted & set(got))} (event, webhook) pairs of {len(wanted)}")
        print(f"  duplicated    {duplicated}")
        print(f"  lost          {lost}")
        print("  result        " + ("OK" if lost == 0 else "FAILED"))
        return 0 if lost == 0 else 1
    finally:
        soak.close()
        receiver.close()
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
