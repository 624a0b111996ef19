"""Conversions between protobuf messages and the engine's types, and resource-name parsing."""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from hookd.engine import NodeInfo, Snapshot, Stats
from hookd.engine.breaker import BreakerState
from hookd.engine.errors import InvalidArgument
from hookd.engine.health import WindowFigures
from hookd.engine.ids import mask
from hookd.engine.jobs import AttemptResult
from hookd.engine.model import (
    AttemptRecord,
    Auth,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    InactivePolicy,
    Ordering,
    Status,
    Webhook,
    message_id,
)
from hookd.engine.validation import WebhookInput
from hookd.v1 import hookd_pb2 as pb

_WEBHOOK_NAME = re.compile(r"^webhooks/([A-Za-z0-9_-]{1,64})$")
_DELIVERY_NAME = re.compile(r"^webhooks/([A-Za-z0-9_-]{1,64})/deliveries/([0-9]{1,18})$")
_EVENT_NAME = re.compile(r"^events/([A-Za-z0-9_-]{1,64})$")
_PARENT_ALL = "webhooks/-"


def webhook_id(name: str, field_name: str = "name") -> str:
    match = _WEBHOOK_NAME.match(name)
    if not match:
        raise InvalidArgument(field_name, f"must look like webhooks/{{webhook}}, got {name[:100]!r}")
    return match.group(1)


def delivery_ref(name: str, field_name: str = "name") -> tuple[str | None, int]:
    """(webhook id, delivery id); the webhook is None for the ``webhooks/-/deliveries/{id}`` wildcard."""
    match = _DELIVERY_NAME.match(name)
    if not match:
        raise InvalidArgument(
            field_name, f"must look like webhooks/{{webhook}}/deliveries/{{delivery}}, got {name[:100]!r}"
        )
    webhook = match.group(1)
    return (None if webhook == "-" else webhook), int(match.group(2))


def event_id(name: str, field_name: str = "name") -> str:
    match = _EVENT_NAME.match(name)
    if not match:
        raise InvalidArgument(field_name, f"must look like events/{{event}}, got {name[:100]!r}")
    return match.group(1)


def deliveries_parent(parent: str) -> str | None:
    """The webhook id of a ListDeliveries parent, or None for ``webhooks/-``."""
    if parent == _PARENT_ALL:
        return None
    return webhook_id(parent, "parent")


def timestamp(epoch: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(epoch * 1e9))
    return stamp


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def epoch(value: timestamp_pb2.Timestamp, field_name: str) -> float:
    """A Timestamp as epoch seconds; one outside 0001-9999 (what RFC 3339 can write) is refused."""
    if not (-62_135_596_800 <= value.seconds <= 253_402_300_799) or not (0 <= value.nanos < 1_000_000_000):
        raise InvalidArgument(field_name, "is not a valid timestamp")
    return value.seconds + value.nanos / 1e9


def seconds(value: duration_pb2.Duration, field_name: str) -> float:
    if not (-315_576_000_000 <= value.seconds <= 315_576_000_000) or abs(value.nanos) >= 1_000_000_000:
        raise InvalidArgument(field_name, "is not a valid duration")
    return value.seconds + value.nanos / 1e9


def struct_to_dict(value: struct_pb2.Struct, field_name: str) -> dict[str, Any]:
    """The Struct as JSON data; NaN and infinities, which a Struct can hold and JSON cannot, are refused."""
    try:
        return json_format.MessageToDict(value)
    except ValueError as error:
        raise InvalidArgument(field_name, f"is not valid JSON (numbers must be finite): {error}") from error


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


# -- webhooks -----------------------------------------------------------------------------------


def auth_from_proto(message: pb.DestinationAuth) -> Auth:
    method = message.WhichOneof("method")
    if method == "bearer":
        return Auth(kind="bearer", token=message.bearer.token)
    if method == "basic":
        return Auth(kind="basic", username=message.basic.username, password=message.basic.password)
    if method == "headers":
        return Auth(kind="headers", headers=dict(message.headers.headers))
    return Auth()


def auth_to_proto(auth: Auth) -> pb.DestinationAuth:
    if auth.kind == "bearer":
        return pb.DestinationAuth(bearer=pb.BearerAuth(token=mask(auth.token)))
    if auth.kind == "basic":
        return pb.DestinationAuth(basic=pb.BasicAuth(username=auth.username, password=mask(auth.password)))
    if auth.kind == "headers":
        return pb.DestinationAuth(
            headers=pb.HeaderAuth(headers={name: mask(value) for name, value in auth.headers.items()})
        )
    return pb.DestinationAuth()


def webhook_status(value: int, field_name: str) -> Status | None:
    """A Webhook.Status number as the engine's Status; None when unspecified."""
    if value == pb.Webhook.STATUS_UNSPECIFIED:
        return None
    if value not in (pb.Webhook.ACTIVE, pb.Webhook.INACTIVE):
        raise InvalidArgument(field_name, "must be ACTIVE or INACTIVE")
    return Status(pb.Webhook.Status.Name(pb.Webhook.Status.ValueType(value)))


def webhook_input(message: pb.Webhook) -> WebhookInput:
    rate = message.rate_limit
    if math.isnan(rate) or math.isinf(rate):
        raise InvalidArgument("webhook.rate_limit", "must be a finite number")
    timeout = None
    if message.HasField("timeout"):
        timeout = seconds(message.timeout, "webhook.timeout")
    status = webhook_status(message.status, "webhook.status")
    if message.inactive_policy not in (pb.Webhook.INACTIVE_POLICY_UNSPECIFIED, pb.Webhook.QUEUE, pb.Webhook.DISCARD):
        raise InvalidArgument("webhook.inactive_policy", "must be QUEUE or DISCARD")
    if message.ordering not in (pb.Webhook.ORDERING_UNSPECIFIED, pb.Webhook.UNORDERED, pb.Webhook.ORDERED):
        raise InvalidArgument("webhook.ordering", "must be UNORDERED or ORDERED")
    return WebhookInput(
        resource=message.resource,
        event=message.event,
        url=message.url,
        auth=auth_from_proto(message.auth),
        status=status,
        inactive_policy=(
            InactivePolicy(pb.Webhook.InactivePolicy.Name(message.inactive_policy)) if message.inactive_policy else None
        ),
        description=message.description,
        rate_limit=rate,
        timeout_s=timeout,
        ordering=Ordering(pb.Webhook.Ordering.Name(message.ordering)) if message.ordering else None,
    )


def populated_paths(message: pb.Webhook) -> list[str]:
    """The implied update mask when none is given: every updatable field set to a non-default value."""
    paths = []
    for name in ("resource", "event", "url", "description", "rate_limit", "status", "inactive_policy", "ordering"):
        if getattr(message, name):
            paths.append(name)
    if message.HasField("auth"):
        paths.append("auth")
    if message.HasField("timeout"):
        paths.append("timeout")
    return paths


def webhook_to_proto(webhook: Webhook, *, reveal_secret: bool = False, now: float = 0.0) -> pb.Webhook:
    message = pb.Webhook(
        name=f"webhooks/{webhook.id}",
        resource=webhook.resource,
        event=webhook.event,
        url=webhook.url,
        auth=auth_to_proto(webhook.auth),
        signing_secret=webhook.secret if reveal_secret else mask(webhook.secret),
        status=pb.Webhook.Status.Value(webhook.status.value),
        inactive_policy=pb.Webhook.InactivePolicy.Value(webhook.inactive_policy.value),
        description=webhook.description,
        rate_limit=webhook.rate_limit,
        timeout=duration(webhook.timeout_s),
        create_time=timestamp(webhook.create_time),
        update_time=timestamp(webhook.update_time),
        ordering=pb.Webhook.Ordering.Value(webhook.ordering.value),
        disabled_reason=webhook.disabled_reason,
    )
    if webhook.previous_secret and webhook.previous_secret_expires > now:
        message.previous_secret_expire_time.CopyFrom(timestamp(webhook.previous_secret_expires))
    if webhook.disable_time:
        message.disable_time.CopyFrom(timestamp(webhook.disable_time))
    return message


# -- events, deliveries, attempts --------------------------------------------------------------


def event_to_proto(event: EventRecord) -> pb.Event:
    import json

    body = json.loads(event.envelope)
    message = pb.Event(
        name=f"events/{event.id}",
        type=event.type,
        create_time=timestamp(event.create_time),
        idempotency_key=event.idempotency_key,
        delivery_count=event.delivery_count,
    )
    message.data.update(body.get("data") or {})
    message.related.update(body.get("related") or {})
    return message


def delivery_state(value: int) -> DeliveryState | None:
    if value == pb.Delivery.STATE_UNSPECIFIED:
        return None
    try:
        return DeliveryState(pb.Delivery.State.Name(pb.Delivery.State.ValueType(value)))
    except ValueError as error:
        raise InvalidArgument("state", f"unknown delivery state {value}") from error


def recover_state(value: int) -> DeliveryState:
    """One of RecoverDeliveries' states: a known one (the engine checks that it is finished)."""
    if value not in pb.Delivery.State.values() or value == pb.Delivery.STATE_UNSPECIFIED:
        raise InvalidArgument("states", f"unknown delivery state {value}")
    return DeliveryState(pb.Delivery.State.Name(pb.Delivery.State.ValueType(value)))


def delivery_to_proto(delivery: DeliveryRecord) -> pb.Delivery:
    message = pb.Delivery(
        name=f"webhooks/{delivery.webhook_id}/deliveries/{delivery.id}",
        event=f"events/{delivery.event_id}",
        event_type=delivery.event_type,
        state=pb.Delivery.State.Value(delivery.state.value),
        attempt_count=delivery.attempt_count,
        last_error=delivery.last_error,
        create_time=timestamp(delivery.create_time),
        update_time=timestamp(delivery.update_time),
        message_id=message_id(delivery.id),
    )
    if delivery.state is DeliveryState.PENDING:
        message.next_attempt_time.CopyFrom(timestamp(delivery.next_attempt_at))
    if delivery.waiting_for:
        message.waiting_for = f"webhooks/{delivery.webhook_id}/deliveries/{delivery.waiting_for}"
    return message


def trial_to_proto(result: AttemptResult) -> pb.Attempt:
    """An attempt that was not recorded (a test of unsaved settings): it has no name."""
    return pb.Attempt(
        start_time=timestamp(result.start_time),
        duration=duration(result.duration_ms / 1000.0),
        status_code=result.status_code,
        outcome=pb.Outcome.Value(result.outcome.value),
        error=result.error,
        response_excerpt=result.response_excerpt,
        url=result.url,
    )


def attempt_to_proto(attempt: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        name=f"webhooks/{attempt.webhook_id}/deliveries/{attempt.delivery_id}/attempts/{attempt.id}",
        start_time=timestamp(attempt.start_time),
        duration=duration(attempt.duration_ms / 1000.0),
        status_code=attempt.status_code,
        outcome=pb.Outcome.Value(attempt.outcome.value),
        error=attempt.error,
        response_excerpt=attempt.response_excerpt,
        url=attempt.url,
    )


# -- health ---------------------------------------------------------------------------------------

_BREAKER = {
    BreakerState.CLOSED: pb.CLOSED,
    BreakerState.OPEN: pb.OPEN,
    BreakerState.HALF_OPEN: pb.HALF_OPEN,
}


def window_to_proto(figures: WindowFigures) -> pb.WindowStats:
    return pb.WindowStats(
        window=duration(figures.window_s),
        attempts=figures.attempts,
        successes=figures.successes,
        success_rate=figures.success_rate,
        p50_ms=figures.p50_ms,
        p95_ms=figures.p95_ms,
        p99_ms=figures.p99_ms,
        errors=figures.errors,
    )


def stats_to_proto(stats: Stats) -> pb.HealthStats:
    message = pb.HealthStats(
        key=stats.key,
        windows=[window_to_proto(w) for w in stats.windows],
        backlog=stats.backlog,
        queued_in_memory=stats.queued_in_memory,
        in_flight=stats.in_flight,
        retries_scheduled=stats.retries_scheduled,
        last_error=stats.last_error,
        minutes=[
            pb.MinuteStats(
                start_time=timestamp(m.start_s),
                attempts=m.attempts,
                successes=m.successes,
                p50_ms=m.p50_ms,
                p95_ms=m.p95_ms,
            )
            for m in stats.minutes
        ],
    )
    if stats.breaker_state is not None:
        message.breaker_state = _BREAKER[stats.breaker_state]
    if stats.breaker_since:
        message.breaker_since.CopyFrom(timestamp(stats.breaker_since))
    if stats.last_success:
        message.last_success_time.CopyFrom(timestamp(stats.last_success))
    if stats.last_failure:
        message.last_failure_time.CopyFrom(timestamp(stats.last_failure))
    message.owner = stats.owner
    if stats.held_behind:
        message.held_behind = f"{stats.key}/deliveries/{stats.held_behind}"
    return message


def node_to_proto(node: NodeInfo) -> pb.NodeStatus:
    return pb.NodeStatus(
        id=node.id,
        address=node.address,
        state=node.state,
        last_heartbeat_time=timestamp(node.last_heartbeat),
        start_time=timestamp(node.started),
        destinations=node.destinations,
        slots=node.slots,
    )


def snapshot_head_to_proto(snapshot: Snapshot) -> pb.HealthSnapshot:
    """The snapshot's service-wide figures as protobuf. Its webhooks and destinations, which may
    be thousands, are added by the caller with ``stats_to_proto``, in steps."""
    return pb.HealthSnapshot(
        time=timestamp(snapshot.time),
        service=stats_to_proto(snapshot.service),
        actors=snapshot.actors,
        actor_restarts=snapshot.actor_restarts,
        store=pb.StoreStatus(
            available=snapshot.store.available,
            reason=snapshot.store.reason,
            since=timestamp(snapshot.store.since) if snapshot.store.since else None,
        ),
        nodes=[node_to_proto(node) for node in snapshot.nodes],
    )
