"""The store's event catalogue: which (resource, event) pairs exist.

Most types are the store platform's, published by callers. ``webhook`` types are hookd's own
operational events (``webhook.disabled``): webhooks subscribe to them like any other, so an ops
system hears of them, but only hookd publishes them.
"""

from __future__ import annotations

from hookd.engine.errors import InvalidArgument

CATALOGUE: dict[str, tuple[str, ...]] = {
    "order": ("created", "updated", "fulfilled", "cancelled"),
    "product": ("created", "updated", "deleted", "inventory_updated"),
    "customer": ("created", "updated", "deleted"),
    "payment": ("completed", "failed", "refunded"),
    "shipping": ("label_created", "tracking_updated", "delivered"),
    "webhook": ("disabled",),
}

#: Resources whose events hookd publishes itself; PublishEvent refuses them.
OPERATIONAL = frozenset({"webhook"})
#: A webhook hookd disabled because every attempt failed for ``--auto-disable-after``.
WEBHOOK_DISABLED = ("webhook", "disabled")

#: Type of the synthetic event TestWebhook sends; no webhook subscribes to it.
PING_TYPE = "webhook.ping"


def event_types() -> list[tuple[str, str]]:
    """Every (resource, event) pair, in catalogue order."""
    return [(resource, event) for resource, events in CATALOGUE.items() for event in events]


def check_event_type(resource: str, event: str, *, field_prefix: str = "") -> str:
    """Validate a pair and return its type name (``order.created``).

    The error lists the valid choices so a caller can fix the request without reading docs.
    """
    if resource not in CATALOGUE:
        raise InvalidArgument(
            f"{field_prefix}resource",
            f"unknown resource {resource[:100]!r}; valid resources: {', '.join(CATALOGUE)}",
        )
    if event not in CATALOGUE[resource]:
        raise InvalidArgument(
            f"{field_prefix}event",
            f"unknown event {event[:100]!r} for resource {resource!r}; valid events: {', '.join(CATALOGUE[resource])}",
        )
    return f"{resource}.{event}"


def check_filter(resource: str, event: str) -> None:
    """ListWebhooks' resource and event filters name catalogue entries (or are empty): a typo is
    an error that lists the choices, not an empty page."""
    if resource:
        if event:
            check_event_type(resource, event)
        elif resource not in CATALOGUE:
            raise InvalidArgument(
                "resource", f"unknown resource {resource[:100]!r}; valid resources: {', '.join(CATALOGUE)}"
            )
    elif event and not any(event in events for events in CATALOGUE.values()):
        known = sorted({name for events in CATALOGUE.values() for name in events})
        raise InvalidArgument("event", f"unknown event {event[:100]!r}; valid events: {', '.join(known)}")


def check_publishable(resource: str, *, field_prefix: str = "") -> None:
    """Callers publish the store's events, never hookd's own."""
    if resource in OPERATIONAL:
        raise InvalidArgument(
            f"{field_prefix}resource",
            f"{resource} events are published by hookd itself; webhooks may subscribe to them",
        )
