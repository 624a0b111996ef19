"""Cluster mode: real nodes on one real PostgreSQL, one owner per destination, failover with
nothing lost, fencing of a node that lost its lease, and the same answers from every node.

Leases are short here (2 s) so failures resolve within a test; every bound is stated relative
to the lease. The suite's throwaway PostgreSQL server must start: nothing here skips.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hookd.client import HookdClient
from hookd.client.client import event_input
from hookd.v1 import hookd_pb2 as pb
from tests.support.cluster import Cluster, snapshot
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

LEASE_S = 2.0


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


@pytest.fixture
def cluster_root(tmp_path: Path) -> Iterator[list[Cluster]]:
    clusters: list[Cluster] = []
    yield clusters
    for cluster in clusters:
        cluster.stop()


class Publisher:
    """Publishes one event a tick through the given clients, keeping the acknowledged ids."""

    def __init__(self, clients: list[HookdClient], rate: float) -> None:
        self.clients = clients
        self.rate = rate
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            client = self.clients[count % len(self.clients)]
            count += 1
            try:
                answer = client.publish_event("order", "created", data={"n": count})
            except grpc.RpcError:
                continue  # not acknowledged: not counted
            self.acknowledged.append(answer.name.removeprefix("events/"))
            time.sleep(1 / self.rate)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def received_pairs(receiver: Receiver) -> Counter[tuple[str, str]]:
    """(path, event id) -> times received; a body torn by a kill -9 mid-request is not counted."""
    pairs: Counter[tuple[str, str]] = Counter()
    for request in receiver.received():
        try:
            pairs[(request.path, request.json()["id"])] += 1
        except ValueError:
            continue
    return pairs


def wait_all_delivered(receiver: Receiver, paths: list[str], events: list[str], timeout: float = 60) -> None:
    wanted = {(path, event) for path in paths for event in events}
    wait_until(lambda: wanted <= set(received_pairs(receiver)), timeout=timeout)


def test_kill_9_moves_a_nodes_destinations_within_the_lease(
    tmp_path: Path, database: str, cluster_root: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, database, 3, "--max-in-flight", "2", lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    receiver = Receiver(always(Reply(delay=0.005)))
    try:
        cluster.wait_settled(3)
        setup = cluster.nodes[0].client()
        paths = [f"/d{n}" for n in range(9)]
        for path in paths:
            setup.create_webhook("order", "created", receiver.url(path))
        victim_id = cluster.owner_of(receiver.url(paths[0]))
        victim_paths = [p for p in paths if cluster.owner_of(receiver.url(p)) == victim_id]
        survivors = [n.client() for n in cluster.nodes if n is not cluster.node(victim_id)]
        with Publisher(survivors, rate=20) as publisher:
            wait_until(lambda: len(receiver.received()) >= 100)
            killed_at = time.monotonic()
            cluster.node(victim_id).kill()
            first = wait_until(
                lambda: min(
                    (r.time for r in receiver.received() if r.path in victim_paths and r.time > killed_at), default=0
                ),
                timeout=LEASE_S + 10,
            )
            time.sleep(1)
        assert first - killed_at <= LEASE_S + 5, f"failover took {first - killed_at:.1f} s"
        wait_all_delivered(receiver, paths, publisher.acknowledged)
        pairs = received_pairs(receiver)
        duplicated = sum(count - 1 for count in pairs.values())
        # Only requests the dead node had in flight can arrive twice: 2 per destination it owned.
        assert duplicated <= 2 * len(victim_paths), pairs.most_common(5)
        assert {cluster.owner_of(receiver.url(p)) for p in victim_paths} - {victim_id}
    finally:
        receiver.close()


def test_a_paused_node_neither_sends_nor_records_after_losing_its_lease(
    tmp_path: Path, database: str, cluster_root: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, database, 2, "--max-in-flight", "1", lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    receiver = Receiver(always(Reply(delay=0.2)))
    try:
        cluster.wait_settled(2)
        url = receiver.url("/fenced")
        hook = cluster.nodes[0].client().create_webhook("order", "created", url)
        owner = cluster.node(cluster.owner_of(url))
        other = next(n for n in cluster.nodes if n is not owner)
        other_id = f"node-{cluster.nodes.index(other) + 1}"
        client = other.client()
        client.publish_events([event_input("order", "created", {"n": n}) for n in range(30)])
        receiver.wait_for(3)  # the owner is sending, one at a time, with most of the 30 queued in memory
        cluster.pause(owner)
        wait_until(lambda: cluster.owner_of(url, via=other) == other_id, timeout=3 * LEASE_S + 10)
        receiver.wait_for(len(receiver.received()) + 2)  # the new owner is sending
        cluster.resume(owner)
        wait_until(
            lambda: len(client.list_deliveries(hook.name, state=pb.Delivery.SUCCEEDED, page_size=100).deliveries) == 30,
            timeout=60,
        )
        time.sleep(LEASE_S)  # every chance for the resumed node to send what it still had queued
        ids = Counter(r.headers["webhook-id"] for r in receiver.received())
        assert len(ids) == 30
        # At most the one request in flight when it was paused arrives twice; an unfenced node
        # would have gone on with the rest of its queue after it woke.
        assert sum(count - 1 for count in ids.values()) <= 1, ids.most_common(3)
        # And it recorded nothing after it lost the slot: one attempt per delivery.
        deliveries = client.list_deliveries(hook.name, page_size=100).deliveries
        assert all(d.attempt_count == 1 for d in deliveries), [d.attempt_count for d in deliveries]
        assert "slots lost" in owner.log()
        cluster.wait_settled(2)  # it rejoined and holds a share again
    finally:
        receiver.close()


def test_a_rate_limit_holds_cluster_wide(tmp_path: Path, database: str, cluster_root: list[Cluster]) -> None:
    cluster = Cluster(tmp_path, database, 3, lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    receiver = Receiver()
    try:
        cluster.wait_settled(3)
        clients = cluster.each_client()
        clients[0].create_webhook("order", "created", receiver.url(), rate_limit=5)
        for n in range(30):  # through every node at once
            clients[n % 3].publish_event("order", "created", data={"n": n})
        receiver.wait_for(30, timeout=30)
        times = sorted(r.time for r in receiver.received())
        # A token bucket of 5/s with a burst of 5: any stretch of T seconds holds at most 5 + 5 T.
        for first in range(len(times)):
            for last in range(first + 1, len(times)):
                allowed = 5 + 5 * (times[last] - times[first]) + 1  # +1: clock granularity
                assert last - first + 1 <= allowed, f"{last - first + 1} requests in {times[last] - times[first]:.2f} s"
        assert times[-1] - times[0] >= 4.0  # (30 - 5) / 5 = 5 s at the limit; three nodes each at 5/s take 1.7 s
    finally:
        receiver.close()


def test_a_joining_node_takes_a_share_and_nothing_is_sent_twice(
    tmp_path: Path, database: str, cluster_root: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, database, 1, "--max-in-flight", "4", lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    receiver = Receiver(always(Reply(delay=0.01)))
    try:
        client = cluster.nodes[0].client()
        paths = [f"/j{n}" for n in range(16)]
        for path in paths:
            client.create_webhook("order", "created", receiver.url(path))
        with Publisher([client], rate=25) as publisher:
            wait_until(lambda: len(receiver.received()) >= 200)
            joined_at = time.monotonic()
            cluster.add().start()
            cluster.wait_settled(2)
            time.sleep(1.5)
        wait_all_delivered(receiver, paths, publisher.acknowledged)
        pairs = received_pairs(receiver)
        twice = [pair for pair, count in pairs.items() if count > 1]
        assert not twice, [
            (
                pair,
                [
                    (a.outcome, a.error)
                    for d in client.list_deliveries(event=f"events/{pair[1]}").deliveries
                    for a in client.list_attempts(d.name).attempts
                ],
            )
            for pair in twice[:3]
        ]
        moved = [p for p in paths if cluster.owner_of(receiver.url(p)) == "node-2"]
        assert moved, "the new node took no destination"
        assert any(r.path in moved and r.time > joined_at for r in receiver.received())
    finally:
        receiver.close()


def test_a_clean_stop_hands_over_at_once(tmp_path: Path, database: str, cluster_root: list[Cluster]) -> None:
    cluster = Cluster(tmp_path, database, 2, lease_s=30.0).start()  # a lease too long to wait for
    cluster_root.append(cluster)
    receiver = Receiver()
    try:
        cluster.wait_settled(2)
        url = receiver.url("/handover")
        hook = cluster.nodes[0].client().create_webhook("order", "created", url)

        def agreed_owner() -> str:
            """The destination's owner once both nodes say the same (so the one stopped owns it)."""
            owners = {cluster.owner_of(url, via=node) for node in cluster.nodes}
            return owners.pop() if len(owners) == 1 else ""

        leaving = cluster.node(wait_until(agreed_owner))
        staying = next(n for n in cluster.nodes if n is not leaving)
        stopped_at = time.monotonic()
        leaving.stop()
        staying.client().publish_event("order", "created", data={})
        receiver.wait_for(1, timeout=10)
        assert receiver.received()[0].time - stopped_at < 10  # not the 30 s lease
        wait_until(lambda: staying.client().list_deliveries(hook.name).deliveries[0].state == pb.Delivery.SUCCEEDED)
        # The other one left: its row is gone well before its 30 s lease would have run out. The
        # staying node's view catches up when it hears of it, which may be after the delivery (when
        # the destination's slot was already the staying node's).
        wait_until(lambda: [n.state for n in snapshot(staying.client()).nodes] == ["active"], timeout=10)
    finally:
        receiver.close()


def test_webhook_changes_on_one_node_apply_on_the_others(
    tmp_path: Path, database: str, cluster_root: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, database, 3, lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    receiver = Receiver()
    try:
        cluster.wait_settled(3)
        one, two, three = cluster.each_client()
        hook = one.create_webhook("order", "created", receiver.url("/first"))
        assert three.get_webhook(hook.name).url == receiver.url("/first")
        two.update_webhook(pb.Webhook(name=hook.name, status=pb.Webhook.INACTIVE), ["status"])
        three.publish_event("order", "created", data={"n": 1})
        assert one.list_deliveries(hook.name).deliveries[0].state == pb.Delivery.HELD
        one.update_webhook(
            pb.Webhook(name=hook.name, status=pb.Webhook.ACTIVE, url=receiver.url("/second")), ["status", "url"]
        )
        (request,) = receiver.wait_for(1)
        assert request.path == "/second"
        three.publish_event("order", "created", data={"n": 2})
        receiver.wait_for(2)
        assert [r.path for r in receiver.received()] == ["/second", "/second"]
        ping = two.test_webhook(hook.name)  # sent by whichever node owns the destination
        assert ping.attempt.outcome == pb.SUCCESS
        two.delete_webhook(hook.name)
        three.publish_event("order", "created", data={"n": 3})
        time.sleep(1)
        assert len(receiver.received()) == 3  # two events and the ping; nothing after the delete
    finally:
        receiver.close()


def test_every_node_reports_the_same_health(tmp_path: Path, database: str, cluster_root: list[Cluster]) -> None:
    # One attempt per delivery: a retry's delay is random (0-30 s), so one could land between
    # the counts below.
    cluster = Cluster(tmp_path, database, 3, "--max-attempts", "1", lease_s=LEASE_S).start()
    cluster_root.append(cluster)
    good = Receiver()
    bad = Receiver(always(Reply(status=500)))
    try:
        cluster.wait_settled(3)
        clients = cluster.each_client()
        for n in range(6):
            clients[0].create_webhook("order", "created", good.url(f"/ok{n}"))
        clients[0].create_webhook("order", "created", bad.url(), timeout_s=1)
        for n in range(5):
            clients[n % 3].publish_event("order", "created", data={"n": n})
        good.wait_for(30)
        bad.wait_for(5)
        time.sleep(1.5)  # time for anything more to arrive (nothing should)

        def figures(client: HookdClient) -> dict[str, tuple[int, int, str]]:
            snap = snapshot(client)
            return {
                s.key: (s.windows[0].attempts, s.windows[0].successes, s.owner)
                for s in [*snap.destinations, snap.service]
            }

        views = [figures(client) for client in clients]
        assert views[0] == views[1] == views[2]
        assert views[0]["service"][:2] == (35, 30)
        assert {owner for key, (_, _, owner) in views[0].items() if key != "service"} <= {"node-1", "node-2", "node-3"}
        nodes = snapshot(clients[1]).nodes
        assert sorted(n.id for n in nodes) == ["node-1", "node-2", "node-3"]
        assert sum(n.slots for n in nodes) == 256 and all(n.state == "active" and n.address for n in nodes)
    finally:
        good.close()
        bad.close()


def test_one_node_runs_the_housekeeping_and_another_takes_it_over(
    tmp_path: Path, database: str, cluster_root: list[Cluster]
) -> None:
    cluster = Cluster(tmp_path, database, 2, "--retention", "1s").start()
    cluster_root.append(cluster)
    receiver = Receiver()
    try:
        cluster.wait_settled(2)
        client = cluster.nodes[0].client()
        client.create_webhook("order", "created", receiver.url())

        def leaders() -> list[HookdProcess]:
            """The running nodes whose last word on housekeeping is that it runs there."""
            found = []
            for node in cluster.running():
                said = re.findall(r"housekeeping (runs on this node|left to another node)", node.log())
                if said and said[-1] == "runs on this node":
                    found.append(node)
            return found

        def removed(node: HookdProcess) -> int:
            return sum(int(count) for count in re.findall(r"deliveries_removed=(\d+)", node.log()))

        def prune_all() -> None:
            client_of_any = cluster.running()[0].client()
            client_of_any.publish_events([event_input("order", "created", {"n": n}) for n in range(20)])
            wait_until(lambda: not list(client_of_any.iter_deliveries()))

        # Right after the second node joins, the first may not have noticed yet that slot 0 moved
        # (and the log may not say so yet): the node that prunes is the one that leads now.
        wait_until(lambda: len(leaders()) == 1)
        prune_all()
        # A run logs after its commits, maybe over two runs.
        leader = wait_until(lambda: next((node for node in cluster.nodes if removed(node) == 20), None))
        assert leaders() == [leader]
        other = next(node for node in cluster.nodes if node is not leader)
        assert "deliveries_removed=" not in other.log()
        leader.stop()  # hands its slots over at once, slot 0 with them
        cluster.wait_settled(1)
        assert wait_until(leaders) == [other]
        prune_all()
        wait_until(lambda: removed(other) == 20)
    finally:
        receiver.close()
