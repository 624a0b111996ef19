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


class DeadlineExceeded(HookdError):
    """No answer came within the call's deadline (``HookdClient(timeout=...)``): the server is
    hung or far too busy, or the network lost the call. hookd itself never answers with this code,
    so it always means the client gave up waiting; ``deadline_s`` says after how long, when known.
    """

    def __init__(self, code: grpc.StatusCode, details: str, deadline_s: float | None = None) -> None:
        if deadline_s is not None:
            details = f"no answer within {deadline_s:g} s"
        super().__init__(code, details)
        self.deadline_s = deadline_s


_BY_CODE: dict[grpc.StatusCode, type[HookdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError, deadline_s: float | None = None) -> HookdError:
    """The named exception for ``error``; ``deadline_s`` is the deadline the call was given, which
    gRPC's own message for an expired one ("Deadline Exceeded") does not say."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    named = _BY_CODE.get(code, HookdError)
    if named is DeadlineExceeded:
        return DeadlineExceeded(code, details or "", deadline_s)
    return named(code, details or "")
