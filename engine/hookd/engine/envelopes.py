"""The JSON body destinations receive, and the events hookd publishes about itself.

Kept apart from the engine's front door so the store's operations can publish an operational
event (``webhook.disabled``) in the same transaction as the change it reports.
"""

from __future__ import annotations

import datetime
from typing import Any

from hookd.engine.ids import new_event_id
from hookd.engine.jobs import PreparedEvent
from hookd.engine.validation import to_json


def rfc3339(epoch: float) -> str:
    stamp = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event_id: str, event_type: str, epoch: float, data_json: str, related_json: str) -> str:
    """The JSON body every destination receives for an event, around data already serialised."""
    head = to_json({"id": event_id, "type": event_type, "timestamp": rfc3339(epoch)})
    return f'{head[:-1]},"data":{data_json},"related":{related_json}}}'


def operational_event(resource: str, event: str, data: dict[str, Any], now: float) -> PreparedEvent:
    """An event hookd itself publishes (a catalogue type callers may not publish), ready to store."""
    event_id = new_event_id()
    event_type = f"{resource}.{event}"
    body = envelope(event_id, event_type, now, to_json(data), "{}")
    return PreparedEvent(event_id, event_type, resource, event, now, body, "")
