"""Identifiers and secrets."""

from __future__ import annotations

import base64
import secrets
import time


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(10)


def new_event_id() -> str:
    """Time-ordered, so ids sort roughly by creation, with 64 random bits against collisions."""
    return f"evt_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def mask(secret: str, *, keep: int = 4) -> str:
    """Show a secret's shape and its last few characters, never enough to use it."""
    if not secret:
        return ""
    prefix = "whsec_" if secret.startswith("whsec_") else ""
    tail = secret[-keep:] if len(secret) - len(prefix) > 3 * keep else ""
    return f"{prefix}****{tail}"
