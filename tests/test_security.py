"""Who may call hookd: TLS on the gRPC listener, bearer tokens, what stays open, and what never leaks
(tokens and secrets in the log, a database others can read)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hookd.client import HookdClient, Unauthenticated, Unavailable
from hookd.server.auth import FailureLog
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc
from tests.support.receiver import Receiver, Reply, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

TOKEN = "hookd-test-token-7f3a9c"
OTHER_TOKEN = "second-token-for-rotation-1b2d"
WRONG_TOKEN = "wrong-token-5e8f00"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_args(workdir: Path, ca: trustme.CA) -> list[str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = workdir / "server.pem", workdir / "server.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_file.write_bytes(cert.private_key_pem.bytes())
    return ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, backend: str) -> Iterator[HookdProcess]:
    """TLS and two tokens; health and reflection left open (the default). One per store."""
    workdir = tmp_path_factory.mktemp("guarded")
    server = HookdProcess(workdir, *tls_args(workdir, ca), "--auth-token", TOKEN, "--auth-token", OTHER_TOKEN)
    yield server.start()
    server.stop()


def secure_channel(server: HookdProcess, ca: trustme.CA, token: str | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials,
            grpc.access_token_call_credentials(token),  # sends "authorization: Bearer <token>"
        )
    return grpc.secure_channel(server.address, credentials)


def code_of(call: Any, request: Any, **kwargs: Any) -> grpc.StatusCode:
    try:
        result = call(request, timeout=10, **kwargs)
        if hasattr(result, "__next__"):  # a server stream: its status comes with the first message
            next(result)
            result.cancel()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def health(channel: grpc.Channel, **kwargs: Any) -> grpc.StatusCode:
    return code_of(health_pb2_grpc.HealthStub(channel).Check, health_pb2.HealthCheckRequest(), **kwargs)


def reflection(channel: grpc.Channel, **kwargs: Any) -> grpc.StatusCode:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    return code_of(stub.ServerReflectionInfo, request, **kwargs)


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_listener_serves_only_tls_with_a_trusted_certificate(guarded: HookdProcess, ca: trustme.CA) -> None:
    with HookdClient(guarded.address, root_certificates=ca.cert_pem.bytes(), token=TOKEN) as client:
        assert len(client.list_event_types().event_types) > 10
    with HookdClient(guarded.address, token=TOKEN, timeout=5) as plaintext, pytest.raises(Unavailable):
        plaintext.list_event_types()
    stranger = trustme.CA()  # a certificate hookd's CA did not sign is not trusted
    with (
        HookdClient(guarded.address, root_certificates=stranger.cert_pem.bytes(), token=TOKEN, timeout=5) as client,
        pytest.raises(Unavailable),
    ):
        client.list_event_types()


# -- tokens ------------------------------------------------------------------------------------------


def test_every_call_needs_a_valid_bearer_token(guarded: HookdProcess, ca: trustme.CA) -> None:
    anonymous = secure_channel(guarded, ca)
    stub = pb_grpc.WebhookServiceStub(anonymous)
    calls: list[tuple[Any, Any]] = [
        (stub.ListEventTypes, pb.ListEventTypesRequest()),
        (stub.ListWebhooks, pb.ListWebhooksRequest()),
        (stub.CreateWebhook, pb.CreateWebhookRequest(webhook=pb.Webhook(resource="order", event="created"))),
        (stub.GetWebhook, pb.GetWebhookRequest(name="webhooks/wh_0")),
        (stub.PublishEvent, pb.PublishEventRequest(event=pb.EventInput(resource="order", event="created"))),
        (stub.StreamHealth, pb.StreamHealthRequest()),
    ]
    wrong = [("authorization", f"Bearer {WRONG_TOKEN}")]
    for call, request in calls:
        assert code_of(call, request) == grpc.StatusCode.UNAUTHENTICATED, call
        assert code_of(call, request, metadata=wrong) == grpc.StatusCode.UNAUTHENTICATED, call
    for metadata in (
        [("authorization", TOKEN)],  # no scheme
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", "Bearer ")],
        [("authorization", f"Bearer {TOKEN}x")],
        [("authorization", f"Bearer {TOKEN[:-1]}")],
        [("x-api-key", TOKEN)],
    ):
        assert code_of(stub.ListEventTypes, pb.ListEventTypesRequest(), metadata=metadata) == (
            grpc.StatusCode.UNAUTHENTICATED
        ), metadata
    # The client's named error, and StreamHealth through the client.
    with HookdClient(guarded.address, root_certificates=ca.cert_pem.bytes()) as client:
        with pytest.raises(Unauthenticated):
            client.list_webhooks()
        with pytest.raises(Unauthenticated):
            next(client.stream_health())
    # Either configured token works.
    for token in (TOKEN, OTHER_TOKEN):
        with HookdClient(guarded.address, root_certificates=ca.cert_pem.bytes(), token=token) as client:
            client.list_webhooks()
            snapshot = next(client.stream_health())
            assert snapshot.HasField("service")
    anonymous.close()


def test_health_and_reflection_stay_open_by_default(guarded: HookdProcess, ca: trustme.CA) -> None:
    anonymous = secure_channel(guarded, ca)
    assert health(anonymous) == grpc.StatusCode.OK
    assert reflection(anonymous) == grpc.StatusCode.OK
    anonymous.close()


def test_protect_health_and_reflection(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--auth-token", TOKEN, "--protect-health", "--protect-reflection").start()
    try:
        channel = grpc.insecure_channel(server.address)
        token = [("authorization", f"Bearer {TOKEN}")]
        assert health(channel) == grpc.StatusCode.UNAUTHENTICATED
        assert reflection(channel) == grpc.StatusCode.UNAUTHENTICATED
        assert health(channel, metadata=[("authorization", f"Bearer {WRONG_TOKEN}")]) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert health(channel, metadata=token) == grpc.StatusCode.OK
        assert reflection(channel, metadata=token) == grpc.StatusCode.OK
        channel.close()
    finally:
        server.stop()


def test_without_tokens_nothing_asks_for_one(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path).start()
    try:
        with HookdClient(server.address) as client:
            client.list_webhooks()
        channel = grpc.insecure_channel(server.address)
        assert health(channel) == grpc.StatusCode.OK
        channel.close()
    finally:
        server.stop()


def test_metrics_need_a_token_when_the_api_does(tmp_path: Path) -> None:
    """/metrics names every destination URL: with tokens set it asks for one of them too."""
    server = HookdProcess(tmp_path, "--auth-token", TOKEN, "--metrics-listen", "127.0.0.1:0").start()
    try:
        port = int((tmp_path / "port.metrics").read_text())

        def scrape(authorization: str | None) -> tuple[int, str]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if authorization is not None:
                request.add_header("Authorization", authorization)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as refused:
                assert refused.headers["www-authenticate"] == 'Bearer realm="hookd"'
                return refused.code, refused.read().decode()

        for authorization in (None, f"Bearer {WRONG_TOKEN}", f"Basic {TOKEN}", "Bearer "):
            status, body = scrape(authorization)
            assert status == 401 and "hookd_" not in body, authorization
        status, body = scrape(f"Bearer {TOKEN}")
        assert status == 200 and "hookd_actors" in body
    finally:
        server.stop()
    refused = [line for line in server.log().splitlines() if "authentication failed" in line]
    assert any("method=GET /metrics" in line and "reason=missing" in line for line in refused), refused
    assert any("method=GET /metrics" in line and "reason=invalid" in line for line in refused), refused
    assert WRONG_TOKEN not in server.log()


def test_refused_calls_are_logged_without_the_token_and_rate_limited(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--auth-token", TOKEN).start()
    try:
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.WebhookServiceStub(channel)
        for _ in range(40):  # a burst of guesses, and of calls with no token at all
            assert code_of(
                stub.ListWebhooks, pb.ListWebhooksRequest(), metadata=[("authorization", f"Bearer {WRONG_TOKEN}")]
            ) == (grpc.StatusCode.UNAUTHENTICATED)
            assert code_of(stub.StreamHealth, pb.StreamHealthRequest()) == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    finally:
        server.stop()
    log = server.log()
    refused = [json.loads(line)["msg"] for line in log.splitlines() if "authentication failed" in line]
    assert len(refused) == 2, refused  # one line per address and reason per minute
    invalid, missing = sorted(refused, key=lambda line: "reason=missing" in line)
    assert "method=/hookd.v1.WebhookService/ListWebhooks peer=ipv4:127.0.0.1:" in invalid
    assert "reason=invalid suppressed=0" in invalid
    assert "method=/hookd.v1.WebhookService/StreamHealth" in missing and "reason=missing" in missing
    assert WRONG_TOKEN not in log and TOKEN not in log


def test_refusal_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    failures = FailureLog(60, clock=lambda: now[0], max_peers=2)
    for _ in range(5):
        failures.refused("/m", "ipv4:10.0.0.1:5000", "invalid")
    failures.refused("/m", "ipv6:[2001:db8::1]:6000", "invalid")
    now[0] += 61
    failures.refused("/m", "ipv4:10.0.0.1:5001", "invalid")  # another port, the same address
    # The table holds two addresses: a new one takes the place of one not seen for a minute,
    # and beyond that new addresses share one entry.
    for n in range(2, 6):
        failures.refused("/m", f"ipv4:10.0.0.{n}:5000", "missing")
    lines = [record.getMessage() for record in caplog.records if record.name == "hookd.auth"]
    assert [line.split(" ", 4)[3:] for line in lines] == [
        ["peer=ipv4:10.0.0.1:5000", "reason=invalid suppressed=0"],
        ["peer=ipv6:[2001:db8::1]:6000", "reason=invalid suppressed=0"],
        ["peer=ipv4:10.0.0.1:5001", "reason=invalid suppressed=4"],
        ["peer=ipv4:10.0.0.2:5000", "reason=missing suppressed=0"],
        ["peer=ipv4:10.0.0.3:5000", "reason=missing suppressed=0"],
    ]


# -- what never leaks ----------------------------------------------------------------------------------


def test_tokens_and_secrets_never_reach_the_log_or_reads(tmp_path: Path) -> None:
    """A session that uses every kind of secret, at debug level, then a grep of the whole log."""
    receiver = Receiver()
    server = HookdProcess(tmp_path, "--auth-token", TOKEN, "--log-level", "debug", "--retry-base", "0.05")
    server.start()
    secrets = {"auth token": TOKEN, "wrong token": WRONG_TOKEN}
    try:
        client = server.client(token=TOKEN)
        credentials = {
            "/bearer": pb.DestinationAuth(bearer=pb.BearerAuth(token="bearer-credential-4c1d")),
            "/basic": pb.DestinationAuth(basic=pb.BasicAuth(username="erp", password="basic-password-9a7e")),
            "/headers": pb.DestinationAuth(headers=pb.HeaderAuth(headers={"X-Api-Key": "header-credential-2b6f"})),
        }
        secrets["bearer token"] = "bearer-credential-4c1d"
        secrets["basic password"] = "basic-password-9a7e"
        secrets["header value"] = "header-credential-2b6f"
        hooks = []
        for path, auth in credentials.items():
            hook = client.create_webhook("order", "created", receiver.url(path), auth=auth)
            secrets[f"signing secret {path}"] = hook.signing_secret
            hooks.append(hook)
        rotated = client.rotate_secret(hooks[0].name, grace_period_s=60)
        secrets["rotated secret"] = rotated.signing_secret
        # Failing paths too: a refused credential update, a failing destination, a wrong token.
        receiver.behaviour = lambda request, count: Reply(status=401 if count <= 3 else 200)
        client.publish_event("order", "created", data={"id": 1})
        receiver.wait_for(3)  # the three deliveries take the three 401s; the ping and retries get 200
        client.test_webhook(hooks[1].name)
        receiver.wait_for(7)
        bad = pb.Webhook(name=hooks[2].name)
        bad.auth.headers.headers["X-Api-Key"] = "header-credential-2b6f\n"
        with pytest.raises(Exception, match="webhook.auth"):
            client.update_webhook(bad, ["auth"])
        with HookdClient(server.address, token=WRONG_TOKEN) as intruder, pytest.raises(Unauthenticated):
            intruder.list_webhooks()
        # Reads after create and rotate show secrets and credentials masked.
        for hook in client.list_webhooks().webhooks:
            shown = hook.SerializeToString()
            for name, secret in secrets.items():
                assert secret.encode() not in shown, f"{name} returned by ListWebhooks"
        for hook in hooks:
            shown = client.get_webhook(hook.name).SerializeToString()
            for name, secret in secrets.items():
                assert secret.encode() not in shown, f"{name} returned by GetWebhook"
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.SUCCEEDED).deliveries) >= 3)
    finally:
        receiver.close()
        server.stop()
    log = server.log()
    assert "webhook created" in log and "secret rotated" in log  # the session was logged
    assert all(json.loads(line) for line in log.splitlines() if line.startswith("{"))
    for name, secret in secrets.items():
        for form in {secret, secret.removeprefix("whsec_")}:
            assert form not in log, f"{name} appears in the server log"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_only
def test_database_files_are_owner_only(tmp_path: Path) -> None:
    """Even under a umask that would let everyone read them: the store holds signing secrets."""
    database = tmp_path / "private" / "hookd.db"
    previous = os.umask(0)
    try:
        server = HookdProcess(tmp_path, "--database", str(database)).start()
    finally:
        os.umask(previous)
    receiver = Receiver()
    try:
        client = server.client()
        client.create_webhook("order", "created", receiver.url())
        client.publish_event("order", "created", data={"id": 1})
        receiver.wait_for(1)
        files = [database, database.with_name("hookd.db-wal"), database.with_name("hookd.db-shm")]
        wait_until(lambda: all(path.exists() for path in files))
        for path in files:
            assert mode(path) == 0o600, f"{path.name} has mode {mode(path):o}"
        assert mode(database.parent) == 0o700
    finally:
        receiver.close()
        server.stop()


def test_hookctl_speaks_tls_with_a_token(guarded: HookdProcess, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    hookctl = [str(Path(sys.executable).parent / "hookctl"), "--address", guarded.address]
    secured = subprocess.run(
        [*hookctl, "--ca-cert", str(ca_file), "--token", TOKEN, "--json", "events", "types"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert secured.returncode == 0, secured.stderr
    assert "order.created" in secured.stdout
    tokenless = subprocess.run(
        [*hookctl, "--ca-cert", str(ca_file), "events", "types"], capture_output=True, text=True, timeout=30
    )
    assert tokenless.returncode != 0 and "UNAUTHENTICATED" in tokenless.stderr
    assert "Traceback" not in tokenless.stderr
