"""Python client for hookd.

from hookd.client import HookdClient

with HookdClient("127.0.0.1:50051") as hookd:
    hook = hookd.create_webhook("order", "created", "https://example.com/hooks")
    hookd.publish_event("order", "created", data={"id": 1001})
"""

from hookd.client.client import HookdClient
from hookd.client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    HookdError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HookdClient",
    "HookdError",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
