"""``hookd.v1.WebhookService`` for browsers and curl: Connect, gRPC-Web and gRPC over HTTP.

The ASGI application is the one connectrpc generates from the proto (``hookd.v1.hookd_connect``).
Each call it routes goes to the same ``WebhookServicer`` method that grpc.aio calls, with a small
context standing in for grpc.aio's: ``abort`` raises the Connect error of the same code,
``invocation_metadata`` is the request's headers, ``write`` hands a streamed message to the HTTP
response. Validation, error mapping, token checks (and the log of refused ones) and the limits on
health watchers are therefore gRPC's own; nothing here knows about webhooks.

The bearer token is checked as gRPC's interceptor checks it, before the request's body is read:
connectrpc runs a leading metadata interceptor (``TokenInterceptor``) before it reads or decodes
the message, so a caller without a token cannot make the loop decode megabytes of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from hookd.server.auth import FailureLog, TokenCheck
from hookd.server.config import MAX_MESSAGE_BYTES
from hookd.server.servicer import WebhookServicer
from hookd.v1 import hookd_pb2 as pb
from hookd.v1.hookd_connect import WebhookService, WebhookServiceASGIApplication

SERVICE = pb.DESCRIPTOR.services_by_name["WebhookService"]
#: The path every method of the service is under, ``/hookd.v1.WebhookService/``.
PATH_PREFIX = f"/{SERVICE.full_name}/"

UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Any]]


def connect_code(code: grpc.StatusCode) -> Code:
    """The Connect code of a gRPC status: the same names, but for the spelling of CANCELLED."""
    name = "CANCELED" if code is grpc.StatusCode.CANCELLED else code.name
    return Code.__members__.get(name, Code.UNKNOWN)


class Aborted(ConnectError, grpc.aio.AbortError):
    """What ``abort`` raises: a Connect error for connectrpc, and grpc.aio's AbortError for the
    servicer's code that tells an abort from other failures (``Watchers``)."""


def grpc_peer(client_address: str | None) -> str:
    """The peer as grpc names it (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``), so the log of
    refused tokens groups HTTP callers by address as it does gRPC ones."""
    host, _, port = (client_address or "").rpartition(":")
    if not host:
        return "http:unknown"
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class ConnectContext:
    """The part of ``grpc.aio.ServicerContext`` that the servicer uses, over a Connect request."""

    __slots__ = ("_ctx", "aborted", "messages")

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        #: A streamed message waits here until the HTTP response takes it (one at a time, so a
        #: client that stops reading makes ``write`` wait, as grpc's flow control does).
        self.messages: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self.aborted: Aborted | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        self.aborted = Aborted(connect_code(code), details)
        raise self.aborted

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._ctx.request_headers.allitems())

    def peer(self) -> str:
        return grpc_peer(self._ctx.client_address)

    async def write(self, message: Any) -> None:
        await self.messages.put(message)


class TokenInterceptor:
    """Refuses a call without a valid bearer token before its body is read (a connectrpc
    ``MetadataInterceptor`` placed first), and logs the refusal as gRPC's interceptor does."""

    def __init__(self, check: TokenCheck, failures: FailureLog) -> None:
        self._check = check
        self._failures = failures

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        reason = self._check.refusal(ctx.request_headers.get("authorization"))
        if reason is not None:
            method = ctx.method
            self._failures.refused(f"/{method.service_name}/{method.name}", grpc_peer(ctx.client_address), reason)
            raise ConnectError(Code.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    async def on_end(self, token: None, ctx: RequestContext[Any, Any], error: Exception | None) -> None:
        return None


class ServicerRoutes:
    """What the generated application calls, method by method (``list_webhooks(request, ctx)``):
    the servicer's own method, with a context that stands in for grpc.aio's.

    A stream ends as soon as ``closing`` is set: a dashboard left open on the health page must
    not hold a shutdown for its whole grace period.
    """

    def __init__(self, servicer: WebhookServicer, closing: asyncio.Event) -> None:
        self._closing = closing
        for method in SERVICE.methods:
            handler = getattr(servicer, method.name)
            route = self._streaming(handler) if method.server_streaming else self._unary(handler)
            setattr(self, snake_case(method.name), route)

    def _unary(self, handler: Handler) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
        async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            return await handler(request, cast(Context, ConnectContext(ctx)))

        return call

    def _streaming(self, handler: Handler) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
        """The servicer writes a stream with ``context.write`` from a coroutine (as grpc.aio
        allows); connectrpc wants a generator. The coroutine runs as a task, and the generator
        yields what it writes until it returns, fails or aborts, or hookd shuts down."""

        async def call(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            context = ConnectContext(ctx)
            task = asyncio.ensure_future(handler(request, cast(Context, context)))
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                while True:
                    taken = asyncio.ensure_future(context.messages.get())
                    await asyncio.wait((taken, task, closing), return_when=asyncio.FIRST_COMPLETED)
                    if taken.done():
                        yield taken.result()
                        continue
                    taken.cancel()
                    if not task.done():  # shutting down: the stream ends normally
                        return
                    while not context.messages.empty():
                        yield context.messages.get_nowait()
                    if context.aborted is not None:
                        raise context.aborted
                    task.result()
                    return
            finally:
                closing.cancel()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

        return call


def snake_case(name: str) -> str:
    """``ListEventTypes`` -> ``list_event_types``: the names the generated application calls."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def connect_application(
    servicer: WebhookServicer, auth: tuple[TokenCheck, FailureLog] | None, closing: asyncio.Event
) -> WebhookServiceASGIApplication:
    """The ASGI application serving the service under ``PATH_PREFIX``, with gRPC's message limit
    and, when tokens are set, their check ahead of everything else."""
    routes = cast(WebhookService, ServicerRoutes(servicer, closing))
    interceptors = [TokenInterceptor(*auth)] if auth is not None else []
    return WebhookServiceASGIApplication(routes, interceptors=interceptors, read_max_bytes=MAX_MESSAGE_BYTES)
