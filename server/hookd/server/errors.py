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

from hookd.engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    HookdError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger("hookd.server")

CODES: dict[type[HookdError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_for(error: HookdError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in CODES:
            return CODES[kind]  # type: ignore[index]
    return grpc.StatusCode.INVALID_ARGUMENT


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def grpc_errors(handler: F) -> F:
    """Wrap a unary servicer method so that errors end the call with the right status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await handler(self, request, context)
        except HookdError as error:
            code, message = status_for(error), error.message
        except Exception:
            log.exception("internal error in %s", handler.__name__)
            code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
        await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
