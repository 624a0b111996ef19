"""One HTTP request for one delivery attempt: headers, the guarded connection, and the outcome.

Every failure is turned into an ``Outcome`` here and nowhere else, so health figures, retries
and the circuit breaker all agree on what happened.
"""

from __future__ import annotations

import email.utils
import ssl
import time
import typing
import urllib.parse

import httpcore
import trio

from hookd.engine.connections import ConnectionSet
from hookd.engine.destinations import DestinationBlocked, DestinationUnresolvable
from hookd.engine.jobs import AttemptResult
from hookd.engine.model import Outcome

#: Most response body bytes read; the rest is ignored and the connection dropped.
MAX_RESPONSE_BYTES = 64 * 1024
#: Most response body characters stored with the attempt.
EXCERPT_CHARS = 1024
USER_AGENT = "hookd/0.1 (+webhook delivery)"

#: Exceptions httpcore raises for a request that got no usable answer.
TRANSPORT_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
)


#: Characters left as they are when a URL's path and query are percent-encoded.
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"


def ascii_url(url: str) -> str:
    """The URL as sent: httpcore takes ASCII only, so a host name gets its IDNA form (the one the
    resolver was asked about) and the path and query their percent-encoded UTF-8."""
    if url.isascii():
        return url
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    path = urllib.parse.quote(parts.path, safe=_URL_SAFE)
    query = urllib.parse.quote(parts.query, safe=_URL_SAFE)
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_outcome(code: int) -> Outcome:
    if 200 <= code < 300:
        return Outcome.SUCCESS
    if code in (401, 403):
        return Outcome.AUTH_FAILURE
    if code == 429:
        return Outcome.RATE_LIMITED
    if 300 <= code < 500:
        return Outcome.CLIENT_ERROR
    if 500 <= code < 600:
        return Outcome.SERVER_ERROR
    return Outcome.INVALID_RESPONSE


def _chain(error: BaseException) -> typing.Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_error(error: BaseException) -> str:
    """``Type: message`` for an attempt's record.

    httpcore often wraps the real cause in an exception with no message of its own
    (an untrusted certificate arrives as a bare ``ConnectError``), so the message is taken from
    the first exception in the chain that has one.
    """
    message = next((text for cause in _chain(error) if (text := str(cause).strip())), "")
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def classify_error(error: Exception) -> Outcome:
    """The outcome class of a request that got no usable answer."""
    if isinstance(error, DestinationBlocked):
        return Outcome.BLOCKED
    if isinstance(error, DestinationUnresolvable):
        return Outcome.DNS
    if any(isinstance(cause, ssl.SSLError | ssl.CertificateError) for cause in _chain(error)):
        return Outcome.TLS
    if isinstance(error, httpcore.TimeoutException):
        return Outcome.TIMEOUT
    if isinstance(error, httpcore.LocalProtocolError):
        return Outcome.CLIENT_ERROR  # our request could not be encoded: the destination is not at fault
    if isinstance(error, httpcore.RemoteProtocolError):
        text = str(error).lower()
        if "disconnected" in text or "peer closed" in text:
            return Outcome.CONNECTION
        return Outcome.INVALID_RESPONSE
    return Outcome.CONNECTION


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def post(
    client: ConnectionSet, url: str, headers: dict[str, str], body: bytes, timeout_s: float, started_at: float
) -> AttemptResult:
    """POST ``body`` and classify what happened; the whole exchange is bounded by ``timeout_s``.

    ``started_at`` is the engine clock's wall time, recorded as the attempt's start.
    """
    start = time.perf_counter()
    status = 0
    excerpt = ""
    error = ""
    retry_after: float | None = None
    location = ""
    outcome = Outcome.TIMEOUT
    with trio.move_on_after(timeout_s):
        try:
            async with client.stream(ascii_url(url), list(headers.items()), body) as response:
                status = response.status
                received = bytearray()
                async for chunk in response.aiter_stream():
                    received += chunk
                    if len(received) >= MAX_RESPONSE_BYTES:
                        break
            excerpt = bytes(received[: EXCERPT_CHARS * 4]).decode("utf-8", "replace")[:EXCERPT_CHARS]
            outcome = _status_outcome(status)
            if outcome is not Outcome.SUCCESS:
                error = f"HTTP {status}"
            if status in (429, 503):
                retry_after = _retry_after(_header(response.headers, b"retry-after"))
            if 300 <= status < 400:
                location = _header(response.headers, b"location")
                error = f"HTTP {status} redirect not followed"
        except (*TRANSPORT_ERRORS, DestinationBlocked, DestinationUnresolvable, OSError) as failure:
            outcome = classify_error(failure)
            # The encoder's message quotes the offending header, credentials included.
            local = isinstance(failure, httpcore.LocalProtocolError)
            error = "the request could not be encoded as HTTP" if local else describe_error(failure)[:500]
    duration_ms = (time.perf_counter() - start) * 1000.0
    if outcome is Outcome.TIMEOUT and not error:
        error = f"no complete answer within {timeout_s:g} s"
    return AttemptResult(
        url=url,
        start_time=started_at,
        duration_ms=duration_ms,
        status_code=status,
        outcome=outcome,
        error=error,
        response_excerpt=excerpt,
        retry_after_s=retry_after,
        location=location,
    )
