"""hookd's HTTP client (``http_delivery.post`` over a ``ConnectionSet``) against trio servers on
127.0.0.1 in the test itself: keep-alive, framing, the stale-connection retry, timeouts, TLS,
the SSRF guard, name lookups, happy eyeballs, and every failure as one outcome. In-process and
fast; the subprocess suites cover the same behaviours end to end.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from hookd.engine import EventInput, connections, destinations, http_delivery
from hookd.engine.breaker import BreakerPolicy, BreakerState
from hookd.engine.connections import CONNECT_STAGGER_S, KEEPALIVE_S, ConnectionSet
from hookd.engine.destinations import DestinationPolicy, DestinationUnresolvable
from hookd.engine.http_delivery import EXCERPT_CHARS, MAX_RESPONSE_BYTES, post
from hookd.engine.jobs import AttemptResult
from hookd.engine.model import Outcome
from hookd.engine.retry import RetryPolicy
from hookd.engine.validation import WebhookInput
from tests.support.engine import local_engine

LOCAL = DestinationPolicy(allow_http=True, allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio's, but jumping only after 10 ms of real idleness: these tests talk over real
    loopback sockets, and a clock that jumps the instant the loop is idle could jump while a
    packet is still on its way through a busy kernel, and fake a timeout."""
    return trio.testing.MockClock(autojump_threshold=0.01)


BODY = b'{"id":"evt_1"}'
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int

    def header(self, name: bytes) -> bytes:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return b""


class Peer:
    """One accepted connection, as the handler sees it."""

    def __init__(self, stream: trio.abc.Stream, number: int, server: Server) -> None:
        self.stream = stream
        self.number = number
        self.server = server
        self.requests = 0
        self._buffer = b""

    async def read_request(self) -> Request | None:
        """The next request on this connection; None when the client closed it."""
        while b"\r\n\r\n" not in self._buffer:
            data = await self._receive()
            if not data:
                return None
            self._buffer += data
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        request = Request(head, b"", self.number)
        length = int(request.header(b"content-length") or 0)
        while len(rest) < length:
            data = await self._receive()
            if not data:
                return None
            rest += data
        request.body, self._buffer = rest[:length], rest[length:]
        self.requests += 1
        self.server.requests.append(request)
        return request

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(65536))
        except trio.BrokenResourceError:
            return b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def reset(self) -> None:
        """Close with an RST rather than a FIN."""
        sock = self.stream.socket if isinstance(self.stream, trio.SocketStream) else None
        assert sock is not None
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


Handler = Callable[[Peer], Awaitable[None]]


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    #: Server names the TLS clients asked for (SNI).
    server_names: list[str | None] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()
    if tls is not None:
        tls.sni_callback = lambda sock, name, context: server.server_names.append(name)  # type: ignore[assignment,func-returns-value]

    async def accept(stream: trio.SocketStream) -> None:
        server.connections += 1
        peer_stream: trio.abc.Stream = stream
        if tls is not None:
            peer_stream = trio.SSLStream(stream, tls, server_side=True)
            try:
                await peer_stream.do_handshake()
            except trio.BrokenResourceError:
                return
        try:
            await handler(Peer(peer_stream, server.connections, server))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(peer_stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, accept, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def answer(*responses: bytes) -> Handler:
    """Answer each request on a connection with the next of ``responses`` (the last repeats)."""

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(responses[min(peer.requests, len(responses)) - 1])

    return handler


async def send(
    client: ConnectionSet, url: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None
) -> AttemptResult:
    return await post(client, url, {"content-type": "application/json", **(headers or {})}, BODY, timeout_s, 0.0)


# -- keep-alive and framing ---------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused_and_the_request_is_as_sent() -> None:
    async with serve(answer(OK)) as server, ConnectionSet(LOCAL) as client:
        results = [await send(client, server.url("/hook?x=1"), headers={"x-key": "secret"}) for _ in range(3)]
    assert [(r.outcome, r.status_code, r.response_excerpt) for r in results] == [(Outcome.SUCCESS, 200, "ok")] * 3
    assert server.connections == 1 and len(server.requests) == 3
    request = server.requests[0]
    assert request.head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert request.header(b"host") == f"127.0.0.1:{server.port}".encode()
    assert request.header(b"x-key") == b"secret" and request.header(b"content-length") == b"%d" % len(BODY)
    assert request.body == BODY


FRAMINGS = {
    "content-length": (b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello", 1),
    "chunked": (b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", 1),
    "connection-close": (b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello", 3),
    "http-1.0": (b"HTTP/1.0 201 Created\r\ncontent-length: 5\r\n\r\nhello", 3),
}


@pytest.mark.parametrize(("response", "connections"), list(FRAMINGS.values()), ids=list(FRAMINGS))
async def test_framings_and_which_connections_are_kept(response: bytes, connections: int) -> None:
    async with serve(answer(response)) as server, ConnectionSet(LOCAL) as client:
        results = [await send(client, server.url()) for _ in range(3)]
    assert [(r.outcome, r.status_code, r.response_excerpt) for r in results] == [(Outcome.SUCCESS, 201, "hello")] * 3
    assert server.connections == connections


async def test_body_until_close_from_an_http_1_0_peer() -> None:
    async def old_server(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")

    async with serve(old_server) as server, ConnectionSet(LOCAL) as client:
        results = [await send(client, server.url()) for _ in range(2)]
    assert [(r.outcome, r.response_excerpt) for r in results] == [(Outcome.SUCCESS, "all of it")] * 2
    assert server.connections == 2


async def test_response_body_is_cut_at_the_cap_and_the_connection_dropped() -> None:
    size = 10 * MAX_RESPONSE_BYTES

    async def huge(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            await peer.send(b"x" * 65536)

    async with serve(huge) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
        assert (result.outcome, result.response_excerpt) == (Outcome.SUCCESS, "x" * EXCERPT_CHARS)
        assert repr(client) == "<ConnectionSet idle=0>"


# -- connections that end --------------------------------------------------------------------------


@pytest.mark.parametrize("close", ["fin", "rst"])
async def test_a_reused_connection_closed_by_the_peer_is_retried_once_fresh(close: str) -> None:
    """The destination closes its idle connection just as hookd sends the next request on it: the
    request goes again on a new connection, and the attempt succeeds."""

    async def closes_idle_connections(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(OK)
        await peer.read_request()  # the close crosses this request on the wire
        if close == "rst":
            peer.reset()

    async with serve(closes_idle_connections) as server, ConnectionSet(LOCAL) as client:
        first = await send(client, server.url())
        second = await send(client, server.url())
    assert (first.outcome, second.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert [r.connection for r in server.requests] == [1, 1, 2]


async def test_a_fresh_connection_is_not_retried() -> None:
    async def hangs_up(peer: Peer) -> None:
        await peer.read_request()

    async with serve(hangs_up) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
    assert result.outcome is Outcome.CONNECTION and "closed the connection before answering" in result.error
    assert len(server.requests) == 1


async def test_no_retry_once_the_response_has_begun() -> None:
    async def cuts_second_answer(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(OK)
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")

    async with serve(cuts_second_answer) as server, ConnectionSet(LOCAL) as client:
        await send(client, server.url())
        result = await send(client, server.url())
    assert (result.outcome, result.status_code) == (Outcome.CONNECTION, 200)
    assert len(server.requests) == 2


async def test_an_idle_connection_the_peer_closed_is_not_reused() -> None:
    closed = trio.Event()

    async def closes_after_answering(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(OK)
        await peer.stream.aclose()
        closed.set()

    async with serve(closes_after_answering) as server, ConnectionSet(LOCAL) as client:
        await send(client, server.url())
        await closed.wait()
        await trio.testing.wait_all_tasks_blocked()
        result = await send(client, server.url())
    assert result.outcome is Outcome.SUCCESS
    assert [r.connection for r in server.requests] == [1, 2]  # checked before use: no wasted send


def held_until_connections(count: int, closed: list[int]) -> Handler:
    """Answer; but hold each connection's first answer until ``count`` connections are open (a
    burst that needs as many), and note the connections the client closes."""
    everyone = trio.Event()

    async def handler(peer: Peer) -> None:
        if peer.number == count:
            everyone.set()
        while await peer.read_request() is not None:
            if peer.requests == 1:
                await everyone.wait()
            await peer.send(OK)
        closed.append(peer.number)

    return handler


async def burst(client: ConnectionSet, url: str, count: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(send, client, url)


async def test_connections_of_a_burst_are_closed_once_idle_for_the_limit_under_steady_traffic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Steady traffic after a burst of 16 takes the top of the stack again and again: the 15
    connections under it are closed once idle for KEEPALIVE_S, not kept open for ever."""
    closed: list[int] = []
    async with serve(held_until_connections(16, closed)) as server, ConnectionSet(LOCAL) as client:
        await burst(client, server.url(), 16)
        assert server.connections == 16 and repr(client) == "<ConnectionSet idle=16>"
        for _ in range(8):  # one request every 5 s for 40 s
            await trio.sleep(5)
            assert (await send(client, server.url())).outcome is Outcome.SUCCESS
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections == 16 and len(closed) == 15 and repr(client) == "<ConnectionSet idle=1>"
        assert len(server.requests) == 16 + 8


async def test_close_expired_closes_what_no_request_takes(autojump_clock: trio.testing.MockClock) -> None:
    """An actor that sends nothing (parked, or waiting out an open breaker) has its idle
    connections closed by its sweep once they are idle for KEEPALIVE_S, and not before."""
    closed: list[int] = []
    async with serve(held_until_connections(4, closed)) as server, ConnectionSet(LOCAL) as client:
        await burst(client, server.url(), 4)
        await trio.sleep(KEEPALIVE_S - 1)
        client.close_expired()
        assert repr(client) == "<ConnectionSet idle=4>"
        await trio.sleep(1)
        client.close_expired()
        await trio.testing.wait_all_tasks_blocked()
        assert repr(client) == "<ConnectionSet idle=0>" and sorted(closed) == [1, 2, 3, 4]


async def test_timeout_bounds_the_whole_exchange_and_drops_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def drips(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if peer.server.connections > 1:
                await peer.send(OK)
                continue
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            for _ in range(100):
                await trio.sleep(1)
                await peer.send(b".")

    async with serve(drips) as server, ConnectionSet(LOCAL) as client:
        start = trio.current_time()
        slow = await send(client, server.url(), timeout_s=5)
        elapsed = trio.current_time() - start
        fast = await send(client, server.url(), timeout_s=5)
    assert (slow.outcome, slow.status_code, slow.error) == (Outcome.TIMEOUT, 200, "no complete answer within 5 s")
    assert 5 <= elapsed < 6  # the mock clock's seconds: every byte came in time, the whole did not
    assert fast.outcome is Outcome.SUCCESS and server.connections == 2


async def test_a_silent_destination_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(peer: Peer) -> None:
        await peer.read_request()
        await trio.sleep_forever()

    async with serve(silent) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url(), timeout_s=2)
    assert (result.outcome, result.status_code) == (Outcome.TIMEOUT, 0)


async def test_refused_connection() -> None:
    async with serve(answer(OK)) as server:
        url = server.url()
    async with ConnectionSet(LOCAL) as client:
        result = await send(client, url)
    assert result.outcome is Outcome.CONNECTION and result.error


# -- answers ----------------------------------------------------------------------------------------


async def test_redirects_are_recorded_not_followed() -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"
    async with serve(answer(redirect)) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
    assert (result.outcome, result.status_code, result.location) == (Outcome.CLIENT_ERROR, 307, "/elsewhere")
    assert result.error == "HTTP 307 redirect not followed"
    assert len(server.requests) == 1


def rate_limited(retry_after: bytes, status: int = 429) -> bytes:
    return b"HTTP/1.1 %d Slow Down\r\nretry-after: %s\r\ncontent-length: 0\r\n\r\n" % (status, retry_after)


RETRY_AFTER = [
    (b"120", 120.0),
    (b" 7 ", 7.0),
    (b"0", 0.0),
    (b"Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
    (b"\xb2", None),  # a superscript two in latin-1: str.isdigit() says yes, float() says no
    (b"\xb9\xb3", None),  # superscript one, three
    (b"\xc2\xb2", None),  # the same two in UTF-8
    (b"Wed, 21 Oct 2015 07:28:00 +99999999999999999999", None),  # a zone offset no int holds
    (b"Wed, 21 Oct 2015 07:28:00 +9999", None),
    (b"Mon, 1 Jan 10000 00:00:00 GMT", None),
    (b"1" * 400, None),
    (b"-5", None),
    (b"1e3", None),
    (b"soon", None),
    (b"", None),
]


@pytest.mark.parametrize(("value", "seconds"), RETRY_AFTER, ids=[repr(v[:20]) for v, _ in RETRY_AFTER])
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_read_or_ignored_never_raised(value: bytes, seconds: float | None, status: int) -> None:
    async with serve(answer(rate_limited(value, status))) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
    assert result.status_code == status and result.retry_after_s == seconds
    assert result.outcome is (Outcome.RATE_LIMITED if status == 429 else Outcome.SERVER_ERROR)


async def test_retry_after_in_the_future() -> None:
    date = email.utils.formatdate(time.time() + 3600, usegmt=True).encode()
    async with serve(answer(rate_limited(date))) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
    assert result.retry_after_s is not None and 3500 < result.retry_after_s <= 3600


HOSTILE = {
    "status-line": (b"HTTP/1.1 OK\r\n\r\n", Outcome.INVALID_RESPONSE, 0),
    "huge-header": (b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * 70000 + b"\r\n\r\n", Outcome.INVALID_RESPONSE, 0),
    "negative-length": (b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n", Outcome.INVALID_RESPONSE, 0),
    "huge-length": (b"HTTP/1.1 200 OK\r\ncontent-length: 1" + b"0" * 40 + b"\r\n\r\n", Outcome.INVALID_RESPONSE, 0),
    "non-latin-1": (
        b"HTTP/1.1 429 \xe2\x9c\x8b\r\nretry-after: \xe2\x91\xa1\r\nlocation: \xff\r\ncontent-length: 0\r\n\r\n",
        Outcome.RATE_LIMITED,
        429,
    ),
    "utf-8-redirect": (
        b"HTTP/1.1 302 Found\r\nlocation: /caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n",
        Outcome.CLIENT_ERROR,
        302,
    ),
    "status-999": (b"HTTP/1.1 999 Odd\r\ncontent-length: 0\r\n\r\n", Outcome.INVALID_RESPONSE, 999),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n", Outcome.INVALID_RESPONSE, 0),
}


@pytest.mark.parametrize(("response", "outcome", "status"), list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_answers_are_outcomes(response: bytes, outcome: Outcome, status: int) -> None:
    async with serve(answer(response)) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url())
    assert (result.outcome, result.status_code) == (outcome, status), result
    assert result.outcome is Outcome.SUCCESS or result.error


async def test_an_unforeseen_error_is_an_invalid_response_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The second line of defence: a bug met while judging an answer still makes an outcome."""

    def broken(value: str) -> float | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(http_delivery, "_retry_after", broken)
    async with serve(answer(rate_limited(b"1"))) as server, ConnectionSet(LOCAL) as client:
        with caplog.at_level(logging.ERROR, logger="hookd.engine"):
            result = await send(client, server.url())
    assert (result.outcome, result.error) == (Outcome.INVALID_RESPONSE, "unexpected RuntimeError reading the response")
    assert "Traceback" in caplog.text or any(record.exc_info for record in caplog.records)


async def test_a_header_http_cannot_carry_is_a_client_error_and_nothing_is_sent() -> None:
    async with serve(answer(OK)) as server, ConnectionSet(LOCAL) as client:
        result = await send(client, server.url(), headers={"x-token": "secret\r\nx-injected: 1"})
    assert (result.outcome, result.error) == (Outcome.CLIENT_ERROR, "the request could not be encoded as HTTP")
    assert server.connections == 0


# -- the guard and TLS ------------------------------------------------------------------------------


async def test_the_guard_refuses_before_connecting() -> None:
    async with serve(answer(OK)) as server, ConnectionSet(DestinationPolicy(allow_http=True)) as client:
        result = await send(client, server.url())
    assert result.outcome is Outcome.BLOCKED and "not a public address" in result.error
    assert server.connections == 0


async def test_plain_http_is_refused_at_connection_time_unless_allowed() -> None:
    """A webhook saved with http while --allow-http was on, delivered after it was removed."""
    https_only = DestinationPolicy(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    async with serve(answer(OK)) as server, ConnectionSet(https_only) as client:
        result = await send(client, server.url())
    assert result.outcome is Outcome.BLOCKED and "--allow-http" in result.error, result
    assert server.connections == 0


@dataclass(frozen=True)
class PinnedNames(DestinationPolicy):
    """The guard, with a resolver that knows one extra name (the tests have no DNS of their own)."""

    pinned: str = ""
    addresses: tuple[str, ...] = ("127.0.0.1",)

    async def resolve(self, host: str, port: int) -> list[str]:
        return list(self.addresses) if host == self.pinned else await super().resolve(host, port)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_with_an_idna_name_sends_its_ascii_form_as_sni_and_host(ca: trustme.CA) -> None:
    name = "bücher.example"
    ascii_name = name.encode("idna").decode()
    policy = PinnedNames(allow_http=True, allow_hosts=frozenset({ascii_name}), pinned=ascii_name)
    tls = server_context(ca, ascii_name)
    async with serve(answer(OK), tls) as server, ConnectionSet(policy, client_context(ca)) as client:
        results = [await send(client, server.url(host=name, scheme="https")) for _ in range(2)]
    assert [r.outcome for r in results] == [Outcome.SUCCESS] * 2
    assert server.server_names == [ascii_name] and server.connections == 1
    assert server.requests[0].header(b"host") == f"{ascii_name}:{server.port}".encode()


@pytest.mark.parametrize(
    ("names", "trusted"),
    [(("127.0.0.1",), False), (("elsewhere.example",), True)],
    ids=["untrusted-ca", "wrong-name"],
)
async def test_tls_that_does_not_verify(ca: trustme.CA, names: tuple[str, ...], trusted: bool) -> None:
    other = trustme.CA()
    tls = server_context(ca if trusted else other, *names)
    async with serve(answer(OK), tls) as server, ConnectionSet(LOCAL, client_context(ca)) as client:
        result = await send(client, server.url(scheme="https"))
    assert result.outcome is Outcome.TLS and "CERTIFICATE_VERIFY_FAILED" in result.error, result
    assert server.requests == []


async def test_plain_http_on_an_https_url_is_a_tls_failure(ca: trustme.CA) -> None:
    async def plain(peer: Peer) -> None:
        await peer.stream.receive_some(65536)  # a TLS ClientHello, which is not HTTP
        await peer.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    async with serve(plain) as server, ConnectionSet(LOCAL, client_context(ca)) as client:
        result = await send(client, server.url(scheme="https"))
    assert result.outcome is Outcome.TLS, result


# -- name lookups -----------------------------------------------------------------------------------


@dataclass
class Resolver:
    """The system resolver's stand-in in the lookup threads: every name is 127.0.0.1, but a
    lookup of a name in ``held`` blocks until ``release`` is set, as when its name servers do
    not answer; ``calls`` lists the names looked up."""

    held: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)

    def __call__(self, name: bytes) -> list[str]:
        host = name.decode()
        self.calls.append(host)
        if host in self.held:
            self.release.wait()
        if host.startswith("nx."):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return ["127.0.0.1"]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    fake = Resolver()
    monkeypatch.setattr(destinations, "_getaddrinfo", fake)
    yield fake
    fake.release.set()  # the held lookups' threads end


async def test_names_whose_lookups_hang_delay_only_their_own_destinations(resolver: Resolver) -> None:
    """Three destinations whose lookups hang, 16 requests each, all abandoned at their timeout:
    they hold one lookup thread each, none of trio's default ones, and a healthy destination
    that needs a connection still gets one at once."""
    hanging = [f"hang-{n}.test" for n in range(3)]
    resolver.held.update(hanging)
    async with serve(answer(OK)) as server:
        async with trio.open_nursery() as nursery:
            for name in hanging:
                client = ConnectionSet(LOCAL)
                for _ in range(16):
                    nursery.start_soon(partial(send, client, server.url(host=name), timeout_s=0.5))
        assert sorted(resolver.calls) == hanging
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        start = trio.current_time()
        async with ConnectionSet(LOCAL) as client:
            result = await send(client, server.url(host="healthy.test"), timeout_s=3)
        assert result.outcome is Outcome.SUCCESS, result
        assert trio.current_time() - start < 1


async def test_concurrent_lookups_of_one_name_share_one_call(resolver: Resolver) -> None:
    """Ten requests want one name while its lookup runs: one call, one answer for all, even for
    those still waiting when the request that started it gave up."""
    resolver.held.update({"slow.test", "nx.slow.test"})
    answers: list[list[str]] = []
    failures: list[str] = []

    async def resolve(name: str) -> None:
        try:
            answers.append(await LOCAL.resolve(name, 443))
        except DestinationUnresolvable as error:
            failures.append(str(error))

    async def gives_up() -> None:
        with trio.move_on_after(0.05):
            await LOCAL.resolve("slow.test", 443)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gives_up)
        await trio.testing.wait_all_tasks_blocked()
        for name in ["slow.test"] * 9 + ["nx.slow.test"] * 3:
            nursery.start_soon(resolve, name)
        await trio.sleep(0.1)
        resolver.release.set()
    assert sorted(resolver.calls) == ["nx.slow.test", "slow.test"]
    assert answers == [["127.0.0.1"]] * 9
    assert failures == ["host 'nx.slow.test' did not resolve: [Errno -2] Name or service not known"] * 3


async def test_a_lookup_whose_starter_gave_up_waiting_for_a_thread_is_started_again(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(destinations, "LOOKUP_THREADS", 1)
    resolver.held.add("hang.test")
    answers: list[list[str]] = []

    async def resolve(name: str, timeout_s: float = 10.0) -> None:
        with trio.move_on_after(timeout_s):
            answers.append(await LOCAL.resolve(name, 443))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolve, "hang.test")  # holds the only thread
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(resolve, "ok.test", 0.05)  # waits for the thread, then gives up
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(resolve, "ok.test")  # waits for that lookup
        await trio.sleep(0.1)
        assert resolver.calls == ["hang.test"]
        resolver.release.set()
    assert resolver.calls == ["hang.test", "ok.test"] and answers == [["127.0.0.1"]] * 2


# -- happy eyeballs ---------------------------------------------------------------------------------


async def test_an_address_that_drops_packets_costs_the_stagger_not_the_attempt(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """The name's first address never answers (its SYNs vanish): the second is tried beside it
    after the stagger, wins, and the first attempt is cancelled."""
    connect = connections._connect_address
    attempts: list[str] = []

    async def black_hole_first(address: str, port: int) -> trio.SocketStream:
        attempts.append(address)
        if address == "127.0.0.2":
            await trio.sleep_forever()
        return await connect(address, port)

    monkeypatch.setattr(connections, "_connect_address", black_hole_first)
    policy = PinnedNames(allow_http=True, allow_hosts=frozenset({"two.test"}), pinned="two.test")
    policy = replace(policy, addresses=("127.0.0.2", "127.0.0.1"))
    async with serve(answer(OK)) as server, ConnectionSet(policy) as client:
        start = trio.current_time()
        result = await send(client, server.url(host="two.test"), timeout_s=5)
        elapsed = trio.current_time() - start
    assert result.outcome is Outcome.SUCCESS, result
    assert CONNECT_STAGGER_S <= elapsed < CONNECT_STAGGER_S + 0.05
    assert attempts == ["127.0.0.2", "127.0.0.1"] and server.connections == 1


async def test_a_refused_address_moves_on_at_once(autojump_clock: trio.testing.MockClock) -> None:
    policy = PinnedNames(allow_http=True, allow_hosts=frozenset({"two.test"}), pinned="two.test")
    policy = replace(policy, addresses=("127.0.0.2", "127.0.0.1"))  # the server listens on 127.0.0.1 only
    async with serve(answer(OK)) as server, ConnectionSet(policy) as client:
        start = trio.current_time()
        result = await send(client, server.url(host="two.test"))
        elapsed = trio.current_time() - start
    assert result.outcome is Outcome.SUCCESS and elapsed < CONNECT_STAGGER_S


async def test_no_address_answers() -> None:
    policy = PinnedNames(allow_http=True, allow_hosts=frozenset({"two.test"}), pinned="two.test")
    policy = replace(policy, addresses=("127.0.0.2", "127.0.0.3"))
    async with serve(answer(OK)) as server, ConnectionSet(policy) as client:
        result = await send(client, server.url(host="two.test"))
    assert result.outcome is Outcome.CONNECTION, result
    assert "('127.0.0.2', " in result.error and "('127.0.0.3', " in result.error


async def test_an_actor_waiting_out_an_open_breaker_closes_its_idle_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An actor kept because its breaker is open sends nothing, so no request takes (and
    prunes) its idle connections: the dispatcher's sweep closes them once past their keep-alive."""
    monkeypatch.setattr(connections, "KEEPALIVE_S", 0.3)
    closed: list[int] = []
    failing = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"

    async def fails_and_keeps_alive(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(failing)
        closed.append(peer.number)

    engine = local_engine(
        tmp_path, actor_idle_s=0.4, breaker=BreakerPolicy(failure_threshold=1), retry=RetryPolicy(base_s=60)
    )
    async with serve(fails_and_keeps_alive) as server, trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url=server.url()))
        await engine.publish([EventInput("order", "created", {}, {})], batch=False)
        with trio.fail_after(10):
            while not closed:
                await trio.sleep(0.05)
        assert closed == [1] and len(server.requests) == 1
        [stats] = (await engine.health_snapshot(urls=[server.url()])).destinations
        assert stats.breaker_state is BreakerState.OPEN  # the actor is still there
        nursery.cancel_scope.cancel()


async def test_a_request_the_owner_may_no_longer_send_is_not_sent() -> None:
    """In a cluster a node may send to a destination only while it holds its lease. Looking the
    name up and connecting can outlast the lease, so the hold is asked again with a connection
    ready, just before the first byte: refused, nothing reaches the destination, the request is
    reported NotSent (not a failure to record), and the connection is kept for later."""
    allowed = [True]

    async def answers(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(OK)

    async with serve(answers) as server, ConnectionSet(LOCAL, may_send=lambda: allowed[0]) as client:
        assert (await send(client, server.url())).outcome is Outcome.SUCCESS
        allowed[0] = False
        with pytest.raises(connections.NotSent):
            await send(client, server.url())  # on the idle connection
        assert len(server.requests) == 1 and repr(client) == "<ConnectionSet idle=1>"
        client.close()
        with pytest.raises(connections.NotSent):
            await send(client, server.url())  # on a new connection
        assert len(server.requests) == 1
        allowed[0] = True
        assert (await send(client, server.url())).outcome is Outcome.SUCCESS
        assert len(server.requests) == 2
