"""Bad input: every RPC of hookd.v1.WebhookService fuzzed over a real channel.

Whatever a caller sends, the answer is OK or a status that says what was wrong with the request
(INVALID_ARGUMENT, NOT_FOUND...), never UNKNOWN or INTERNAL, and the server stays up and
consistent. Messages are built with hypothesis: random and huge strings, unicode, empty and
missing fields, enum numbers the proto does not define, odd and deeply nested Struct data, and
raw bytes that are not a valid message at all.

URLs only ever name 127.0.0.0/8, addresses the guard refuses, or names that cannot resolve:
the fuzzer creates webhooks and publishes events, so deliveries do happen.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from hookd.client import HookdClient, InvalidArgument
from hookd.engine import catalogue, paging
from hookd.server.config import MAX_MESSAGE_BYTES
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc
from tests.support.receiver import Receiver
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

#: Codes that describe a caller's mistake; anything else (UNKNOWN, INTERNAL, UNAVAILABLE,
#: DEADLINE_EXCEEDED...) is a bug in hookd.
CALLER_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    """The server under fuzz, and a few things that exist on it."""

    server: HookdProcess
    receiver: Receiver
    channel: grpc.Channel
    stub: pb_grpc.WebhookServiceStub
    known: pb.Webhook
    victim: pb.Webhook
    event: str
    delivery: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Target]:
    """One server per store for the whole module (``backend`` makes it one per store)."""
    receiver = Receiver()
    server = HookdProcess(tmp_path_factory.mktemp("fuzz"), "--max-attempts", "1").start()
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    channel = grpc.insecure_channel(server.address, options)
    try:
        with HookdClient(server.address) as client:
            known = client.create_webhook("order", "created", receiver.url("/known"))
            victim = client.create_webhook("order", "updated", receiver.url("/victim"))
            event = client.publish_event("order", "created", data={"id": 1}).name
            delivery = client.list_deliveries(known.name).deliveries[0].name
        yield Target(server, receiver, channel, pb_grpc.WebhookServiceStub(channel), known, victim, event, delivery)
    finally:
        channel.close()
        server.stop()
        receiver.close()


def answer(call: Callable[..., Any], request: Any) -> grpc.StatusCode:
    """Make the call; fail unless it ends OK or with a caller-error status and a message."""
    try:
        call(request, timeout=30)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        details = error.details()  # type: ignore[attr-defined]
        assert code in CALLER_ERRORS, f"{code} {details!r} for {str(request)[:1000]}"
        assert details, f"{code} without a message"
        if currently_in_test_context():  # see --hypothesis-show-statistics
            tally(f"{code.name}: {details.split(':')[0][:40]}")
        return code  # type: ignore[no-any-return]
    if currently_in_test_context():
        tally("OK")
    return grpc.StatusCode.OK


# -- strategies --------------------------------------------------------------------------------------

#: Any unicode scalar value (surrogates cannot be encoded as UTF-8, so protobuf refuses them).
CHAR = st.characters(codec="utf-8")
SHORT = st.text(CHAR, max_size=40)
HUGE = st.builds(lambda ch, n: ch * n, CHAR, st.integers(1_000, 300_000))
WORDS = st.sampled_from(
    ["", " ", "\x00", "\x7f", "\n", "*", "-", "order", "created", "payment", "ping", "webhook", "..", "%s", "\u202e"]
)
TEXT = st.one_of(SHORT, WORDS, HUGE, st.text(st.characters(codec="ascii"), max_size=20))
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 1e300, 99999.0])


def mostly(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` four times in five: a message with one odd field gets past the others' checks,
    so the checks (and the code) behind them are reached too."""
    return st.integers(0, 4).flatmap(lambda n: wild if n == 0 else valid)


def either(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` or ``wild``, half and half."""
    return st.booleans().flatmap(lambda use_valid: valid if use_valid else wild)


def names(target: Target | None = None) -> st.SearchStrategy[str]:
    """Resource names: random, nearly right, and (given a target) ones that exist."""
    near = st.builds(
        lambda prefix, body: prefix + body,
        st.sampled_from(["webhooks/", "events/", "webhooks/-", "webhooks/wh_", "events/evt_", "", "/"]),
        st.one_of(SHORT, st.from_regex(r"[A-Za-z0-9_-]{0,70}", fullmatch=True), WORDS),
    )
    deliveries = st.builds(
        lambda hook, number: f"webhooks/{hook}/deliveries/{number}",
        st.sampled_from(["wh_0", "-", "x" * 65, ""]),
        st.one_of(st.integers(-5, 10**20).map(str), SHORT),
    )
    wild = st.one_of(TEXT, near, deliveries)
    if target is None:
        return wild
    hook_id = target.known.name.removeprefix("webhooks/")
    existing = st.sampled_from(
        [
            target.known.name,
            target.event,
            target.delivery,
            target.delivery + "/attempts/1",
            f"webhooks/{hook_id}/deliveries/{2**63}",
            f"webhooks/{hook_id}/deliveries/999999999999999999",
            target.known.name + " ",
            target.known.name.upper(),
        ]
    )
    return either(existing, wild)


HOSTS = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "localhost",
            "10.0.0.1",
            "169.254.169.254",
            "[fe80::1]",
            "0.0.0.0",
            "224.0.0.1",
            "[::]",
            "",
            "[",
            "[::1",
            "a..b.invalid",
            "." * 3,
            "x" * 64 + ".invalid",
            "x" * 300,
            "bücher.invalid",
            "exa mple.invalid",
        ]
    ),
    # Names that cannot resolve, whatever else is wrong with them.
    st.builds(lambda label: label + ".invalid", st.text(CHAR, max_size=70)),
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    """Mostly URLs with a scheme and one of HOSTS, so most examples reach the address checks."""
    kind = draw(st.integers(0, 9))
    if kind == 8:
        return "http://127.0.0.1/" + "p" * 2100  # longer than the 2,048 allowed
    if kind == 9:
        return draw(TEXT.filter(lambda text: "//" not in text))
    scheme = draw(st.sampled_from(["http", "https", "http", "https", "HTTP", "ftp", "file", "javascript", ""]))
    port = draw(st.one_of(st.just(""), st.integers(-1, 100_000).map(lambda p: f":{p}"), SHORT.map(lambda p: ":" + p)))
    path = draw(st.one_of(st.just("/hook"), SHORT.map(lambda p: "/" + p)))
    return f"{scheme}://{draw(HOSTS)}{port}{path}"


URLS = urls()

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), DOUBLE, st.integers(-(2**70), 2**70), TEXT, st.just(2**53 + 1), st.just(-(2**63))
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SHORT, children, max_size=4),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


STRUCT_DATA = st.one_of(
    st.dictionaries(TEXT, JSON, max_size=6),
    mostly(st.integers(1, 40), st.integers(41, 200)).map(lambda depth: {"deep": nested(depth)}),
    st.just({}),
    st.just({"": None, "\x00": "\x00", "\u202e": [[], {}]}),
)


def struct(data: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A Struct made the way a JSON client would (None: the field is left unset)."""
    if data is None:
        return None
    value = struct_pb2.Struct()
    value.update(json.loads(json.dumps(data, allow_nan=True)))
    return value


DURATIONS = st.one_of(
    st.none(),
    st.builds(lambda s, n: duration_pb2.Duration(seconds=s, nanos=n), INT64, INT32),
    st.builds(lambda s: duration_pb2.Duration(seconds=s), st.integers(-5, 40)),
    st.builds(lambda n: duration_pb2.Duration(nanos=n), st.integers(-(10**9), 10**9)),
)
STATUSES = st.one_of(st.sampled_from([0, 1, 2]), INT32)


@st.composite
def auths(draw: st.DrawFn) -> pb.DestinationAuth | None:
    kind = draw(st.sampled_from(["none", "unset", "bearer", "basic", "headers"]))
    if kind == "unset":
        return None
    if kind == "bearer":
        return pb.DestinationAuth(bearer=pb.BearerAuth(token=draw(TEXT)))
    if kind == "basic":
        return pb.DestinationAuth(basic=pb.BasicAuth(username=draw(TEXT), password=draw(TEXT)))
    if kind == "headers":
        headers = draw(st.dictionaries(st.one_of(TEXT, st.sampled_from(["X-Key", "webhook-id", "Host"])), TEXT))
        return pb.DestinationAuth(headers=pb.HeaderAuth(headers=headers))
    return pb.DestinationAuth()


#: Mostly real event types, so that most examples get past the catalogue to the checks behind it.
EVENT_TYPES = st.one_of(
    st.sampled_from([pair for pair in catalogue.event_types() for _ in range(3)]),
    st.tuples(st.sampled_from(["order", "payment", "customer", "webhook"]), TEXT),
    st.tuples(TEXT, TEXT),
)


@st.composite
def webhooks(draw: st.DrawFn, name: st.SearchStrategy[str] = TEXT) -> pb.Webhook:
    resource, event = draw(EVENT_TYPES)
    webhook = pb.Webhook(
        name=draw(name),
        resource=resource,
        event=event,
        url=draw(URLS),
        signing_secret=draw(TEXT),
        description=draw(mostly(st.text(st.characters(min_codepoint=32, codec="utf-8"), max_size=30), TEXT)),
        rate_limit=draw(mostly(st.floats(0, 1000), DOUBLE)),
    )
    webhook.status = draw(mostly(st.sampled_from([0, 1, 2]), STATUSES))  # type: ignore[assignment]
    webhook.inactive_policy = draw(mostly(st.sampled_from([0, 1, 2]), STATUSES))  # type: ignore[assignment]
    auth = draw(mostly(st.none(), auths()))
    if auth is not None:
        webhook.auth.CopyFrom(auth)
    timeout = draw(
        mostly(st.none() | st.floats(0.1, 30).map(lambda s: duration_pb2.Duration(seconds=int(s))), DURATIONS)
    )
    if timeout is not None:
        webhook.timeout.CopyFrom(timeout)
    return webhook


@st.composite
def event_inputs(draw: st.DrawFn) -> pb.EventInput:
    resource, event_name = draw(EVENT_TYPES)
    event = pb.EventInput(
        resource=resource,
        event=event_name,
        idempotency_key=draw(st.one_of(st.just(""), TEXT)),
    )
    for field in ("data", "related"):
        value = struct(draw(st.one_of(st.none(), STRUCT_DATA)))
        if value is not None:
            getattr(event, field).CopyFrom(value)
    return event


def page_tokens(filters: Any = None) -> st.SearchStrategy[str]:
    """Random tokens, and well-formed ones carrying odd keys (huge, negative, not numbers)."""
    forged = st.builds(
        paging.encode_token,
        st.one_of(INT64, st.integers(2**63, 2**80), st.integers(-(2**80), -(2**63))),
        st.just(filters),
    )
    return st.one_of(TEXT, forged)


# -- one test per RPC --------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_create_webhook(target: Target, data: st.DataObject) -> None:
    request = pb.CreateWebhookRequest()
    if data.draw(st.booleans()):
        request.webhook.CopyFrom(data.draw(webhooks()))
    code = answer(target.stub.CreateWebhook, request)
    if code is grpc.StatusCode.OK:
        assert request.webhook.url.split("://")[0].lower() in ("http", "https")


@FUZZ
@given(data=st.data())
def test_get_webhook(target: Target, data: st.DataObject) -> None:
    answer(target.stub.GetWebhook, pb.GetWebhookRequest(name=data.draw(names(target))))


@FUZZ
@given(data=st.data())
def test_update_webhook(target: Target, data: st.DataObject) -> None:
    name = mostly(st.just(target.victim.name), names(target).filter(lambda n: n != target.known.name))
    request = pb.UpdateWebhookRequest(webhook=data.draw(webhooks(name)))
    updatable = ["url", "timeout", "status", "auth", "description", "rate_limit", "inactive_policy", "event"]
    paths = data.draw(
        mostly(
            st.one_of(st.none(), st.just(["*"]), st.lists(st.sampled_from(updatable), min_size=1, max_size=3)),
            st.lists(st.one_of(st.sampled_from(["*", "name", "secret", "create_time", "url.host"]), TEXT)),
        )
    )
    if paths is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    answer(target.stub.UpdateWebhook, request)


@FUZZ
@given(data=st.data())
def test_delete_webhook(target: Target, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        # One that exists, deleted twice: the second time it is gone.
        webhook = pb.Webhook(resource="customer", event="deleted", url=f"http://127.0.0.1:9/{data.draw(st.uuids())}")
        created = target.stub.CreateWebhook(pb.CreateWebhookRequest(webhook=webhook), timeout=30)
        assert answer(target.stub.DeleteWebhook, pb.DeleteWebhookRequest(name=created.name)) == grpc.StatusCode.OK
        gone = answer(target.stub.DeleteWebhook, pb.DeleteWebhookRequest(name=created.name))
        assert gone == grpc.StatusCode.NOT_FOUND
        return
    name = data.draw(names().filter(lambda n: n not in (target.known.name, target.victim.name)))
    answer(target.stub.DeleteWebhook, pb.DeleteWebhookRequest(name=name))


@FUZZ
@given(data=st.data())
def test_list_webhooks(target: Target, data: st.DataObject) -> None:
    request = pb.ListWebhooksRequest(
        page_size=data.draw(mostly(st.integers(0, 1000), INT32)),
        resource=data.draw(mostly(st.sampled_from(["", "order"]), TEXT)),
        event=data.draw(mostly(st.sampled_from(["", "created"]), TEXT)),
        query=data.draw(st.one_of(TEXT, st.sampled_from(["", "%", "_", "\\", "'", '"', "127.0.0.1", "order.c"]))),
    )
    request.status = data.draw(mostly(st.sampled_from([0, 1, 2]), STATUSES))  # type: ignore[assignment]
    status = {1: "ACTIVE", 2: "INACTIVE"}.get(request.status)
    request.page_token = data.draw(page_tokens([request.resource, request.event, status, request.query]))
    answer(target.stub.ListWebhooks, request)


def test_list_event_types(target: Target) -> None:
    answer(target.stub.ListEventTypes, pb.ListEventTypesRequest())


@FUZZ
@given(data=st.data())
def test_test_webhook(target: Target, data: st.DataObject) -> None:
    request = pb.TestWebhookRequest(name=data.draw(st.one_of(names(target), st.just(""))))
    settings = data.draw(st.none() | webhooks())  # unsaved settings to try, with or without a name
    if settings is not None:
        request.webhook.CopyFrom(settings)
    answer(target.stub.TestWebhook, request)


@FUZZ
@given(data=st.data())
def test_rotate_secret(target: Target, data: st.DataObject) -> None:
    request = pb.RotateSecretRequest(name=data.draw(mostly(st.just(target.victim.name), names())))
    grace = data.draw(DURATIONS)
    if grace is not None:
        request.grace_period.CopyFrom(grace)
    answer(target.stub.RotateSecret, request)


@FUZZ
@given(data=st.data())
def test_publish_event(target: Target, data: st.DataObject) -> None:
    request = pb.PublishEventRequest()
    if data.draw(st.booleans()):
        request.event.CopyFrom(data.draw(event_inputs()))
    answer(target.stub.PublishEvent, request)


@settings(FUZZ, max_examples=25)
@given(events=st.lists(event_inputs(), max_size=12))
def test_publish_events(target: Target, events: list[pb.EventInput]) -> None:
    request = pb.PublishEventsRequest()
    for event in events:  # CopyFrom, because the constructor re-parses and refuses deep nesting
        request.events.add().CopyFrom(event)
    answer(target.stub.PublishEvents, request)


@FUZZ
@given(data=st.data())
def test_get_event(target: Target, data: st.DataObject) -> None:
    answer(target.stub.GetEvent, pb.GetEventRequest(name=data.draw(names(target))))


@FUZZ
@given(data=st.data())
def test_list_deliveries(target: Target, data: st.DataObject) -> None:
    parent = data.draw(mostly(st.sampled_from(["webhooks/-", target.known.name]), names(target)))
    request = pb.ListDeliveriesRequest(
        parent=parent,
        page_size=data.draw(mostly(st.integers(0, 1000), INT32)),
        event=data.draw(mostly(st.sampled_from(["", target.event]), names(target))),
    )
    request.state = data.draw(mostly(st.integers(0, 6), INT32))  # type: ignore[assignment]
    hook_id = None if parent == "webhooks/-" else parent.removeprefix("webhooks/")
    request.page_token = data.draw(page_tokens([hook_id, request.event.removeprefix("events/"), None]))
    answer(target.stub.ListDeliveries, request)


@FUZZ
@given(data=st.data())
def test_list_attempts(target: Target, data: st.DataObject) -> None:
    hook_id, _, delivery = target.delivery.removeprefix("webhooks/").partition("/deliveries/")
    request = pb.ListAttemptsRequest(
        parent=data.draw(mostly(st.just(target.delivery), names(target))),
        page_size=data.draw(mostly(st.integers(0, 1000), INT32)),
        page_token=data.draw(page_tokens([hook_id, int(delivery)])),
    )
    answer(target.stub.ListAttempts, request)


def forged_tokens() -> list[tuple[str, str]]:
    """Tokens hookd never makes: deep JSON nesting (it used to raise RecursionError, so INTERNAL),
    nesting that fits the length bound, a huge token, and JSON of the wrong shapes."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return [
        ("nested-2000", b64(b"[" * 2000 + b"]" * 2000)),
        ("nested-object-2000", b64(b'{"k":' * 2000 + b"1" + b"}" * 2000)),
        ("nested-within-bound", b64(b"[" * 90 + b"]" * 90)),
        ("huge", "A" * 100_000),
        ("list", b64(b"[1, 2]")),
        ("string", b64(b'"k"')),
        ("key-is-a-list", b64(b'{"k": [1], "f": "x"}')),
        ("not-utf8", b64(b"\xff\xfe{}")),
    ]


@pytest.mark.parametrize(("kind", "token"), forged_tokens(), ids=[kind for kind, _ in forged_tokens()])
@pytest.mark.parametrize("method", ["ListWebhooks", "ListDeliveries", "ListAttempts"])
def test_forged_page_tokens_are_invalid_argument(target: Target, method: str, kind: str, token: str) -> None:
    requests: dict[str, Any] = {
        "ListWebhooks": pb.ListWebhooksRequest(page_token=token),
        "ListDeliveries": pb.ListDeliveriesRequest(parent="webhooks/-", page_token=token),
        "ListAttempts": pb.ListAttemptsRequest(parent=target.delivery, page_token=token),
    }
    code, details = refusal(getattr(target.stub, method), requests[method])
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token"), details


@FUZZ
@given(data=st.data())
def test_retry_delivery(target: Target, data: st.DataObject) -> None:
    answer(target.stub.RetryDelivery, pb.RetryDeliveryRequest(name=data.draw(names(target))))


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_stream_health(target: Target, data: st.DataObject) -> None:
    request = pb.StreamHealthRequest(
        webhooks=data.draw(st.lists(st.one_of(st.just(target.known.name), names(target)), max_size=3)),
        destinations=data.draw(st.lists(st.one_of(URLS, TEXT), max_size=3)),
    )
    interval = data.draw(DURATIONS)
    if interval is not None:
        request.interval.CopyFrom(interval)
    stream: Any = target.stub.StreamHealth(request, timeout=30)
    try:
        next(stream)
    except grpc.RpcError as error:
        code: Any = error.code()  # type: ignore[attr-defined]
        assert code in CALLER_ERRORS, f"{code} {error.details()!r} for {str(request)[:1000]}"  # type: ignore[attr-defined]
    finally:
        stream.cancel()


# -- bytes that are no message, and messages that are too big ---------------------------------------

METHODS = [method.name for method in pb.DESCRIPTOR.services_by_name["WebhookService"].methods]


@settings(FUZZ, max_examples=60)
@given(
    method=st.sampled_from(METHODS),
    raw=st.one_of(
        st.binary(max_size=200),
        st.integers(60, 400).map(lambda depth: b"\x0a\x02\x1a\x00" + b"\x1a\x02\x2a\x00" * depth),
        st.just(b"\x08" + b"\xff" * 11),
        st.just(b"\x0a\xff\xff\xff\xff\x0f"),
    ),
)
def test_undecodable_requests(target: Target, method: str, raw: bytes) -> None:
    """Bytes that are not a valid request are INVALID_ARGUMENT, whatever the method."""
    streaming = method == "StreamHealth"
    factory = target.channel.unary_stream if streaming else target.channel.unary_unary
    call: Any = factory(f"/hookd.v1.WebhookService/{method}", request_serializer=None, response_deserializer=None)
    try:
        result = call(raw, timeout=30)
        if streaming:
            next(result)
            result.cancel()
    except grpc.RpcError as error:
        assert error.code() in CALLER_ERRORS, f"{method}: {error.code()} {error.details()!r} for {raw[:60]!r}"  # type: ignore[attr-defined]


def deep_request(depth: int) -> bytes:
    """A PublishEventRequest whose data nests ``depth`` Structs deep, encoded by hand."""

    def field(number: int, payload: bytes) -> bytes:
        tag = bytes([(number << 3) | 2])
        length = len(payload)
        varint = b""
        while True:
            byte = length & 0x7F
            length >>= 7
            varint += bytes([byte | (0x80 if length else 0)])
            if not length:
                return tag + varint + payload

    value = b""
    for _ in range(depth):  # Struct{fields: {"k": Value{struct_value: ...}}}
        value = field(1, field(1, b"k") + field(2, field(5, value)))
    event = field(1, b"order") + field(2, b"created") + field(3, value)
    return field(1, event)


@pytest.mark.parametrize("depth", [30, 45, 60, 1000])
def test_deeply_nested_data(target: Target, depth: int) -> None:
    """Nesting protobuf cannot decode is refused as such; what it can decode is published."""
    call = target.channel.unary_unary(
        "/hookd.v1.WebhookService/PublishEvent", request_serializer=None, response_deserializer=None
    )
    try:
        call(deep_request(depth), timeout=30)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error  # type: ignore[attr-defined]
        assert depth >= 45, error


def refusal(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=60)
    error: Any = raised.value
    return error.code(), str(error.details())


def test_oversized_message_is_refused(target: Target) -> None:
    request = pb.PublishEventRequest(event=pb.EventInput(resource="order", event="created"))
    request.event.data.update({"blob": "x" * (MAX_MESSAGE_BYTES + 1024)})
    code, details = refusal(target.stub.PublishEvent, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in details, details


def test_oversized_events_are_refused(target: Target) -> None:
    big = pb.EventInput(resource="order", event="created")
    big.data.update({"blob": "x" * (300 * 1024)})
    code, details = refusal(target.stub.PublishEvent, pb.PublishEventRequest(event=big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("event.data: ") and "the limit is 262144" in details, details

    small = pb.EventInput(resource="order", event="created")
    code, details = refusal(target.stub.PublishEvents, pb.PublishEventsRequest(events=[small] * 1001))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "events: at most 1000 events per call"

    code, details = refusal(target.stub.PublishEvents, pb.PublishEventsRequest(events=[small] * 3 + [big]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("events[3].data: "), details


def test_unicode_urls_are_sent_encoded_and_header_credentials_must_be_ascii(target: Target) -> None:
    """A request goes out in ASCII only: a unicode path goes out percent-encoded (it used to crash the
    destination's actor), and credentials sent as header values as they are must be ASCII."""
    with HookdClient(target.server.address) as client:
        client.create_webhook("shipping", "label_created", target.receiver.url("/étiquette/ü"))
        client.publish_event("shipping", "label_created", data={"parcel": "ü"})
        (request,) = target.receiver.wait_for(1, path="/%C3%A9tiquette/%C3%BC")
        assert request.json()["data"] == {"parcel": "ü"}
        for auth in (
            pb.DestinationAuth(bearer=pb.BearerAuth(token="jeton-é")),
            pb.DestinationAuth(headers=pb.HeaderAuth(headers={"X-Key": "clé"})),
        ):
            with pytest.raises(InvalidArgument, match="must be ASCII"):
                client.create_webhook("shipping", "label_created", target.receiver.url("/x"), auth=auth)


# -- and after all that -----------------------------------------------------------------------------


def test_server_is_still_up_and_consistent(target: Target) -> None:
    """Runs last in this module: the server is serving, a known webhook reads back unchanged, and
    nothing the fuzzer sent made hookd log an internal error or crash an actor."""
    assert target.server.process is not None and target.server.process.poll() is None
    health = health_pb2_grpc.HealthStub(target.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    webhook = target.stub.GetWebhook(pb.GetWebhookRequest(name=target.known.name), timeout=10)
    assert (webhook.resource, webhook.event, webhook.url) == (
        target.known.resource,
        target.known.event,
        target.known.url,
    )
    event = target.stub.GetEvent(pb.GetEventRequest(name=target.event), timeout=10)
    assert event.type == "order.created"
    assert target.stub.ListWebhooks(pb.ListWebhooksRequest(page_size=1000), timeout=10).total_size >= 2
    problems = [
        line
        for line in target.server.log().splitlines()
        if '"level": "error"' in line or "internal error" in line or "Traceback" in line
    ]
    assert not problems, "\n".join(problems[:5])[:4000]
