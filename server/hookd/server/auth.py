"""Bearer-token authentication for callers of hookd.

Tokens are compared in constant time and never logged. Health checks and reflection can stay
open so that load balancers and grpcurl work without a token, if the operator wants that.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."


def _deny(kind: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    if kind == "unary_unary":
        return grpc.unary_unary_rpc_method_handler(abort)
    if kind == "unary_stream":
        return grpc.unary_stream_rpc_method_handler(abort)
    if kind == "stream_unary":
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.stream_stream_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, tokens: tuple[str, ...], *, open_health: bool, open_reflection: bool) -> None:
        self._tokens = [token.encode() for token in tokens]
        self._open: tuple[str, ...] = tuple(
            prefix
            for prefix, is_open in ((HEALTH_PREFIX, open_health), (REFLECTION_PREFIX, open_reflection))
            if is_open
        )

    def _valid(self, metadata: Any) -> bool:
        presented = b""
        for key, value in metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                if text[:7].lower() == "bearer ":
                    presented = text[7:].strip().encode()
        # Compare against every token, always, so timing says nothing about which one was close.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched and bool(presented)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method or ""
        if method.startswith(self._open) or self._valid(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return _deny("unary_unary")
        kind = (
            ("stream" if handler.request_streaming else "unary")
            + "_"
            + ("stream" if handler.response_streaming else "unary")
        )
        return _deny(kind)
