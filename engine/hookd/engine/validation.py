"""Checks on what callers send, with errors that name the offending field."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hookd.engine.destinations import MAX_URL_LENGTH
from hookd.engine.errors import InvalidArgument
from hookd.engine.model import Auth, InactivePolicy, Ordering, Status

MAX_DESCRIPTION = 500
MAX_IDEMPOTENCY_KEY = 255
MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 30.0
DEFAULT_TIMEOUT_S = 5.0
MAX_RATE_LIMIT = 100_000.0
MIN_RATE_LIMIT = 0.1
MAX_CREDENTIAL = 4096
MAX_HEADERS = 20
#: Longest ListWebhooks free-text query; SQLite refuses LIKE patterns over 50,000 bytes anyway.
MAX_QUERY = 500
#: Most entries in each StreamHealth filter list. The snapshot has one entry per key named, sent
#: every interval, so a list must stay small; asking for more is asking for everything (no filter).
MAX_HEALTH_FILTER = 1000
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")

#: Headers a webhook's custom headers may not set: those hookd sets itself, and those that
#: change how the request is framed or routed (hop-by-hop, RFC 9110 7.6.1; Expect, Upgrade and
#: the proxy headers), which would let a webhook desynchronise or hijack hookd's connection.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "content-range",
        "user-agent",
        "host",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "http2-settings",
    }
)
#: Whole families: Standard Webhooks' namespace (webhook-id, -timestamp, -signature,
#: -version...) is hookd's alone, and proxy-* headers are for proxies.
RESERVED_HEADER_PREFIXES = ("webhook-", "proxy-")


def is_reserved_header(name: str) -> bool:
    """Whether a webhook's custom headers may not set ``name`` (see RESERVED_HEADERS)."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES)


#: Fields UpdateWebhook may change.
UPDATABLE = (
    "resource",
    "event",
    "url",
    "auth",
    "status",
    "inactive_policy",
    "description",
    "rate_limit",
    "timeout",
    "ordering",
)


@dataclass
class WebhookInput:
    """A webhook as a caller describes it, before validation. ``None`` means not given."""

    resource: str = ""
    event: str = ""
    url: str = ""
    auth: Auth = field(default_factory=Auth)
    status: Status | None = None
    inactive_policy: InactivePolicy | None = None
    description: str = ""
    rate_limit: float = 0.0
    timeout_s: float | None = None
    ordering: Ordering | None = None


def _printable(value: str, field_name: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(field_name, f"is longer than {limit} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArgument(field_name, "must not contain control characters")


def check_update_paths(paths: Sequence[str]) -> None:
    """Every path of an update mask names a field that can be updated."""
    for path in paths:
        if path not in UPDATABLE:
            raise InvalidArgument("update_mask", f"cannot update {path!r}; updatable fields: {', '.join(UPDATABLE)}")


def _not_masked(value: str, field_name: str) -> None:
    """Answers show credentials masked (``****abcd``); writing such a value back would replace
    the real credential with the mask, so it is refused."""
    if "****" in value:
        raise InvalidArgument(
            field_name, "looks like a masked value; send the real credential, or leave auth out of update_mask"
        )


def _header_value(value: str, field_name: str) -> None:
    """Sent as an HTTP header value as it is, so ASCII only (basic credentials are base64'd),
    with no surrounding whitespace, which HTTP would strip or refuse."""
    _printable(value, field_name, MAX_CREDENTIAL)
    if not value.isascii():
        raise InvalidArgument(field_name, "must be ASCII: it is sent as an HTTP header value")
    if value != value.strip():
        raise InvalidArgument(field_name, "must not start or end with whitespace")
    _not_masked(value, field_name)


def check_auth(auth: Auth, prefix: str) -> None:
    if auth.kind == "bearer":
        if not auth.token:
            raise InvalidArgument(f"{prefix}.bearer.token", "is required")
        _header_value(auth.token, f"{prefix}.bearer.token")
    elif auth.kind == "basic":
        if not auth.username:
            raise InvalidArgument(f"{prefix}.basic.username", "is required")
        if ":" in auth.username:
            raise InvalidArgument(f"{prefix}.basic.username", "must not contain ':'")
        _printable(auth.username, f"{prefix}.basic.username", MAX_CREDENTIAL)
        _printable(auth.password, f"{prefix}.basic.password", MAX_CREDENTIAL)
        _not_masked(auth.password, f"{prefix}.basic.password")
    elif auth.kind == "headers":
        if not auth.headers:
            raise InvalidArgument(f"{prefix}.headers.headers", "needs at least one header")
        if len(auth.headers) > MAX_HEADERS:
            raise InvalidArgument(f"{prefix}.headers.headers", f"at most {MAX_HEADERS} headers")
        for name, value in auth.headers.items():
            if not _HEADER_NAME.match(name):
                raise InvalidArgument(f"{prefix}.headers.headers", f"invalid header name {name!r}")
            if is_reserved_header(name):
                raise InvalidArgument(f"{prefix}.headers.headers", f"header {name!r} is set by hookd")
            _header_value(value, f"{prefix}.headers.headers[{name}]")


def check_scalars(data: WebhookInput, prefix: str) -> None:
    """Every check on a webhook that needs no I/O (the URL's address is checked separately)."""
    _printable(data.description, f"{prefix}.description", MAX_DESCRIPTION)
    # A floor keeps the token bucket's waits short, so a rate change or a deletion applies soon.
    if data.rate_limit != 0.0 and not (MIN_RATE_LIMIT <= data.rate_limit <= MAX_RATE_LIMIT):
        raise InvalidArgument(
            f"{prefix}.rate_limit",
            f"must be 0 (the server's default) or between {MIN_RATE_LIMIT:g} and {MAX_RATE_LIMIT:g}",
        )
    if data.timeout_s is not None and not (MIN_TIMEOUT_S <= data.timeout_s <= MAX_TIMEOUT_S):
        raise InvalidArgument(f"{prefix}.timeout", f"must be between {MIN_TIMEOUT_S:g} s and {MAX_TIMEOUT_S:g} s")
    check_auth(data.auth, f"{prefix}.auth")


def _normalise(value: Any) -> Any:
    """Struct numbers arrive as floats; integral ones go out as JSON integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """Compact JSON, as it goes out in envelopes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_payload(data: dict[str, Any], related: dict[str, Any], limit: int, prefix: str) -> tuple[str, str]:
    """Data and related as the JSON sent (integral numbers as integers), serialised once here and
    reused for the envelope; refused when together they exceed ``limit`` bytes."""
    try:
        data_json, related_json = to_json(_normalise(data)), to_json(_normalise(related))
    except (ValueError, TypeError) as error:
        raise InvalidArgument(f"{prefix}.data", f"is not valid JSON: {error}") from error
    size = len(data_json.encode()) + len(related_json.encode())
    if size > limit:
        raise InvalidArgument(f"{prefix}.data", f"data and related take {size} bytes; the limit is {limit}")
    return data_json, related_json


def check_idempotency_key(key: str, field_name: str) -> None:
    _printable(key, field_name, MAX_IDEMPOTENCY_KEY)


def check_query(query: str, field_name: str) -> None:
    _printable(query, field_name, MAX_QUERY)


def health_filter(values: Sequence[str], field_name: str) -> list[str]:
    """A StreamHealth filter list (webhook names or destination URLs): at most
    ``MAX_HEALTH_FILTER`` entries of at most a URL's length, each kept once, in the order given."""
    if len(values) > MAX_HEALTH_FILTER:
        raise InvalidArgument(field_name, f"at most {MAX_HEALTH_FILTER} entries")
    for index, value in enumerate(values):
        if len(value) > MAX_URL_LENGTH:
            raise InvalidArgument(f"{field_name}[{index}]", f"is longer than {MAX_URL_LENGTH} characters")
    return list(dict.fromkeys(values))
