"""What publishing hands to the actors, and what an attempt hands back to the store."""

from __future__ import annotations

from dataclasses import dataclass, field

from hookd.engine.model import Outcome


@dataclass(slots=True)
class Job:
    """A delivery loaded in memory, ready to send. The envelope is the exact request body."""

    delivery_id: int
    webhook_id: str
    event_id: str
    envelope: str
    attempt_count: int
    #: A TestWebhook ping: sent once, never retried.
    single_attempt: bool = False


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event validated and serialised, ready to store."""

    id: str
    type: str
    resource: str
    event: str
    create_time: float
    envelope: str
    idempotency_key: str


@dataclass(slots=True)
class PublishResult:
    """What storing one event produced."""

    event_id: str
    delivery_count: int
    duplicate: bool
    jobs: list[tuple[str, Job]] = field(default_factory=list)  # (destination URL, job)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one HTTP request, as recorded."""

    url: str
    start_time: float
    duration_ms: float
    status_code: int
    outcome: Outcome
    error: str
    response_excerpt: str
    retry_after_s: float | None = None
    location: str = ""


def internal_failure(url: str, now: float) -> AttemptResult:
    """The attempt hookd itself broke (a bug, logged): recorded so that it counts."""
    return AttemptResult(
        url=url,
        start_time=now,
        duration_ms=0.0,
        status_code=0,
        outcome=Outcome.INTERNAL,
        error="hookd failed while sending this delivery (see the server log)",
        response_excerpt="",
    )
