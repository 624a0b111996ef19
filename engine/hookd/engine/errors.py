"""The few ways a request can be refused.

Every layer raises these; the gRPC layer maps them to status codes in one place
(``hookd.server.errors``), so callers never see UNKNOWN for something they sent.
"""

from __future__ import annotations


class HookdError(Exception):
    """Base of every error a caller can cause. ``message`` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(HookdError):
    """A request field is malformed or out of range. ``field`` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(HookdError):
    """The named resource does not exist."""


class AlreadyExists(HookdError):
    """An identical resource already exists."""


class FailedPrecondition(HookdError):
    """The resource is not in a state that allows the operation."""


class Unauthenticated(HookdError):
    """The caller did not present valid credentials."""


class Unavailable(HookdError):
    """hookd cannot serve the request now (its store cannot be written or read); retry later."""


class ResourceExhausted(HookdError):
    """A limit was reached (too many webhooks for one event type, too many watchers)."""
