"""The HTTP listener as curl and other programs see it: the Connect API (JSON and binary,
unary and streaming), its errors and token auth, the dashboard's files and their headers."""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import ssl
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.protobuf import duration_pb2
from standardwebhooks import Webhook as Verifier

from hookd.engine import catalogue
from hookd.server import web
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc
from hookd.v1.hookd_connect import WebhookServiceClientSync
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess
from tests.test_security import tls_args

SERVICE = "/hookd.v1.WebhookService/"
TOKEN = "s3cret-token-for-http"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HookdProcess]:
    # The environment variable, not the flag: both must work.
    process = HookdProcess(tmp_path, env={"HOOKD_HTTP_LISTEN": "127.0.0.1:0"}).start()
    yield process
    process.stop()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[HookdProcess]:
    process = HookdProcess(tmp_path, "--http-listen", "127.0.0.1:0", "--auth-token", TOKEN).start()
    yield process
    process.stop()


def post(
    server: HookdProcess, method: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """What `curl -H 'content-type: application/json' -d BODY URL` does; (status, JSON answer)."""
    request = urllib.request.Request(
        server.http_url + SERVICE + method,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def stream_messages(server: HookdProcess, body: Any, count: int, headers: dict[str, str] | None = None) -> list[Any]:
    """Read ``count`` messages of a Connect server stream (or fewer, if it ends first)."""
    payload = json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        connection.request(
            "POST",
            SERVICE + "StreamHealth",
            body=struct.pack(">BI", 0, len(payload)) + payload,
            headers={"content-type": "application/connect+json", **(headers or {})},
        )
        answer = connection.getresponse()
        assert answer.status == 200
        messages: list[Any] = []
        while len(messages) < count:
            flags, length = struct.unpack(">BI", answer.read(5))
            messages.append((flags, json.loads(answer.read(length))))
            if flags & 0x02:
                break
        return messages
    finally:
        connection.close()


def test_curl_lists_what_grpc_created(server: HookdProcess) -> None:
    created = server.client().create_webhook("order", "created", "http://127.0.0.1:9/hook")
    status, answer = post(server, "ListWebhooks", {})
    assert status == 200
    assert [hook["name"] for hook in answer["webhooks"]] == [created.name]
    assert answer["webhooks"][0]["status"] == "ACTIVE"
    assert answer["totalSize"] == 1


def test_create_over_http_is_seen_over_grpc_with_its_secret_shown_once(server: HookdProcess) -> None:
    status, hook = post(
        server, "CreateWebhook", {"webhook": {"resource": "payment", "event": "failed", "url": "http://127.0.0.1:9/p"}}
    )
    assert status == 200
    assert hook["signingSecret"].startswith("whsec_") and "****" not in hook["signingSecret"]
    assert server.client().get_webhook(hook["name"]).url == "http://127.0.0.1:9/p"
    _, again = post(server, "GetWebhook", {"name": hook["name"]})
    assert "****" in again["signingSecret"]


@pytest.mark.parametrize(
    ("method", "body", "status", "code", "message_start"),
    [
        (
            "CreateWebhook",
            {"webhook": {"resource": "order", "event": "nope", "url": "http://127.0.0.1:9/x"}},
            400,
            "invalid_argument",
            "webhook.event: unknown event 'nope'",
        ),
        ("CreateWebhook", {"webhook": {"resource": "order"}, "bogus": 1}, 400, "invalid_argument", "webhook.event"),
        ("GetWebhook", {"name": "webhooks/wh_missing"}, 404, "not_found", "webhooks/wh_missing not found"),
        ("GetWebhook", {"name": "nonsense"}, 400, "invalid_argument", "name: must look like"),
        ("ListWebhooks", {"pageSize": "many"}, 400, "invalid_argument", "unmarshal message"),
        ("RetryDelivery", {"name": "webhooks/-/deliveries/99"}, 404, "not_found", ""),
    ],
    ids=["unknown-event", "unknown-json-field-ignored", "not-found", "bad-name", "bad-json", "no-delivery"],
)
def test_errors_carry_the_grpc_code_as_connect_code(
    server: HookdProcess, method: str, body: Any, status: int, code: str, message_start: str
) -> None:
    got_status, answer = post(server, method, body)
    assert (got_status, answer["code"]) == (status, code)
    assert answer["message"].startswith(message_start)


def test_token_is_required_and_checked(guarded: HookdProcess) -> None:
    refused = {"code": "unauthenticated", "message": "missing or invalid bearer token"}
    assert post(guarded, "ListWebhooks", {}) == (401, refused)
    assert post(guarded, "ListWebhooks", {}, {"authorization": "Bearer wrong"})[0] == 401
    assert post(guarded, "ListWebhooks", {}, {"authorization": f"Bearer {TOKEN}"}) == (200, {})
    # The stream too: refused before any snapshot.
    [(flags, end)] = stream_messages(guarded, {}, 2)
    assert flags == 0x02 and end["error"]["code"] == "unauthenticated"
    # Refused before the body is read: a caller without a token cannot make the loop decode a
    # large message (this one is not even JSON, and the answer is still 401, not 400).
    request = urllib.request.Request(
        guarded.http_url + SERVICE + "PublishEvent",
        data=b"{not json" * 100_000,
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused_early:
        urllib.request.urlopen(request, timeout=10)
    assert (refused_early.value.code, json.loads(refused_early.value.read())) == (401, refused)
    # Refusals are logged as gRPC's are (method, peer, reason), never with a token.
    log = wait_until(lambda: "method=/hookd.v1.WebhookService/ListWebhooks" in guarded.log() and guarded.log())
    assert "authentication failed" in log and "peer=ipv4:127.0.0.1:" in log
    assert TOKEN not in log and "wrong" not in log


def test_stream_health_streams_snapshots(server: HookdProcess) -> None:
    messages = stream_messages(server, {"interval": "0.1s"}, 3)
    assert [flags for flags, _ in messages] == [0, 0, 0]
    assert all(message["service"]["key"] == "service" for _, message in messages)
    [(flags, end)] = stream_messages(server, {"webhooks": ["webhooks/wh_gone"]}, 1)
    assert flags == 0x02 and end["error"]["code"] == "not_found"


@pytest.mark.parametrize("protocol", [ProtocolType.CONNECT, ProtocolType.GRPC_WEB], ids=["connect", "grpc-web"])
def test_generated_python_client_speaks_binary_protocols(server: HookdProcess, protocol: ProtocolType) -> None:
    server.client().create_webhook("order", "created", "http://127.0.0.1:9/hook")
    with WebhookServiceClientSync(server.http_url, protocol=protocol) as client:
        assert client.list_webhooks(pb.ListWebhooksRequest()).total_size == 1
        with pytest.raises(ConnectError) as error:
            client.get_webhook(pb.GetWebhookRequest(name="webhooks/wh_missing"))
        assert error.value.code.name == "NOT_FOUND"
        snapshots = client.stream_health(pb.StreamHealthRequest(interval=duration_pb2.Duration(nanos=100_000_000)))
        assert next(iter(snapshots)).service.key == "service"


def test_simple_cross_site_posts_are_refused(server: HookdProcess) -> None:
    """A form on another site can only POST form or text bodies, and a link only GETs: neither
    reaches a method (and with tokens set, neither can carry one)."""
    server.client().create_webhook("order", "created", "http://127.0.0.1:9/hook")
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        request = urllib.request.Request(
            server.http_url + SERVICE + "DeleteWebhook", data=b"{}", headers={"content-type": content_type}
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 415
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server.http_url + SERVICE + "ListWebhooks?encoding=json&message={}", timeout=10)
    assert error.value.code == 405
    assert server.client().list_webhooks().total_size == 1


def test_test_webhook_tries_unsaved_settings_and_records_nothing(server: HookdProcess) -> None:
    receiver = Receiver(always(Reply(status=202, body=b"pong")))
    try:
        stored = server.client().create_webhook("order", "created", "http://127.0.0.1:9/old")
        status, answer = post(
            server, "TestWebhook", {"name": stored.name, "webhook": {"url": receiver.url(), "timeout": "2s"}}
        )
        assert status == 200
        attempt = answer["attempt"]
        assert (attempt["statusCode"], attempt["outcome"], attempt["responseExcerpt"]) == (202, "SUCCESS", "pong")
        assert "name" not in attempt
        [ping] = receiver.received()
        # Signed with the stored webhook's secret, so its receiver can verify it.
        Verifier(stored.signing_secret).verify(ping.body, ping.headers)
        assert ping.json()["type"] == "webhook.ping"
        assert list(server.client().list_deliveries(stored.name).deliveries) == []

        status, answer = post(server, "TestWebhook", {"webhook": {"url": receiver.url()}})
        assert status == 200 and answer["attempt"]["statusCode"] == 202
        assert post(server, "TestWebhook", {"webhook": {"url": "ftp://x"}})[1]["message"].startswith("webhook.url")
    finally:
        receiver.close()


def test_stored_credentials_go_only_to_the_stored_urls_origin(server: HookdProcess) -> None:
    """A trial of another URL does not carry the stored credentials (which no answer shows):
    whoever may call TestWebhook could otherwise have them sent to a server of its choosing."""
    receiver = Receiver(always(Reply(status=202)))
    try:
        auth = pb.DestinationAuth(bearer=pb.BearerAuth(token="stored-secret-token"))
        stored = server.client().create_webhook("order", "created", receiver.url("/saved"), auth=auth)
        assert post(server, "TestWebhook", {"name": stored.name, "webhook": {"url": receiver.url("/other")}})[0] == 200
        # Same origin, another path: the destination's own server, so its credentials go along.
        [same_origin] = receiver.received()
        assert same_origin.headers["authorization"] == "Bearer stored-secret-token"
        elsewhere = receiver.url("/x").replace("127.0.0.1", "localhost")
        answer = post(server, "TestWebhook", {"name": stored.name, "webhook": {"url": elsewhere}})
        assert answer[0] == 200 and answer[1]["attempt"]["statusCode"] == 202
        [_, other_origin] = receiver.received()
        assert "authorization" not in other_origin.headers
        Verifier(stored.signing_secret).verify(other_origin.body, other_origin.headers)
        # Credentials given with the trial go wherever the trial goes.
        given = {"url": elsewhere, "auth": {"bearer": {"token": "typed-again"}}}
        assert post(server, "TestWebhook", {"name": stored.name, "webhook": given})[0] == 200
        assert receiver.received()[2].headers["authorization"] == "Bearer typed-again"
    finally:
        receiver.close()


def test_a_trial_with_its_auth_set_to_none_goes_without_the_stored_credentials(server: HookdProcess) -> None:
    """The form's "Test connection" after switching Authentication to None: the ping goes as the
    settings would once saved, without credentials. Before, an auth without a method always kept
    the stored ones, and the trial passed where the saved webhook would fail."""
    receiver = Receiver(always(Reply(status=202)))
    try:
        auth = pb.DestinationAuth(basic=pb.BasicAuth(username="shop", password="stored-password"))
        stored = server.client().create_webhook("order", "created", receiver.url(), auth=auth)
        assert post(server, "TestWebhook", {"name": stored.name, "webhook": {"url": receiver.url()}})[0] == 200
        assert (
            post(server, "TestWebhook", {"name": stored.name, "webhook": {"url": receiver.url(), "auth": {}}})[0] == 200
        )
        [unset, none] = receiver.received()
        assert unset.headers["authorization"].startswith("Basic ")  # left unset: the stored ones
        assert "authorization" not in none.headers
    finally:
        receiver.close()


def test_dashboard_files_are_served_with_a_strict_policy(server: HookdProcess) -> None:
    with urllib.request.urlopen(server.http_url + "/", timeout=10) as answer:
        page = answer.read().decode()
        headers = answer.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/js/app.js">' in page
    assert "<script>" not in page and "style=" not in page
    request = urllib.request.Request(server.http_url + "/static/js/app.js", headers={"accept-encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["content-encoding"] == "gzip"
        assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        etag = answer.headers["etag"]
        assert b"render(" in gzip.decompress(answer.read())
    request = urllib.request.Request(
        server.http_url + "/static/js/app.js", headers={"if-none-match": etag, "accept-encoding": "gzip"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 304
    for path in ("/static/nope.js", "/../pyproject.toml", "/static/../web.py"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.http_url + path, timeout=10)
        assert error.value.code == 404


def test_api_answers_are_not_stored_by_caches(server: HookdProcess) -> None:
    """CreateWebhook and RotateSecret answer with a signing secret: no cache may keep one."""
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        created = http.post(
            SERVICE + "CreateWebhook",
            json={"webhook": {"resource": "order", "event": "created", "url": "http://x.test/"}},
        )
        rotated = http.post(SERVICE + "RotateSecret", json={"name": created.json()["name"]})
        refused = http.post(SERVICE + "GetWebhook", json={"name": "webhooks/wh_missing"})
    for answer in (created, rotated, refused):
        assert answer.headers.get_list("cache-control") == ["no-store"]
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"]
    assert rotated.json()["signingSecret"].startswith("whsec_") and refused.status_code == 404


def test_each_encoding_of_a_file_has_its_own_etag(server: HookdProcess) -> None:
    """The gzipped bytes are another representation than the plain ones: a strong ETag names
    exactly one. A 304 carries no content-length (there is no body to measure)."""
    url = "/static/js/app.js"
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        plain = http.get(url, headers={"accept-encoding": "identity"})
        zipped = http.get(url, headers={"accept-encoding": "gzip"})
        assert plain.headers["etag"] != zipped.headers["etag"]
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        assert plain.headers["vary"] == zipped.headers["vary"] == "accept-encoding"

        def revalidate(tags: str, encoding: str = "gzip") -> httpx.Response:
            return http.get(url, headers={"if-none-match": tags, "accept-encoding": encoding})

        # The plain body's tag does not validate the gzipped one, nor the other way round.
        assert revalidate(plain.headers["etag"]).status_code == 200
        assert revalidate(zipped.headers["etag"], "identity").status_code == 200
        for tags in (zipped.headers["etag"], f'"old", {zipped.headers["etag"]}', "W/" + zipped.headers["etag"], "*"):
            answer = revalidate(tags)
            assert answer.status_code == 304, tags
            assert "content-length" not in answer.headers and answer.content == b""
            assert answer.headers["etag"] == zipped.headers["etag"]
        assert revalidate('"old", "older"').status_code == 200


def test_grpc_still_serves_beside_http(server: HookdProcess) -> None:
    import grpc

    with grpc.insecure_channel(server.address) as channel:
        answer = pb_grpc.WebhookServiceStub(channel).ListEventTypes(pb.ListEventTypesRequest(), timeout=5)
    assert len(answer.event_types) == len(catalogue.event_types())


def test_health_has_the_last_hour_by_minute(server: HookdProcess) -> None:
    receiver = Receiver()
    try:
        client = server.client()
        client.create_webhook("order", "created", receiver.url())
        client.publish_event("order", "created", data={"id": 1})
        receiver.wait_for(1)
        deadline_messages = stream_messages(server, {"interval": "0.1s"}, 30)
        minutes = [m["service"].get("minutes", []) for _, m in deadline_messages]
        assert any(minute and minute[-1]["attempts"] == "1" for minute in minutes)
        last = next(minute for minute in minutes if minute)[-1]
        assert last["successes"] == "1" and last["p50Ms"] > 0
    finally:
        receiver.close()


def test_streams_end_cleanly_when_hookd_stops(server: HookdProcess) -> None:
    """A dashboard left open on the health page gets an end of stream, not a cut connection, and
    does not hold the shutdown for its grace period."""
    payload = json.dumps({"interval": "0.1s"}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        connection.request(
            "POST",
            SERVICE + "StreamHealth",
            body=struct.pack(">BI", 0, len(payload)) + payload,
            headers={"content-type": "application/connect+json"},
        )
        answer = connection.getresponse()
        flags, length = struct.unpack(">BI", answer.read(5))
        assert flags == 0 and json.loads(answer.read(length))["service"]["key"] == "service"
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        while flags == 0:
            flags, length = struct.unpack(">BI", answer.read(5))
            message = json.loads(answer.read(length))
        assert flags == 0x02 and "error" not in message
        assert server.process.wait(20) == 0
    finally:
        connection.close()


def test_http_listener_takes_the_grpc_tls_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = HookdProcess(tmp_path, "--http-listen", "127.0.0.1:0", *tls_args(tmp_path, ca)).start()
    try:
        url = f"https://127.0.0.1:{server.http_port}{SERVICE}ListEventTypes"
        request = urllib.request.Request(url, data=b"{}", headers={"content-type": "application/json"})
        trusting = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        with urllib.request.urlopen(request, timeout=10, context=trusting) as answer:
            assert len(json.loads(answer.read())["eventTypes"]) == len(catalogue.event_types())
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain http beside it
            urllib.request.urlopen(request.full_url.replace("https:", "http:"), data=b"{}", timeout=10)
    finally:
        server.stop()


def test_http_watchers_count_against_max_watchers(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--http-listen", "127.0.0.1:0", "--max-watchers", "1").start()
    payload = json.dumps({"interval": "0.1s"}).encode()
    first = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        first.request(
            "POST",
            SERVICE + "StreamHealth",
            body=struct.pack(">BI", 0, len(payload)) + payload,
            headers={"content-type": "application/connect+json"},
        )
        answer = first.getresponse()
        flags, length = struct.unpack(">BI", answer.read(5))
        assert flags == 0 and answer.read(length)
        [(flags, end)] = stream_messages(server, {}, 1)
        assert flags == 0x02 and end["error"]["code"] == "resource_exhausted"
        assert "--max-watchers" in end["error"]["message"]
    finally:
        first.close()
        server.stop()


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1:8080", False),
        ("localhost:8080", False),
        ("LOCALHOST", False),
        ("[::1]:8080", False),
        ("10.1.2.3", False),
        ("hookd.example:8080", True),
        ("attacker.example", True),
        ("127.0.0.1.nip.io", True),
    ],
)
def test_which_hosts_a_rebinding_page_could_use(host: str, refused: bool) -> None:
    assert web.rebindable(host.encode()) is refused


def test_without_tokens_only_addresses_and_localhost_are_served(server: HookdProcess, guarded: HookdProcess) -> None:
    """A page on another domain that rebinds its name to 127.0.0.1 gets nothing; with tokens,
    a host name is fine (every call needs the token anyway)."""

    def status(target: HookdProcess, host: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", target.http_port, timeout=10)
        try:
            connection.request(
                "POST",
                SERVICE + "ListEventTypes",
                body=b"{}",
                headers={"content-type": "application/json", "host": host},
            )
            answer = connection.getresponse()
            answer.read()
            return answer.status
        finally:
            connection.close()

    assert status(server, f"attacker.example:{server.http_port}") == 403
    assert status(server, f"localhost:{server.http_port}") == 200
    assert status(server, f"127.0.0.1:{server.http_port}") == 200
    assert status(guarded, f"hookd.example:{guarded.http_port}") == 401
