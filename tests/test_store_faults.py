"""When the store cannot be written: a full disk, a removed data directory.

hookd must stop sending rather than resend what it cannot record, refuse publishes with
UNAVAILABLE and a message that says why, report it in health (grpc.health.v1 NOT_SERVING too),
and resume by itself when the disk has room again. The full disk is a real one: a 3 MB tmpfs
mounted for the test (the suite runs as root, as CI does).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from hookd.client import HookdClient, Unavailable
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Receiver, wait_until
from tests.support.server import HookdProcess

MAX_IN_FLIGHT = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB filesystem of its own (tmpfs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def store_status(client: HookdClient) -> pb.StoreStatus:
    stream = client.stream_health()
    try:
        return next(stream).store
    finally:
        stream.close()  # type: ignore[attr-defined]


def fill(client: HookdClient, payload: str) -> list[str]:
    """Publish until the store refuses; return the acknowledged event ids."""
    acknowledged: list[str] = []
    for n in range(5000):
        try:
            answer = client.publish_event("order", "created", data={"n": n, "pad": payload})
        except Unavailable as error:
            assert "disk is full" in str(error), error
            return acknowledged
        acknowledged.append(answer.name.removeprefix("events/"))
    raise AssertionError("the disk never filled up")


def test_a_full_disk_holds_deliveries_refuses_publishes_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (1024 * 1024))
    server = HookdProcess(
        tmp_path, "--max-in-flight", str(MAX_IN_FLIGHT), "--retry-base", "0.05", database=str(small_disk / "hookd.db")
    ).start()
    receiver = Receiver()
    try:
        client = server.client()
        client.create_webhook("order", "created", receiver.url())
        acknowledged = fill(client, "x" * 3000)
        assert len(acknowledged) > 20

        # Unavailable, and said so: health, grpc.health.v1, and the publish error above.
        status = wait_until(lambda: (s := store_status(client)) and not s.available and s)
        assert "disk is full" in status.reason
        assert server.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        # No flood: what could not be recorded is held, not sent again and again.
        before = len(receiver.received())
        time.sleep(2)
        during = len(receiver.received())
        assert during - before <= MAX_IN_FLIGHT
        assert during <= len(acknowledged) + MAX_IN_FLIGHT

        ballast.unlink()  # room again: hookd notices by itself
        wait_until(lambda: store_status(client).available, timeout=30)
        assert server.health() == health_pb2.HealthCheckResponse.SERVING
        more = [client.publish_event("order", "created", data={"n": n, "pad": "y" * 3000}) for n in range(150)]
        acknowledged += [answer.name.removeprefix("events/") for answer in more]  # 450 KB more fit: space is reused

        wait_until(lambda: set(acknowledged) <= {r.json()["id"] for r in receiver.received()}, timeout=60)
        copies = Counter(r.json()["id"] for r in receiver.received())
        assert sum(count - 1 for count in copies.values()) <= MAX_IN_FLIGHT
    finally:
        receiver.close()
        server.stop()


def test_a_removed_data_directory_stops_acknowledging(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = HookdProcess(tmp_path, database=str(data / "hookd.db")).start()
    receiver = Receiver()
    try:
        client = server.client()
        client.create_webhook("order", "created", receiver.url())
        client.publish_event("order", "created", data={"n": 0})
        receiver.wait_for(1)
        shutil.rmtree(data)
        with pytest.raises(Unavailable, match="was removed"):
            client.publish_event("order", "created", data={"n": 1})
        assert not store_status(client).available
        assert server.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "store unavailable" in server.log() and "was removed" in server.log()
        with pytest.raises(Unavailable):  # every write, not only publishes
            client.create_webhook("order", "created", receiver.url("/other"))
        time.sleep(1)
        assert len(receiver.received()) == 1
    finally:
        receiver.close()
        server.stop()
