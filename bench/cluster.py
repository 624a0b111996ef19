"""The cluster scenario: deliveries/s with 1, 2 and 3 nodes on PostgreSQL beside one SQLite node,
CPU per delivery, and failover time with the default lease.

All nodes, PostgreSQL and the receiver share this machine's cores, so the scaling figure says
as much about the machine as about hookd; the CPU figures say where the time goes.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import BENCH_FLAGS, ReceiverProcess, count_state, cpu_seconds, wait_for
from hookd.client import HookdClient
from hookd.client.client import event_input
from tests.support.postgres import PostgresServer
from tests.support.server import HookdProcess

DESTINATIONS = 200
#: Events per PublishEvents call: 10 x 200 destinations = 2,000 deliveries, one commit.
EVENTS_PER_CALL = 10
_TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU of the PostgreSQL server: the postmaster, its backends that exited (counted in its
    children's times once it reaped them) and those still running."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(value) for value in fields[11:15]) / _TICKS
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(child[1]) == postmaster:
                total += (int(child[11]) + int(child[12])) / _TICKS
    return total


def _postmaster(server: PostgresServer) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


def _pg_succeeded(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'SUCCEEDED'").fetchone()
        return int(row[0]) if row else 0


@contextmanager
def _nodes(database: str, count: int, *flags: str) -> Iterator[list[HookdProcess]]:
    with ExitStack() as stack:
        nodes = []
        for index in range(count):
            workdir = Path(tempfile.mkdtemp(prefix="hookd-bench-node-"))
            node = HookdProcess(workdir, *BENCH_FLAGS, "--node-id", f"n{index + 1}", *flags, database=database)
            node.start(timeout=120)
            stack.callback(node.stop, 60)
            nodes.append(node)
        yield nodes


def _settled(client: HookdClient, count: int) -> bool:
    stream = client.stream_health()
    try:
        nodes = next(stream).nodes
    finally:
        stream.close()  # type: ignore[attr-defined]
    active = [n for n in nodes if n.state == "active" and n.slots]
    return count <= 1 or (len(active) == count and sum(n.slots for n in active) == 256)


def _measure(
    nodes: list[HookdProcess], receiver: ReceiverProcess, succeeded: Callable[[], int], events: int
) -> dict[str, float]:
    """Publish ``events`` x 200 deliveries through every node in turn; rate and CPU until all succeeded."""
    clients = [node.client() for node in nodes]
    for n in range(DESTINATIONS):
        clients[0].create_webhook("order", "created", receiver.url(f"ok{n}"))
    wait_for(lambda: _settled(clients[0], len(nodes)), timeout=60)
    clients[0].publish_events([event_input("order", "created", {"warm": True}) for _ in range(2)])
    wait_for(lambda: succeeded() >= 2 * DESTINATIONS, timeout=120)
    pids = [node.process.pid for node in nodes if node.process is not None]
    cpu_before = [cpu_seconds(pid) for pid in pids]
    started = time.perf_counter()
    for call in range(events // EVENTS_PER_CALL):
        batch = [event_input("order", "created", {"id": call, "total": "25.00"}) for _ in range(EVENTS_PER_CALL)]
        clients[call % len(clients)].publish_events(batch)
    total = events * DESTINATIONS
    wait_for(lambda: succeeded() >= (2 + events) * DESTINATIONS, timeout=900, interval=0.2)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True))
    return {
        "deliveries_per_s": total / elapsed,
        "cpu_ms_per_delivery": cpu * 1000 / total,
        "cpu_ms_per_delivery_per_node": cpu * 1000 / total / len(nodes),
    }


def _failover(postgres: PostgresServer, receiver: ReceiverProcess) -> float:
    """kill -9 a destination's owner (default lease) and time the first delivery by the next one."""
    with _nodes(postgres.new_database(), 3) as nodes:
        client = nodes[0].client()
        client.create_webhook("order", "created", receiver.url("failover"))
        wait_for(lambda: _settled(client, 3), timeout=60)
        stream = client.stream_health(destinations=[receiver.url("failover")])
        owner = next(stream).destinations[0].owner
        stream.close()  # type: ignore[attr-defined]
        victim = nodes[int(owner.removeprefix("n")) - 1]
        publisher = next(node for node in nodes if node is not victim).client()

        def arrived() -> int:
            return int(receiver.stats()["counts"].get("failover", 0))

        publisher.publish_event("order", "created", data={})
        wait_for(lambda: arrived() >= 1, timeout=30)
        victim.kill()
        killed_at = time.monotonic()
        before = arrived()
        while arrived() == before:
            publisher.publish_event("order", "created", data={})
            time.sleep(0.05)
            if time.monotonic() - killed_at > 60:
                raise TimeoutError("no failover within 60 s")
        return time.monotonic() - killed_at


def cluster(profile: Any, receiver: ReceiverProcess) -> dict[str, Any]:
    events = 60 if profile.name == "quick" else 200
    results: dict[str, Any] = {"destinations": DESTINATIONS, "deliveries": events * DESTINATIONS}
    postgres = PostgresServer(durable=True).start()
    try:
        with _nodes_sqlite() as (node, database):
            sqlite = _measure([node], receiver, lambda: count_state(database, "SUCCEEDED"), events)
        results["sqlite_1_node_per_s"] = round(sqlite["deliveries_per_s"], 1)
        results["sqlite_cpu_ms_per_delivery"] = round(sqlite["cpu_ms_per_delivery"], 3)
        for count in (1, 2, 3):
            database = postgres.new_database()
            pg_before = postgres_cpu_seconds(_postmaster(postgres))
            with _nodes(database, count) as nodes:
                figures = _measure(nodes, receiver, partial(_pg_succeeded, database), events)
            pg_cpu = postgres_cpu_seconds(_postmaster(postgres)) - pg_before
            results[f"postgres_{count}_nodes_per_s"] = round(figures["deliveries_per_s"], 1)
            results[f"postgres_{count}_nodes_cpu_ms_per_delivery_per_node"] = round(
                figures["cpu_ms_per_delivery_per_node"], 3
            )
            results[f"postgres_{count}_nodes_db_cpu_ms_per_delivery"] = round(
                pg_cpu * 1000 / (events * DESTINATIONS), 3
            )
        results["scaling_2_vs_1"] = round(results["postgres_2_nodes_per_s"] / results["postgres_1_nodes_per_s"], 3)
        results["scaling_3_vs_1"] = round(results["postgres_3_nodes_per_s"] / results["postgres_1_nodes_per_s"], 3)
        results["postgres_vs_sqlite_1_node"] = round(
            results["postgres_1_nodes_per_s"] / results["sqlite_1_node_per_s"], 3
        )
        results["failover_s"] = round(_failover(postgres, receiver), 2)
        results["lease_s"] = 10.0
    finally:
        postgres.stop()
    return results


@contextmanager
def _nodes_sqlite() -> Iterator[tuple[HookdProcess, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="hookd-bench-node-"))
    node = HookdProcess(workdir, *BENCH_FLAGS)
    node.start(timeout=120)
    try:
        yield node, node.database
    finally:
        node.stop(60)
