"""Bearer-token authentication for callers of hookd (the gRPC API and the metrics endpoint).

Tokens are compared in constant time and never logged. Health checks and reflection can stay
open so that load balancers and grpcurl work without a token, if the operator wants that.

Refused attempts are logged (method, peer address, why: a token missing or invalid), at most
one line per peer address and reason per ``FailureLog.every_s``, so that someone guessing
tokens is seen without being able to flood the log; the next line says how many were left out.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from hookd.server.sockets import peer_address

log = logging.getLogger("hookd.auth")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
MISSING, INVALID = "missing", "invalid"


class TokenCheck:
    """The configured tokens, and the one test every caller's ``authorization`` value passes."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = [token.encode() for token in tokens]

    def refusal(self, authorization: str | bytes | None) -> str | None:
        """None when ``authorization`` carries a valid bearer token; else why not (MISSING or
        INVALID)."""
        text = authorization.decode(errors="replace") if isinstance(authorization, bytes) else authorization or ""
        presented = text[7:].strip().encode() if text[:7].lower() == "bearer " else b""
        if not presented:
            return MISSING
        # Compare against every token, always, so timing says nothing about which one was close.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return None if matched else INVALID


class FailureLog:
    """Logs refused attempts, at most one line per (peer address, reason) per ``every_s``.

    Keeps at most ``max_peers`` peers; beyond that (addresses sprayed from a large network),
    the others share one entry, so memory stays bounded too.
    """

    def __init__(
        self, every_s: float = 60.0, *, max_peers: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self._max_peers = max_peers
        self._clock = clock
        #: (peer address, reason) -> (when a line was last written, attempts left out since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def _key(self, peer: str, reason: str, now: float) -> tuple[str, str]:
        address = peer_address(peer)
        key = (str(address[0]) if address else peer, reason)
        if key not in self._seen and len(self._seen) >= self._max_peers:
            for old in [k for k, (when, _) in self._seen.items() if now - when >= self.every_s]:
                del self._seen[old]
            if len(self._seen) >= self._max_peers:
                key = ("other peers", reason)
        return key

    def refused(self, method: str, peer: str, reason: str) -> None:
        now = self._clock()
        key = self._key(peer, reason, now)
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return
        self._seen[key] = (now, 0)
        # suppressed: attempts from this address, for this reason, left out since its last line.
        log.warning(
            "authentication failed method=%s peer=%s reason=%s suppressed=%d",
            method,
            peer,
            reason,
            last[1] if last else 0,
        )


def _deny(kind: str, method: str, reason: str, failures: FailureLog) -> grpc.RpcMethodHandler[Any, Any]:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        failures.refused(method, context.peer(), reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    if kind == "unary_unary":
        return grpc.unary_unary_rpc_method_handler(abort)
    if kind == "unary_stream":
        return grpc.unary_stream_rpc_method_handler(abort)
    if kind == "stream_unary":
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.stream_stream_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, check: TokenCheck, failures: FailureLog, *, open_health: bool, open_reflection: bool) -> None:
        self._check = check
        self._failures = failures
        self._open: tuple[str, ...] = tuple(
            prefix
            for prefix, is_open in ((HEALTH_PREFIX, open_health), (REFLECTION_PREFIX, open_reflection))
            if is_open
        )

    def _refusal(self, metadata: Any) -> str | None:
        authorization = None
        for key, value in metadata or ():
            if key == "authorization":
                authorization = value
        return self._check.refusal(authorization)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method or ""
        if method.startswith(self._open):
            return await continuation(handler_call_details)
        reason = self._refusal(handler_call_details.invocation_metadata)
        if reason is None:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return _deny("unary_unary", method, reason, self._failures)
        kind = (
            ("stream" if handler.request_streaming else "unary")
            + "_"
            + ("stream" if handler.response_streaming else "unary")
        )
        return _deny(kind, method, reason, self._failures)
