"""Plain data the engine passes around; no I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    """Whether a webhook receives events."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class InactivePolicy(enum.Enum):
    """What an inactive webhook does with its events."""

    QUEUE = "QUEUE"
    DISCARD = "DISCARD"


class Ordering(enum.Enum):
    """Whether a webhook's deliveries may overlap (UNORDERED) or go one at a time in publish order."""

    UNORDERED = "UNORDERED"
    ORDERED = "ORDERED"


class DeliveryState(enum.Enum):
    """Where a delivery stands. Values are stored in SQLite."""

    PENDING = "PENDING"
    HELD = "HELD"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DISCARDED = "DISCARDED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """Settled for good unless someone sends it again (RetryDelivery, RecoverDeliveries)."""
        return self not in (DeliveryState.PENDING, DeliveryState.HELD)


class Outcome(enum.Enum):
    """How an attempt ended. Names match the proto enum ``hookd.v1.Outcome``."""

    SUCCESS = "SUCCESS"
    TIMEOUT = "TIMEOUT"
    CONNECTION = "CONNECTION"
    TLS = "TLS"
    DNS = "DNS"
    AUTH_FAILURE = "AUTH_FAILURE"
    RATE_LIMITED = "RATE_LIMITED"
    CLIENT_ERROR = "CLIENT_ERROR"
    SERVER_ERROR = "SERVER_ERROR"
    INVALID_RESPONSE = "INVALID_RESPONSE"
    BLOCKED = "BLOCKED"
    INTERNAL = "INTERNAL"

    @property
    def trips_breaker(self) -> bool:
        """Failures that say the destination is down or overloaded, not that the request was wrong."""
        return self in _BREAKER_OUTCOMES


_BREAKER_OUTCOMES = frozenset(
    {
        Outcome.TIMEOUT,
        Outcome.CONNECTION,
        Outcome.TLS,
        Outcome.DNS,
        Outcome.SERVER_ERROR,
        Outcome.INVALID_RESPONSE,
    }
)


@dataclass(frozen=True, slots=True)
class Auth:
    """Destination authentication. ``kind`` is none, bearer, basic or headers."""

    kind: str = "none"
    token: str = ""
    username: str = ""
    password: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        """Headers that carry this authentication on a request."""
        import base64

        if self.kind == "bearer":
            return {"authorization": f"Bearer {self.token}"}
        if self.kind == "basic":
            raw = f"{self.username}:{self.password}".encode()
            return {"authorization": "Basic " + base64.b64encode(raw).decode()}
        if self.kind == "headers":
            return dict(self.headers)
        return {}


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as stored. Secrets are in clear here; masking is the API layer's job."""

    id: str
    resource: str
    event: str
    url: str
    auth: Auth
    secret: str
    status: Status
    inactive_policy: InactivePolicy
    description: str
    rate_limit: float
    timeout_s: float
    create_time: float
    update_time: float
    previous_secret: str = ""
    previous_secret_expires: float = 0.0
    ordering: Ordering = Ordering.UNORDERED
    #: Why hookd switched the webhook off by itself (auto-disable), and when; empty and 0 otherwise.
    disabled_reason: str = ""
    disable_time: float = 0.0
    #: One more with every committed change (the store sets it): which of two copies is newer.
    version: int = 0

    def signing_secrets(self, now: float) -> list[str]:
        """Secrets that sign a request sent at ``now``: the current one, and the previous one in its grace period."""
        if self.previous_secret and now < self.previous_secret_expires:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """ListWebhooks' filters; empty strings and None match everything."""

    resource: str = ""
    event: str = ""
    status: Status | None = None
    query: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event. ``envelope`` is the exact JSON body destinations receive."""

    id: str
    type: str
    create_time: float
    envelope: str
    idempotency_key: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A stored delivery: one event on its way to one webhook."""

    id: int
    event_id: str
    webhook_id: str
    event_type: str
    state: DeliveryState
    attempt_count: int
    next_attempt_at: float
    last_error: str
    create_time: float
    update_time: float
    #: For an ordered webhook's pending delivery: the delivery it waits behind (0: none).
    waiting_for: int = 0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP request made for a delivery."""

    id: int
    delivery_id: int
    webhook_id: str
    url: str
    start_time: float
    duration_ms: float
    status_code: int
    outcome: Outcome
    error: str
    response_excerpt: str


def message_id(delivery_id: int) -> str:
    """The ``webhook-id`` header of a delivery: the same on every attempt so receivers can dedupe."""
    return f"msg_{delivery_id:010d}"
