"""Connections to one destination: SSRF-guarded connects, TLS, and a keep-alive stack.

A general pool scans every connection on every request (httpcore probes each idle socket with a
syscall), which at 16 connections costs more than the request itself. An actor only ever talks
to one origin and never has more requests open than its in-flight limit, so it keeps a plain
stack of idle connections: a request takes the most recently used one, checks that one alone,
and gives it back when its response was read to the end and the peer keeps it alive.

Every connection goes to an address the destination policy resolved and checked itself, never
to a name, so a DNS answer that changes between check and connect reaches nothing new; and a
plain-http one only while the policy allows http, so a webhook saved under ``--allow-http`` stops
once the flag is gone. A name with several addresses is connected to as RFC 8305 says (happy
eyeballs): the next address is tried after a short stagger, or at once when one fails, and the
first to connect wins, so an address that drops packets costs a quarter second, not the attempt.

The stack is ordered by the time each connection went idle, oldest at the bottom. A request
takes from the top, so under steady traffic the connections of a past burst sink and are never
taken again: each take closes those at the bottom idle past ``KEEPALIVE_S`` (one comparison when
none is), and ``close_expired`` does it for an actor that takes nothing (parked, or waiting out
an open breaker), so no connection stays open, or half-closed by its peer, for ever.

A destination may close an idle connection just as it is reused (its keep-alive timeout ran
out, the close is still on the wire). A request that fails that way, on a reused connection and
before any byte of the response arrived, is sent once more on a fresh connection, as browsers
and httpcore do; a fresh connection's failure is the attempt's.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import trio

from hookd.engine.destinations import DestinationBlocked, DestinationPolicy, DestinationUnresolvable
from hookd.engine.http11 import ConnectionLost, ResponseParser, Target, target_of

#: An idle connection older than this is closed instead of reused.
KEEPALIVE_S = 30.0
RECEIVE_BYTES = 65536
#: How long a connection attempt to one address goes unanswered before the next address is
#: tried beside it (RFC 8305 recommends 250 ms).
CONNECT_STAGGER_S = 0.25


class TLSFailure(Exception):
    """TLS with the destination failed: its certificate or name did not verify, or it sent a TLS
    alert. The message is the TLS library's, such as ``[SSL: CERTIFICATE_VERIFY_FAILED] ...``."""


def _tls_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a broken stream (trio raises BrokenResourceError from it)."""
    cause = error.__cause__
    return cause if isinstance(cause, ssl.SSLError) else None


def _broken(error: trio.BrokenResourceError, *, response_started: bool) -> Exception:
    """What a broken stream means for the exchange: a TLS failure, or a lost connection."""
    tls = _tls_error(error)
    if tls is not None:
        return TLSFailure(str(tls) or type(tls).__name__)
    cause = error.__cause__
    detail = f": {cause}" if cause is not None and str(cause) else ""
    return ConnectionLost(f"the connection broke{detail}", response_started=response_started)


class Connection:
    """One open connection to one origin."""

    __slots__ = ("_socket", "_stream", "idle_since", "origin")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType, origin: tuple[bool, str, int]) -> None:
        self._stream = stream
        self._socket = socket
        self.origin = origin
        self.idle_since = 0.0

    def __repr__(self) -> str:
        tls, host, port = self.origin
        return f"<Connection {'https' if tls else 'http'}://{host}:{port} fd={self._socket.fileno()}>"

    def is_usable(self, origin: tuple[bool, str, int], now: float) -> bool:
        """Same origin, not idle too long, and silent: anything readable on an idle connection
        is the peer's close, or bytes that would be mistaken for the next response."""
        return origin == self.origin and now - self.idle_since < KEEPALIVE_S and not self._socket.is_readable()

    def close(self) -> None:
        """Close at once, without a TLS close_notify: a peer that stopped reading cannot block it."""
        self._socket.close()

    async def exchange(self, request: bytes, response: ResponseParser) -> bool:
        """Send the request and read the response into ``response``; return whether the
        connection may carry another request.

        Raises ConnectionLost, TLSFailure (an alert after the handshake) or
        MalformedResponse.
        """
        send_error: trio.BrokenResourceError | None = None
        try:
            await self._stream.send_all(request)
        except trio.BrokenResourceError as error:
            # A destination may answer early (a 413 before the body is in) and close: read what it said.
            send_error = error
        while not response.done:
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except trio.BrokenResourceError as error:
                raise _broken(send_error or error, response_started=response.started) from error
            if not data:
                if send_error is not None and not response.started:
                    raise _broken(send_error, response_started=False) from send_error
                response.feed_eof()
                return False
            response.feed(data)
        return response.reusable


async def _connect_address(address: str, port: int) -> trio.SocketStream:
    """A TCP connection to one checked address (never a name). Raises OSError."""
    family = trio.socket.AF_INET6 if ":" in address else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((address, port))  # its OSError names the address
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def _interleaved(addresses: list[str]) -> list[str]:
    """The resolver's order with the first address of the other family moved second (RFC 8305
    section 4), so a broken IPv6 path costs one stagger, not one per IPv6 address."""
    first_v6 = ":" in addresses[0]
    other = next((i for i, address in enumerate(addresses) if (":" in address) != first_v6), None)
    if other is None or other == 1:
        return addresses
    return [addresses[0], addresses[other], *addresses[1:other], *addresses[other + 1 :]]


async def _open_tcp(addresses: list[str], port: int) -> trio.SocketStream:
    """A TCP connection to the first of ``addresses`` that answers, trying them staggered by
    ``CONNECT_STAGGER_S`` (or at once after a failure). Raises OSError."""
    if not addresses:
        raise DestinationUnresolvable("the host name resolved to no address")
    if len(addresses) == 1:
        return await _connect_address(addresses[0], port)
    winner: trio.SocketStream | None = None
    failures: list[OSError] = []

    async def attempt(address: str, failed: trio.Event) -> None:
        nonlocal winner
        try:
            stream = await _connect_address(address, port)
        except OSError as error:
            failures.append(error)
            failed.set()
            return
        if winner is not None:  # two connected in one scheduling round: keep the first
            stream.socket.close()
            return
        winner = stream
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for address in _interleaved(addresses):
                failed = trio.Event()
                nursery.start_soon(attempt, address, failed)
                with trio.move_on_after(CONNECT_STAGGER_S):
                    await failed.wait()
    except BaseException:
        if winner is not None:  # cancelled from outside just as one connected
            winner.socket.close()
        raise
    if winner is None:
        raise OSError(f"no address of the host answered: {'; '.join(map(str, failures))}")
    return winner


class NotSent(Exception):
    """The request was not sent: ``may_send`` said no once a connection was ready (in a cluster,
    the node's hold on the destination ran out while it looked the name up or connected)."""


class ConnectionSet:
    """Keep-alive HTTP/1.1 connections to one destination, one per request in flight.

    ``may_send``, asked with a connection ready, just before the request's first byte goes (with
    no wait in between), says whether it may still go: looking a name up and connecting can take
    seconds, and in a cluster the node's lease on the destination may run out meanwhile, after
    which another node may send the same delivery.
    """

    def __init__(
        self,
        policy: DestinationPolicy,
        ssl_context: ssl.SSLContext | None = None,
        *,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        self._policy = policy
        self._ssl_context = ssl_context or policy.tls_context()
        self._idle: list[Connection] = []
        self._target: tuple[str, Target] | None = None
        self._may_send = may_send

    def __repr__(self) -> str:
        return f"<ConnectionSet idle={len(self._idle)}>"

    def close(self) -> None:
        """Close every idle connection (those in use close when their exchange ends)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def __aenter__(self) -> ConnectionSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def target(self, url: str) -> Target:
        """``url`` parsed, once for as long as it stays the one requested (an actor's URL changes
        only when its webhooks' does). Raises RequestNotEncodable."""
        if self._target is None or self._target[0] != url:
            self._target = (url, target_of(url))
        return self._target[1]

    async def exchange(self, target: Target, request: bytes, response: ResponseParser) -> None:
        """Send ``request`` to ``target`` and read the answer into ``response``.

        Raises DestinationBlocked, DestinationUnresolvable, OSError (no connection),
        TLSFailure, ConnectionLost or MalformedResponse.
        """
        connection = self._take_idle(target.origin)
        if connection is not None:
            try:
                await self._run(connection, request, response)
                return
            except ConnectionLost as lost:
                if lost.response_started:
                    raise
        await self._run(await self._connect(target), request, response)

    def close_expired(self) -> None:
        """Close the idle connections past ``KEEPALIVE_S``: for an owner that takes none for a
        while (a parked actor, one waiting out an open breaker), from a periodic sweep."""
        self._close_expired(trio.current_time())

    def _close_expired(self, now: float) -> None:
        idle = self._idle
        while idle and now - idle[0].idle_since >= KEEPALIVE_S:
            idle.pop(0).close()

    def _take_idle(self, origin: tuple[bool, str, int]) -> Connection | None:
        now = trio.current_time()
        self._close_expired(now)
        while self._idle:
            connection = self._idle.pop()
            if connection.is_usable(origin, now):
                return connection
            connection.close()
        return None

    async def _run(self, connection: Connection, request: bytes, response: ResponseParser) -> None:
        """Raises NotSent, with the connection kept for later, when ``may_send`` says no."""
        if self._may_send is not None and not self._may_send():
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
            raise NotSent("this node no longer holds the destination; the request was not sent")
        reusable = False
        try:
            reusable = await connection.exchange(request, response)
        finally:
            if reusable:
                connection.idle_since = trio.current_time()
                self._idle.append(connection)
            else:
                connection.close()

    async def _connect(self, target: Target) -> Connection:
        """A new connection to an address the policy checked, TLS verified when https; plain
        http only while the policy allows it. Raises DestinationBlocked."""
        if not target.tls and not self._policy.allow_http:
            raise DestinationBlocked("plain http is not allowed (https only; see --allow-http)")
        addresses = await self._policy.resolve(target.host, target.port)
        tcp = await _open_tcp(addresses, target.port)
        if not target.tls:
            return Connection(tcp, tcp.socket, target.origin)
        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=target.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as error:
            tcp.socket.close()
            raise _broken(error, response_started=False) from error
        except BaseException:
            tcp.socket.close()
            raise
        return Connection(tls, tcp.socket, target.origin)
