"""Whom hookd may call: https only unless allowed, no internal addresses unless allow-listed, both
checked when a webhook is saved and again at every delivery.

Test traffic only ever goes to 127.0.0.0/8. The other addresses below are refused before any
connection is made, which is the point; the ones an allow-list opens are only saved, never called.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookd.client import HookdClient, InvalidArgument
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Receiver, wait_until
from tests.support.server import HookdProcess

#: Hosts that are, or resolve to, addresses a webhook must not reach. Numeric forms the resolver
#: reads (octal, hex, short, decimal) resolve without DNS.
BLOCKED_HOSTS = {
    "loopback": ["127.0.0.2", "127.255.255.254", "[::1]", "0177.0.0.2", "0x7f000002", "2130706434"],
    "private": [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "[fc00::1]",
        "[fd12:3456::1]",
        "10.1",
        "0x0a000001",
        "167772161",
    ],
    "link-local": ["169.254.169.254", "169.254.0.1", "[fe80::1]"],
    "multicast": ["224.0.0.1", "239.255.255.250", "[ff02::1]"],
    "unspecified": ["0.0.0.0", "[::]", "0"],
    "reserved": ["240.0.0.1", "255.255.255.255", "100.64.0.1", "192.0.2.1", "198.18.0.1", "[2001:db8::1]", "[fec0::1]"],
    "ipv4-mapped": ["[::ffff:127.0.0.2]", "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]"],
    "ipv4-embedded": ["[::ffff:0:a00:1]", "[::127.0.0.2]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::1]", "[2002:a00:1::1]"],
}
BLOCKED_URLS = [
    pytest.param(f"http://{host}:8080/hook", id=f"{kind}:{host}")
    for kind, hosts in BLOCKED_HOSTS.items()
    for host in hosts
]


@pytest.fixture(scope="module")
def only_127_0_0_1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookdProcess]:
    """http allowed, and 127.0.0.1 alone opened by the allow-list."""
    workdir = tmp_path_factory.mktemp("ssrf")
    server = HookdProcess(workdir, "--allow-http", "--allow-destination", "127.0.0.1/32", local=False)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def guarded_client(only_127_0_0_1: HookdProcess) -> Iterator[HookdClient]:
    with HookdClient(only_127_0_0_1.address) as client:
        yield client


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_internal_destinations_are_refused_at_create_and_update(guarded_client: HookdClient, url: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^INVALID_ARGUMENT: webhook\.url: ") as refused:
        guarded_client.create_webhook("order", "created", url)
    assert "--allow-destination" in refused.value.details
    existing = guarded_client.create_webhook("order", "cancelled", f"http://127.0.0.1:9/{abs(hash(url))}")
    with pytest.raises(InvalidArgument, match=r"webhook\.url"):
        guarded_client.update_webhook(pb.Webhook(name=existing.name, url=url), ["url"])
    assert guarded_client.get_webhook(existing.name).url == existing.url
    guarded_client.delete_webhook(existing.name)


def test_allow_list_opens_exactly_what_it_names(guarded_client: HookdClient) -> None:
    receiver = Receiver()
    try:
        hook = guarded_client.create_webhook("order", "updated", receiver.url())  # 127.0.0.1: named
        guarded_client.publish_event("order", "updated", data={"id": 1})
        receiver.wait_for(1)
        assert hook.url.startswith("http://127.0.0.1:")
        for neighbour in ("127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "2130706434"):
            with pytest.raises(InvalidArgument, match=r"webhook\.url"):
                guarded_client.create_webhook("order", "updated", f"http://{neighbour}:{receiver.port}/hook")
    finally:
        receiver.close()


def test_allow_list_by_host_name_and_networks(tmp_path: Path) -> None:
    """A name opens that name (not the address behind it); a network opens that network only."""
    receiver = Receiver()
    server = HookdProcess(
        tmp_path,
        "--allow-http",
        local=False,
        env={"HOOKD_ALLOW_DESTINATIONS": "localhost,10.0.0.0/8"},
    ).start()
    try:
        client = server.client()
        client.create_webhook("payment", "completed", f"http://localhost:{receiver.port}/hook")
        client.publish_event("payment", "completed", data={"id": 1})
        assert receiver.wait_for(1)[0].headers["host"] == f"localhost:{receiver.port}"
        with pytest.raises(InvalidArgument, match=r"webhook\.url"):
            client.create_webhook("payment", "completed", receiver.url())  # 127.0.0.1 itself is not named
        # Saved, never called: this event type is never published here.
        client.create_webhook("shipping", "delivered", "http://10.20.30.40/hook")
        for url in ("http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/"):
            with pytest.raises(InvalidArgument, match=r"webhook\.url"):
                client.create_webhook("shipping", "delivered", url)
    finally:
        receiver.close()
        server.stop()


def test_https_only_unless_allow_http(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--allow-destination", "127.0.0.0/8", local=False).start()
    try:
        client = server.client()
        with pytest.raises(InvalidArgument, match=r"webhook\.url: must use https .*--allow-http"):
            client.create_webhook("order", "created", "http://127.0.0.1:9/hook")
        hook = client.create_webhook("order", "created", "https://127.0.0.1:9/hook")
        with pytest.raises(InvalidArgument, match=r"webhook\.url: must use https"):
            client.update_webhook(pb.Webhook(name=hook.name, url="http://127.0.0.1:9/other"), ["url"])
        for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1:70/", "127.0.0.1:9/hook"):
            with pytest.raises(InvalidArgument, match=r"webhook\.url"):
                client.create_webhook("order", "created", url)
    finally:
        server.stop()


#: What a restart takes away from a saved http webhook to 127.0.0.1, and what its attempts then say.
GUARD_CHANGES = {
    "allow-list-removed": (("--allow-http",), "not a public address"),
    "allow-http-removed": (("--allow-destination", "127.0.0.0/8"), "plain http is not allowed"),
}


@pytest.mark.parametrize(("flags", "error"), list(GUARD_CHANGES.values()), ids=list(GUARD_CHANGES))
def test_guard_runs_again_at_delivery_time(tmp_path: Path, flags: tuple[str, ...], error: str) -> None:
    """A webhook saved while http and 127.0.0.0/8 were allowed, after a restart without one of
    them: its attempts are BLOCKED and nothing reaches the receiver."""
    receiver = Receiver()
    retries = ("--max-attempts", "2", "--retry-base", "0.05", "--retry-cap", "0.1")
    open_server = HookdProcess(tmp_path, "--allow-http", "--allow-destination", "127.0.0.0/8", *retries, local=False)
    try:
        client = open_server.start().client()
        hook = client.create_webhook("customer", "deleted", receiver.url())
        open_server.stop()

        closed_server = HookdProcess(tmp_path, *flags, *retries, local=False).start()
        try:
            client = closed_server.client()
            client.publish_event("customer", "deleted", data={"id": 7})
            wait_until(
                lambda: client.list_deliveries(hook.name, state=pb.Delivery.FAILED).deliveries,
            )
            (delivery,) = client.list_deliveries(hook.name).deliveries
            attempts = client.list_attempts(delivery.name).attempts
            assert [a.outcome for a in attempts] == [pb.BLOCKED, pb.BLOCKED]
            assert all(error in a.error and a.status_code == 0 for a in attempts), attempts
            ping = client.test_webhook(hook.name).attempt
            assert ping.outcome == pb.BLOCKED
            stream = client.stream_health(webhooks=[hook.name])
            snapshot = next(stream)
            stream.close()  # type: ignore[attr-defined]
            (window,) = [w for w in snapshot.webhooks[0].windows if w.window.seconds == 300]
            assert dict(window.errors) == {"BLOCKED": 3}
        finally:
            closed_server.stop()
        assert receiver.received() == []
    finally:
        receiver.close()
