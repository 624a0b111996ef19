"""Conversions between stored rows (dicts keyed by column) and the engine's dataclasses."""

from __future__ import annotations

import json
from typing import Any

from hookd.engine.model import (
    AttemptRecord,
    Auth,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    InactivePolicy,
    Ordering,
    Outcome,
    Status,
    Webhook,
)


def auth_to_json(auth: Auth) -> str:
    return json.dumps(
        {
            "kind": auth.kind,
            "token": auth.token,
            "username": auth.username,
            "password": auth.password,
            "headers": auth.headers,
        }
    )


def auth_from_json(text: str) -> Auth:
    raw = json.loads(text) if text else {}
    return Auth(
        kind=raw.get("kind", "none"),
        token=raw.get("token", ""),
        username=raw.get("username", ""),
        password=raw.get("password", ""),
        headers=dict(raw.get("headers", {})),
    )


#: The webhook columns hookd writes (``seq``, the paging position, is set once at insert).
WEBHOOK_COLUMNS = (
    "id",
    "resource",
    "event",
    "url",
    "auth",
    "secret",
    "previous_secret",
    "previous_secret_expires",
    "status",
    "inactive_policy",
    "description",
    "rate_limit",
    "timeout_s",
    "create_time",
    "update_time",
    "ordering",
    "disabled_reason",
    "disable_time",
    "version",
)


def webhook_to_row(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "resource": webhook.resource,
        "event": webhook.event,
        "url": webhook.url,
        "auth": auth_to_json(webhook.auth),
        "secret": webhook.secret,
        "previous_secret": webhook.previous_secret,
        "previous_secret_expires": webhook.previous_secret_expires,
        "status": webhook.status.value,
        "inactive_policy": webhook.inactive_policy.value,
        "description": webhook.description,
        "rate_limit": webhook.rate_limit,
        "timeout_s": webhook.timeout_s,
        "create_time": webhook.create_time,
        "update_time": webhook.update_time,
        "ordering": webhook.ordering.value,
        "disabled_reason": webhook.disabled_reason,
        "disable_time": webhook.disable_time,
        "version": webhook.version,
    }


def webhook_from_row(row: dict[str, Any]) -> Webhook:
    return Webhook(
        id=row["id"],
        resource=row["resource"],
        event=row["event"],
        url=row["url"],
        auth=auth_from_json(row["auth"]),
        secret=row["secret"],
        previous_secret=row["previous_secret"] or "",
        previous_secret_expires=row["previous_secret_expires"] or 0.0,
        status=Status(row["status"]),
        inactive_policy=InactivePolicy(row["inactive_policy"]),
        description=row["description"] or "",
        rate_limit=row["rate_limit"] or 0.0,
        timeout_s=row["timeout_s"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        ordering=Ordering(row["ordering"]),
        disabled_reason=row["disabled_reason"],
        disable_time=row["disable_time"],
        version=row["version"],
    )


def event_from_row(row: dict[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"],
        type=row["type"],
        create_time=row["create_time"],
        envelope=row["envelope"],
        idempotency_key=row["idempotency_key"] or "",
        delivery_count=row["delivery_count"],
    )


def delivery_from_row(row: dict[str, Any]) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        event_id=row["event_id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        state=DeliveryState(row["state"]),
        attempt_count=row["attempt_count"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def attempt_from_row(row: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        url=row["url"],
        start_time=row["start_time"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        outcome=Outcome(row["outcome"]),
        error=row["error"],
        response_excerpt=row["response_excerpt"],
    )
