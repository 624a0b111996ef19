"""Several real hookd nodes on one PostgreSQL database, each a child process of its own."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hookd.client import HookdClient
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import wait_until
from tests.support.server import HookdProcess


def snapshot(client: HookdClient, **filters: Any) -> pb.HealthSnapshot:
    stream = client.stream_health(**filters)
    try:
        return next(stream)
    finally:
        stream.close()  # type: ignore[attr-defined]


class Cluster:
    """``size`` nodes named node-1 ... node-N sharing ``database``."""

    def __init__(self, root: Path, database: str, size: int, *args: str, lease_s: float = 2.0) -> None:
        self.root = root
        self.database = database
        self.args = args
        self.lease_s = lease_s
        self.nodes: list[HookdProcess] = []
        for _ in range(size):
            self.add()

    def add(self) -> HookdProcess:
        """A new node (not started)."""
        index = len(self.nodes) + 1
        workdir = self.root / f"node-{index}"
        workdir.mkdir(exist_ok=True)
        node = HookdProcess(
            workdir, "--node-id", f"node-{index}", "--lease", str(self.lease_s), *self.args, database=self.database
        )
        self.nodes.append(node)
        return node

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def running(self) -> list[HookdProcess]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def node(self, node_id: str) -> HookdProcess:
        return self.nodes[int(node_id.removeprefix("node-")) - 1]

    def owner_of(self, url: str, via: HookdProcess | None = None) -> str:
        """The node that runs ``url``'s actor now, as the cluster reports it."""
        asker = via or self.running()[0]
        stats = [s for s in snapshot(asker.client(), destinations=[url]).destinations if s.key == url]
        return stats[0].owner if stats else ""

    def wait_settled(self, expected_nodes: int, timeout: float = 30) -> pb.HealthSnapshot:
        """Until ``expected_nodes`` active nodes hold all 256 slots between them."""

        def settled() -> pb.HealthSnapshot | None:
            snap = snapshot(self.running()[0].client())
            active = [n for n in snap.nodes if n.state == "active"]
            if len(active) == expected_nodes and sum(n.slots for n in active) == 256 and all(n.slots for n in active):
                return snap
            return None

        return wait_until(settled, timeout=timeout)  # type: ignore[no-any-return]

    def pause(self, node: HookdProcess) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)

    def resume(self, node: HookdProcess) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                self.resume(node)
                node.stop()

    def each_client(self) -> list[HookdClient]:
        return [node.client() for node in self.running()]

    def round_robin(self) -> Callable[[], HookdClient]:
        clients = self.each_client()
        state = {"next": 0}

        def pick() -> HookdClient:
            client = clients[state["next"] % len(clients)]
            state["next"] += 1
            return client

        return pick
