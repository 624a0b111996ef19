"""Opaque page tokens (https://google.aip.dev/158).

A token carries the last key of the page it ends and a fingerprint of the filters it was made
for; reusing it with other filters is an error rather than a silently wrong page. Keys are
positions in a stable order (insertion sequences that are never reused), so inserts made while
paging neither skip nor repeat rows.
"""

from __future__ import annotations

import base64
import hashlib
import json

from hookd.engine.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Longest page token accepted. ``encode_token`` makes at most about 80 characters; anything much
#: longer was not made by hookd, and is refused before it is decoded.
MAX_TOKEN_CHARS = 256


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _fingerprint(filters: object) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_token(last_key: int, filters: object) -> str:
    raw = json.dumps({"k": last_key, "f": _fingerprint(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: object) -> int | None:
    """The key to continue after, or None for the first page."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("page_token", f"malformed page token (longer than {MAX_TOKEN_CHARS} characters)")
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = raw["k"]
        fingerprint = raw["f"]
    # RecursionError: deeply nested JSON, which only a forged token holds.
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise InvalidArgument("page_token", "malformed page token") from error
    # A key outside SQLite's 64-bit integers cannot come from encode_token: the token was forged.
    if type(key) is not int or not -(2**63) <= key < 2**63:
        raise InvalidArgument("page_token", "malformed page token")
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument("page_token", "page token does not match this request's filters")
    return key
