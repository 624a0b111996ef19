"""gRPC status codes as named exceptions, so callers catch ``NotFound`` rather than inspect codes."""

from __future__ import annotations

import grpc


class HookdError(Exception):
    """A call to hookd failed. ``code`` is the gRPC status code, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgument(HookdError):
    """The request was malformed; ``details`` names the field."""


class NotFound(HookdError):
    """The named resource does not exist."""


class AlreadyExists(HookdError):
    """An identical webhook already exists."""


class FailedPrecondition(HookdError):
    """The resource's state does not allow the operation."""


class Unauthenticated(HookdError):
    """No valid bearer token was presented."""


class Unavailable(HookdError):
    """The server could not be reached."""


class ResourceExhausted(HookdError):
    """A limit was reached: the request was too large, or the server holds too many watchers."""


_BY_CODE: dict[grpc.StatusCode, type[HookdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(error: grpc.RpcError) -> HookdError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return _BY_CODE.get(code, HookdError)(code, details or "")
