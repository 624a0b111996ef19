"""Connections to one destination: the SSRF-guarded network backend and a keep-alive set.

httpx's pool scans every connection on every request (and probes each idle socket with a
syscall), which at 16 connections costs more than the request itself. An actor only ever talks
to one origin and never has more requests open than its in-flight limit, so it keeps a plain
stack of idle httpcore connections instead: a request takes the most recently used one, checks
that one alone, and gives it back when the response is done.
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore
import trio

from hookd.engine.destinations import DestinationPolicy

KEEPALIVE_S = 30.0


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, checks every address against the policy, and connects to the
    checked address, so the name cannot resolve elsewhere between check and connect."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.resolve(host, port)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class ConnectionSet:
    """Keep-alive HTTP/1.1 connections to one destination, one per request in flight."""

    def __init__(self, policy: DestinationPolicy, ssl_context: ssl.SSLContext | None = None) -> None:
        self._backend = GuardedBackend(policy)
        self._ssl_context = ssl_context or policy.tls_context()
        self._idle: list[httpcore.AsyncHTTPConnection] = []

    async def __aenter__(self) -> ConnectionSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        idle, self._idle = self._idle, []
        with trio.CancelScope(shield=True):
            for connection in idle:
                await connection.aclose()

    async def _take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.can_handle_request(origin) and connection.is_idle() and not connection.has_expired():
                return connection
            with trio.CancelScope(shield=True):
                await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._ssl_context, keepalive_expiry=KEEPALIVE_S, network_backend=self._backend
        )

    @asynccontextmanager
    async def stream(self, url: str, headers: list[tuple[str, str]], body: bytes) -> AsyncIterator[httpcore.Response]:
        """POST and yield the response; its connection is kept if the exchange ended cleanly."""
        connection = await self._take(httpcore.URL(url).origin)
        reusable = False
        try:
            async with connection.stream("POST", url, headers=headers, content=body) as response:
                yield response
            reusable = connection.is_idle()
        finally:
            if reusable:
                self._idle.append(connection)
            else:
                with trio.CancelScope(shield=True):
                    await connection.aclose()
