"""Turning hookctl's option values into request messages.

Kept apart from the commands so the rules (one auth method, only the options given go into the
update mask, JSON payloads must be objects) live in one place and fail as usage errors (exit 2)
before anything is sent.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from hookd.client import limits
from hookd.v1 import hookd_pb2 as pb

WEBHOOK_STATUSES = {"active": pb.Webhook.ACTIVE, "inactive": pb.Webhook.INACTIVE}
DELIVERY_STATES = {
    name.lower(): value for name, value in pb.Delivery.State.items() if value != pb.Delivery.STATE_UNSPECIFIED
}
#: States a delivery can be recovered from (RecoverDeliveries): the finished ones.
FINISHED_STATES = {
    name: value for name, value in DELIVERY_STATES.items() if value not in (pb.Delivery.PENDING, pb.Delivery.HELD)
}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([dhms])$")
_AGE_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
#: The span a protobuf Timestamp can hold, 0001-01-01 to 9999-12-31 UTC, in epoch seconds:
#: converting a time outside it raises ValueError deep in protobuf, after the command started.
TIMESTAMP_MIN_S = -62_135_596_800
TIMESTAMP_MAX_S = 253_402_300_799
#: Most seconds between ``health --watch`` updates. The server sets no upper limit, but the value
#: must fit a Duration, and a snapshot covers the last 5 minutes: an hour is plenty.
MAX_HEALTH_INTERVAL_S = 3600.0
#: Longest ``listen --delay``: far past hookd's longest request timeout (30 s), so any slow
#: answer can be tried, while staying a wait the clock can keep.
MAX_LISTEN_DELAY_S = 3600.0


class Finite(click.FloatRange):
    """A number within ``min``..``max``, both given. ``click.FloatRange`` lets ``nan`` through
    (every comparison with it is false), and ``nan`` or an infinite value would fail only later,
    with a traceback, when made into a Duration; here both are usage errors like any value out of
    range. The bounds are the server's (``limits``), so a value it would refuse fails here first.
    """

    def __init__(self, min: float, max: float) -> None:
        super().__init__(min, max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not in the range {self._describe_range()}.", param, ctx)
        return number


class RateLimit(Finite):
    """A webhook's rate: 0 (the server's default) or from ``limits.MIN_RATE_LIMIT`` to
    ``limits.MAX_RATE_LIMIT``; the server refuses what lies between 0 and the minimum."""

    def __init__(self) -> None:
        super().__init__(0, limits.MAX_RATE_LIMIT)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if 0 < number < limits.MIN_RATE_LIMIT:
            self.fail(
                f"{value} is neither 0 nor from {limits.MIN_RATE_LIMIT:g} to {limits.MAX_RATE_LIMIT:g}.", param, ctx
            )
        return number


def point_in_time(value: str, option: str, now: float | None = None) -> float:
    """Epoch seconds from an RFC 3339 time (``2026-01-31T08:00:00Z``; without a zone, local
    time) or an age (``2h``: two hours ago; ``d``, ``h``, ``m``, ``s``), within the years a
    Timestamp can hold."""
    hint = f"'{option}'"
    age = _AGE.match(value.strip().lower())
    try:
        if age:
            seconds = (time.time() if now is None else now) - float(age.group(1)) * _AGE_UNITS[age.group(2)]
        else:
            seconds = datetime.fromisoformat(value.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise click.BadParameter(
            f"expected a time like 2026-01-31T08:00:00Z or an age like 2h, got {value!r}", param_hint=hint
        ) from None
    if not TIMESTAMP_MIN_S <= seconds <= TIMESTAMP_MAX_S:
        raise click.BadParameter(f"{value!r} is not a time between the years 1 and 9999", param_hint=hint)
    return seconds


def header(value: str) -> tuple[str, str]:
    """``'Name: value'`` as sent with curl -H."""
    name, sep, text = value.partition(":")
    if not sep or not name.strip() or not text.strip():
        raise click.BadParameter(f"expected 'Name: value', got {value!r}", param_hint="'--header'")
    return name.strip(), text.strip()


def basic(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise click.BadParameter("expected USER:PASS", param_hint="'--basic'")
    return user, password


def json_object(value: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given on the command line; events carry objects, not bare values."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as error:
        raise click.BadParameter(f"not valid JSON: {error}", param_hint=f"'{option}'") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"id\": 1}'", param_hint=f"'{option}'")
    return parsed


def event_name(value: str) -> str:
    return value if value.startswith("events/") else f"events/{value}"


def auth(bearer: str | None, basic_pair: str | None, headers: tuple[str, ...]) -> pb.DestinationAuth | None:
    """At most one method: the server stores exactly one per webhook."""
    given = [name for name, value in (("--bearer", bearer), ("--basic", basic_pair), ("--header", headers)) if value]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other: a webhook has one auth method")
    if bearer:
        return pb.DestinationAuth(bearer=pb.BearerAuth(token=bearer))
    if basic_pair:
        user, password = basic(basic_pair)
        return pb.DestinationAuth(basic=pb.BasicAuth(username=user, password=password))
    if headers:
        return pb.DestinationAuth(headers=pb.HeaderAuth(headers=dict(header(h) for h in headers)))
    return None


@dataclass
class WebhookOptions:
    """The webhook options of ``create`` and ``edit``; ``None`` means not given."""

    resource: str | None = None
    event: str | None = None
    url: str | None = None
    bearer: str | None = None
    basic: str | None = None
    headers: tuple[str, ...] = ()
    no_auth: bool = False
    active: bool | None = None
    discard: bool | None = None
    description: str | None = None
    rate_limit: float | None = None
    timeout: float | None = None
    ordered: bool | None = None

    def changes(self) -> tuple[pb.Webhook, list[str]]:
        """The message and the update mask naming exactly the options that were given."""
        webhook = pb.Webhook()
        paths: list[str] = []
        for name in ("resource", "event", "url", "description"):
            value = getattr(self, name)
            if value is not None:
                setattr(webhook, name, value)
                paths.append(name)
        method = auth(self.bearer, self.basic, self.headers)
        if method is not None and self.no_auth:
            raise click.UsageError("--no-auth excludes --bearer, --basic and --header")
        if method is not None:
            webhook.auth.CopyFrom(method)
            paths.append("auth")
        elif self.no_auth:
            paths.append("auth")
        if self.active is not None:
            webhook.status = pb.Webhook.ACTIVE if self.active else pb.Webhook.INACTIVE
            paths.append("status")
        if self.discard is not None:
            webhook.inactive_policy = pb.Webhook.DISCARD if self.discard else pb.Webhook.QUEUE
            paths.append("inactive_policy")
        if self.rate_limit is not None:
            webhook.rate_limit = self.rate_limit
            paths.append("rate_limit")
        if self.timeout is not None:
            webhook.timeout.FromNanoseconds(round(self.timeout * 1e9))
            paths.append("timeout")
        if self.ordered is not None:
            webhook.ordering = pb.Webhook.ORDERED if self.ordered else pb.Webhook.UNORDERED
            paths.append("ordering")
        return webhook, paths
