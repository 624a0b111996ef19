"""The one place where engine errors become gRPC status codes.

Anything a caller sent that is wrong maps to a precise code; only a bug in hookd is INTERNAL,
and its details go to the log, never to the caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from hookd.engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    HookdError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("hookd.server")

CODES: dict[type[HookdError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


#: Longest status message sent. Messages may quote what the caller sent, and a status travels in
#: a trailer: clients refuse trailers over 8 KiB, and would see RESOURCE_EXHAUSTED instead.
MAX_DETAILS = 1000


def clip(message: str) -> str:
    return message if len(message) <= MAX_DETAILS else message[: MAX_DETAILS - 3] + "..."


def status_for(error: HookdError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in CODES:
            return CODES[kind]  # type: ignore[index]
    return grpc.StatusCode.INVALID_ARGUMENT


class Undecodable:
    """Stands in for a request whose bytes did not parse (corrupt, or nested deeper than protobuf
    decodes). grpc answers UNKNOWN when a deserializer raises, so the deserializer returns this
    instead and the handler refuses it as the caller's error."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def lenient_decoder(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """A request deserializer that never raises."""
    name = message_class.DESCRIPTOR.full_name

    def decode(raw: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(raw)
        except DecodeError as error:
            return Undecodable(f"the request is not a valid {name}: {error}")

    return decode


async def refuse_undecodable(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """End the call with INVALID_ARGUMENT if the request did not parse."""
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def status_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status that ends a call which raised ``error``; a bug's details go to the log only."""
    if isinstance(error, HookdError):
        return status_for(error), clip(error.message)
    log.error("internal error in %s", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"


def grpc_errors(handler: F) -> F:
    """Wrap a unary servicer method so that errors end the call with the right status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse_undecodable(request, context)
        try:
            return await handler(self, request, context)
        except Exception as error:
            code, message = status_of(error, handler.__name__)
        await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
