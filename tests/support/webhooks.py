"""Webhooks as the store holds them, for tests of the store's operations below the engine."""

from __future__ import annotations

from typing import Any

from hookd.engine.model import Auth, InactivePolicy, Status, Webhook


def stored_webhook(webhook_id: str, **fields: Any) -> Webhook:
    """An active order.created webhook to a closed loopback port; ``fields`` override."""
    values: dict[str, Any] = {
        "resource": "order",
        "event": "created",
        "url": "http://127.0.0.1:9/hook",
        "auth": Auth(),
        "secret": f"whsec_{webhook_id}",
        "status": Status.ACTIVE,
        "inactive_policy": InactivePolicy.QUEUE,
        "description": "",
        "rate_limit": 0.0,
        "timeout_s": 10.0,
        "create_time": 1.0,
        "update_time": 1.0,
    }
    return Webhook(id=webhook_id, **(values | fields))
