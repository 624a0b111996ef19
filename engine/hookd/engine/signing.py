"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, the MAC is HMAC-SHA256 keyed
with the base64-decoded part of the ``whsec_`` secret, and each signature is ``v1,`` + base64.
During a secret rotation both secrets sign, space-separated, as the spec allows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache


@lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(secret), content, hashlib.sha256).digest()).decode()
        for secret in secrets
    )
