"""Destinations that misbehave: each failure is classified, retried per policy, visible in health,
and none of them holds up a destination that behaves.

One server serves the module (its flags: two attempts, fast retries, a breaker that never opens,
and an extra trusted CA for https destinations); each test uses its own event types so their
webhooks never see each other's events.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trustme

from hookd.client import HookdClient
from hookd.client.client import event_input
from hookd.v1 import hookd_pb2 as pb
from tests.support.raw_receiver import (
    HUGE_BODY_BYTES,
    RawReceiver,
    answer_with,
    closes_when_reused,
    huge_body,
    never_answer,
    not_http,
    ok,
    reset_mid_response,
    slow_drip,
)
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

MAX_ATTEMPTS = 2
#: Long enough that the fast destination is served many times over while the slow ones wait.
SLOW_TIMEOUT_S = 4.0
#: hookd's resident set must stay under this while it is sent 100 MB bodies.
RSS_LIMIT_KB = 300 * 1024


@dataclass
class Cas:
    trusted: trustme.CA
    untrusted: trustme.CA


@pytest.fixture(scope="module")
def cas() -> Cas:
    return Cas(trustme.CA(), trustme.CA())


@pytest.fixture(scope="module")
def hookd(tmp_path_factory: pytest.TempPathFactory, cas: Cas) -> Iterator[HookdProcess]:
    workdir = tmp_path_factory.mktemp("misbehaving")
    ca_file = workdir / "destinations-ca.pem"
    ca_file.write_bytes(cas.trusted.cert_pem.bytes())
    server = HookdProcess(
        workdir,
        "--max-attempts",
        str(MAX_ATTEMPTS),
        "--retry-base",
        "0.05",
        "--retry-cap",
        "0.2",
        "--breaker-threshold",
        "1000",
        "--destination-ca-file",
        str(ca_file),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def client(hookd: HookdProcess) -> HookdClient:
    return hookd.client()


def tls_server_context(ca: trustme.CA, *hosts: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    return context


def the_delivery(client: HookdClient, webhook: str, event: str = "") -> pb.Delivery:
    """The webhook's one delivery (of ``event``, when the webhook has others, such as test pings)."""
    (delivery,) = client.list_deliveries(webhook, event=event, page_size=10).deliveries
    return delivery


def attempts_of(client: HookdClient, webhook: str, event: str = "") -> list[pb.Attempt]:
    return list(client.list_attempts(the_delivery(client, webhook, event).name, page_size=100).attempts)


def is_succeeded(client: HookdClient, webhook: str, event: str) -> bool:
    return the_delivery(client, webhook, event).state == pb.Delivery.SUCCEEDED


def has_failed(client: HookdClient, webhook: str) -> bool:
    return the_delivery(client, webhook).state == pb.Delivery.FAILED


def health_errors(client: HookdClient, webhook: str) -> dict[str, int]:
    """The webhook's failed attempts by outcome, over the five-minute window of StreamHealth."""
    stream = client.stream_health(webhooks=[webhook])
    try:
        snapshot = next(stream)
    finally:
        stream.close()  # type: ignore[attr-defined]
    (stats,) = [s for s in snapshot.webhooks if s.key == webhook]
    (window,) = [w for w in stats.windows if w.window.seconds == 300]
    return dict(window.errors)


def test_each_misbehaviour_is_classified_retried_reported_and_isolated(client: HookdClient, cas: Cas) -> None:
    closed = RawReceiver(ok)
    refused_url = closed.url()
    closed.close()  # nothing listens there any more: connection refused
    receivers = {
        "reset": RawReceiver(reset_mid_response),
        "hang": RawReceiver(never_answer),
        "drip": RawReceiver(slow_drip),
        "not_http": RawReceiver(not_http),
        "untrusted_tls": RawReceiver(ok, tls=tls_server_context(cas.untrusted, "127.0.0.1")),
        "wrong_name_tls": RawReceiver(ok, tls=tls_server_context(cas.trusted, "elsewhere.example")),
    }
    fast = Receiver()
    try:
        cases: dict[str, tuple[str, int]] = {
            "refused": (refused_url, pb.CONNECTION),
            "reset": (receivers["reset"].url(), pb.CONNECTION),
            "hang": (receivers["hang"].url(), pb.TIMEOUT),
            "drip": (receivers["drip"].url(), pb.TIMEOUT),
            "not_http": (receivers["not_http"].url(), pb.INVALID_RESPONSE),
            "untrusted_tls": (receivers["untrusted_tls"].url(), pb.TLS),
            "wrong_name_tls": (receivers["wrong_name_tls"].url(), pb.TLS),
            # Accepted at create time by design: it reaches no address now, and delivery checks again.
            "dns": (f"http://no-such-host.invalid:{fast.port}/hook", pb.DNS),
        }
        hooks = {
            case: client.create_webhook("order", "created", url, timeout_s=SLOW_TIMEOUT_S).name
            for case, (url, _) in cases.items()
        }
        fast_hook = client.create_webhook("order", "updated", fast.url()).name
        client.publish_event("order", "created", data={"id": 1})

        # While the hanging and dripping destinations hold their first request open, the fast one
        # gets every event published after them.
        wait_until(lambda: receivers["hang"].open_connections and receivers["drip"].bytes_sent)
        # One call: twenty on a loaded machine could outlast the slow ones' timeout.
        client.publish_events([event_input("order", "updated", {"n": n}) for n in range(20)])
        fast.wait_for(20)
        assert receivers["hang"].open_connections == 1
        for case in ("hang", "drip"):
            assert attempts_of(client, hooks[case]) == [], f"{case} finished before the fast destination"
        wait_until(
            lambda: len(client.list_deliveries(fast_hook, state=pb.Delivery.SUCCEEDED, page_size=100).deliveries) == 20
        )

        # Each misbehaviour: retried per policy, then FAILED; every attempt classified; in health.
        for case, (url, outcome) in cases.items():
            name = hooks[case]
            wait_until(partial(has_failed, client, name), timeout=30)
            attempts = attempts_of(client, name)
            assert [a.outcome for a in attempts] == [outcome] * MAX_ATTEMPTS, (case, attempts)
            assert all(a.error and a.url == url for a in attempts), (case, attempts)
            outcome_name = pb.Outcome.Name(outcome)  # type: ignore[arg-type]
            assert health_errors(client, name) == {outcome_name: MAX_ATTEMPTS}, case

        # The drip was cut by the webhook's timeout, not read to its end (it would take 100 s).
        for attempt in attempts_of(client, hooks["drip"]):
            assert attempt.status_code == 200
            assert SLOW_TIMEOUT_S <= attempt.duration.ToTimedelta().total_seconds() < 3 * SLOW_TIMEOUT_S
        assert receivers["drip"].bytes_sent < 100
        # Over TLS nothing was sent to a destination that failed the handshake.
        assert receivers["untrusted_tls"].count() == 0 and receivers["wrong_name_tls"].count() == 0
        for case in ("reset", "hang", "drip", "not_http"):
            assert receivers[case].count() == MAX_ATTEMPTS, case
    finally:
        fast.close()
        for receiver in receivers.values():
            receiver.close()


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_huge_response_body_is_cut_and_memory_stays_flat(hookd: HookdProcess, client: HookdClient) -> None:
    receiver = RawReceiver(huge_body)
    try:
        hook = client.create_webhook("product", "created", receiver.url())
        for n in range(3):
            client.publish_event("product", "created", data={"n": n})
        wait_until(
            lambda: len(client.list_deliveries(hook.name, state=pb.Delivery.SUCCEEDED, page_size=10).deliveries) == 3
        )
        for delivery in client.list_deliveries(hook.name, page_size=10).deliveries:
            (attempt,) = client.list_attempts(delivery.name).attempts
            assert attempt.outcome == pb.SUCCESS and attempt.status_code == 200
            assert attempt.response_excerpt == "x" * 1024  # the excerpt is capped too
        # hookd stopped reading and dropped each connection: the receiver could not send it all.
        assert receiver.count() == 3
        assert receiver.bytes_sent < 3 * HUGE_BODY_BYTES // 5
        assert hookd.process is not None
        peak = vm_kb(hookd.process.pid, "VmHWM")
        assert peak < RSS_LIMIT_KB, f"hookd peaked at {peak} kB resident"
    finally:
        receiver.close()


def test_redirects_are_not_followed(client: HookdClient) -> None:
    receiver = Receiver(always(Reply(status=307, headers={"Location": "/followed"})))
    try:
        hook = client.create_webhook("customer", "created", receiver.url("/hook"))
        client.publish_event("customer", "created", data={"id": 5})
        wait_until(lambda: the_delivery(client, hook.name).state == pb.Delivery.FAILED)
        attempts = attempts_of(client, hook.name)
        assert [a.outcome for a in attempts] == [pb.CLIENT_ERROR] * MAX_ATTEMPTS
        for attempt in attempts:
            assert attempt.status_code == 307
            assert "redirect not followed" in attempt.error and "location: /followed" in attempt.error
        assert receiver.received("/followed") == []
        assert len(receiver.received("/hook")) == MAX_ATTEMPTS
        assert health_errors(client, hook.name) == {"CLIENT_ERROR": MAX_ATTEMPTS}
    finally:
        receiver.close()


def test_destination_ca_file_is_trusted_and_nothing_else(client: HookdClient, cas: Cas) -> None:
    trusted = RawReceiver(ok, tls=tls_server_context(cas.trusted, "127.0.0.1"))
    untrusted = RawReceiver(ok, tls=tls_server_context(cas.untrusted, "127.0.0.1"))
    try:
        good = client.create_webhook("shipping", "delivered", trusted.url())
        bad = client.create_webhook("shipping", "delivered", untrusted.url())
        attempt = client.test_webhook(good.name).attempt
        assert attempt.outcome == pb.SUCCESS and attempt.status_code == 200, attempt
        assert trusted.count() == 1
        attempt = client.test_webhook(bad.name).attempt
        assert attempt.outcome == pb.TLS and "CERTIFICATE_VERIFY_FAILED" in attempt.error, attempt
        assert untrusted.count() == 0
        # Published events take the same path as the test ping.
        event = client.publish_event("shipping", "delivered", data={"parcel": 1}).name
        wait_until(lambda: the_delivery(client, good.name, event).state == pb.Delivery.SUCCEEDED)
        wait_until(lambda: the_delivery(client, bad.name, event).state == pb.Delivery.FAILED)
        assert [a.outcome for a in attempts_of(client, bad.name, event)] == [pb.TLS] * MAX_ATTEMPTS
    finally:
        trusted.close()
        untrusted.close()


#: Answers that once raised out of the HTTP client (the Retry-After ones crashed the actor) or
#: stretch the parser, each with the outcome and status it is recorded as.
HOSTILE_ANSWERS = {
    "retry-after-superscript": (b"HTTP/1.1 429 Slow\r\nretry-after: \xb2\r\n", pb.RATE_LIMITED, 429),
    "retry-after-superscripts-503": (b"HTTP/1.1 503 Busy\r\nretry-after: \xb9\xb3\r\n", pb.SERVER_ERROR, 503),
    "retry-after-zone-overflow": (
        b"HTTP/1.1 429 Slow\r\nretry-after: Wed, 21 Oct 2015 07:28:00 +99999999999999999999\r\n",
        pb.RATE_LIMITED,
        429,
    ),
    "retry-after-400-digits": (b"HTTP/1.1 429 Slow\r\nretry-after: " + b"9" * 400 + b"\r\n", pb.RATE_LIMITED, 429),
    "huge-header": (b"HTTP/1.1 200 OK\r\nx-huge: " + b"a" * 100_000 + b"\r\n", pb.INVALID_RESPONSE, 0),
    "non-latin-1-bytes": (b"HTTP/1.1 200 \xe2\x9c\x93\r\nx-name: \xf0\x9f\x98\x80\xff\r\n", pb.SUCCESS, 200),
    "bad-status-line": (b"HTTP/1.1 2OO OK\r\n", pb.INVALID_RESPONSE, 0),
    "nul-in-header": (b"HTTP/1.1 200 OK\r\nx-a: \x00\r\n", pb.INVALID_RESPONSE, 0),
    "negative-content-length": (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n", pb.INVALID_RESPONSE, 0),
    "huge-content-length": (b"HTTP/1.1 200 OK\r\ncontent-length: " + b"9" * 30 + b"\r\n", pb.INVALID_RESPONSE, 0),
    "short-content-length-body": (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", pb.CONNECTION, 200),
    "unknown-transfer-encoding": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n", pb.INVALID_RESPONSE, 0),
    "bad-chunk": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnothex\r\n", pb.INVALID_RESPONSE, 200),
    "switching-protocols": (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n", pb.INVALID_RESPONSE, 0),
    "status-999": (b"HTTP/1.1 999 What\r\ncontent-length: 0\r\n", pb.INVALID_RESPONSE, 999),
    "redirect-to-nowhere": (b"HTTP/1.1 302 Found\r\nlocation: \xff\xfe\r\ncontent-length: 0\r\n", pb.CLIENT_ERROR, 302),
}


@pytest.mark.parametrize(("head", "outcome", "status"), list(HOSTILE_ANSWERS.values()), ids=list(HOSTILE_ANSWERS))
def test_hostile_answers_are_recorded_as_outcomes(client: HookdClient, head: bytes, outcome: int, status: int) -> None:
    """Every answer a destination can give becomes a recorded attempt: TestWebhook answers with it
    (it used to fail with INTERNAL when the answer crashed the client)."""
    response = head if b"\r\n\r\n" in head else head + b"\r\n"
    receiver = RawReceiver(answer_with(response))
    try:
        hook = client.create_webhook("payment", "refunded", receiver.url())
        attempt = client.test_webhook(hook.name).attempt
        assert (attempt.outcome, attempt.status_code) == (outcome, status), attempt
        assert attempt.outcome == pb.SUCCESS or attempt.error
        assert receiver.count() == 1
        client.delete_webhook(hook.name)
    finally:
        receiver.close()


def test_a_hostile_retry_after_leaves_the_actor_delivering(client: HookdClient) -> None:
    """The same answer to published events: each attempt is recorded, retries follow the policy
    and the delivery ends FAILED after --max-attempts (it used to stay PENDING with no attempt)."""
    receiver = RawReceiver(answer_with(b"HTTP/1.1 429 Slow\r\nretry-after: \xb2\r\ncontent-length: 0\r\n\r\n"))
    try:
        hook = client.create_webhook("payment", "failed", receiver.url())
        client.publish_event("payment", "failed", data={"id": 1})
        wait_until(partial(has_failed, client, hook.name), timeout=30)
        assert [a.outcome for a in attempts_of(client, hook.name)] == [pb.RATE_LIMITED] * MAX_ATTEMPTS
        assert receiver.count() == MAX_ATTEMPTS
    finally:
        receiver.close()


def test_a_keep_alive_connection_closed_as_it_is_reused_costs_no_attempt(client: HookdClient) -> None:
    """The destination closes its idle connection just as the next delivery is sent on it: hookd
    sends that request again on a fresh connection, and the delivery succeeds at its first attempt
    (it used to record a CONNECTION failure, which counts toward the breaker)."""
    receiver = RawReceiver(closes_when_reused)
    try:
        hook = client.create_webhook("payment", "completed", receiver.url())
        for n in range(2):
            event = client.publish_event("payment", "completed", data={"n": n}).name
            wait_until(partial(is_succeeded, client, hook.name, event))
            assert [a.outcome for a in attempts_of(client, hook.name, event)] == [pb.SUCCESS]
        # The second event went out twice: on the reused connection the receiver closed, then on a new one.
        assert receiver.count() == 3 and receiver.connections() == 2
    finally:
        receiver.close()
