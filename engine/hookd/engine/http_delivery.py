"""One HTTP request for one delivery attempt: headers, the guarded connection, and the outcome.

Every failure is turned into an ``Outcome`` here and nowhere else, so health figures, retries
and the circuit breaker all agree on what happened. Nothing a destination sends can make
``post`` raise: errors are mapped by their type, and anything unforeseen while the answer is
read or judged becomes an ``INVALID_RESPONSE`` (and a logged traceback), never a crashed actor.
"""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import time
import typing

import trio

from hookd.engine.connections import ConnectionSet, NotSent, TLSFailure
from hookd.engine.destinations import DestinationBlocked, DestinationUnresolvable
from hookd.engine.http11 import (
    ConnectionLost,
    MalformedResponse,
    RequestNotEncodable,
    ResponseParser,
    encode_request,
)
from hookd.engine.jobs import AttemptResult
from hookd.engine.model import Outcome

log = logging.getLogger("hookd.engine")

#: Most response body bytes read; the rest is ignored and the connection dropped.
MAX_RESPONSE_BYTES = 64 * 1024
#: Most response body characters stored with the attempt.
EXCERPT_CHARS = 1024
#: Most characters of a redirect's Location stored with the attempt.
LOCATION_CHARS = 2048
#: Retry-After in delta-seconds: ASCII digits only (``str.isdigit`` takes ``²``), ten of them at most.
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")
#: An HTTP date is 29 characters; anything much longer is not one.
_HTTP_DATE_CHARS = 64
USER_AGENT = "hookd/0.1 (+webhook delivery)"

#: What an exchange can raise, with the outcome each means, most specific first.
_OUTCOMES_BY_ERROR: tuple[tuple[type[Exception], Outcome], ...] = (
    (DestinationBlocked, Outcome.BLOCKED),
    (DestinationUnresolvable, Outcome.DNS),
    (TLSFailure, Outcome.TLS),
    (ssl.SSLError, Outcome.TLS),
    (RequestNotEncodable, Outcome.CLIENT_ERROR),  # our request, not the destination, is at fault
    (MalformedResponse, Outcome.INVALID_RESPONSE),
    (ConnectionLost, Outcome.CONNECTION),
    (OSError, Outcome.CONNECTION),  # refused, unreachable: no connection at all
)
DELIVERY_ERRORS = tuple(kind for kind, _ in _OUTCOMES_BY_ERROR)


def classify_error(error: Exception) -> Outcome:
    """The outcome class of a request that got no usable answer."""
    for kind, outcome in _OUTCOMES_BY_ERROR:
        if isinstance(error, kind):
            return outcome
    return Outcome.INVALID_RESPONSE


def _retry_after(value: str) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None for anything else,
    a date no calendar holds included."""
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    if not value or len(value) > _HTTP_DATE_CHARS:
        return None
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


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

    The message is taken from the first exception in the chain that has one (a failed connect
    says which address; its cause, why).
    """
    message = next((text for cause in _chain(error) if (text := str(cause).strip())), "")
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _Verdict(typing.NamedTuple):
    outcome: Outcome
    status: int = 0
    error: str = ""
    excerpt: str = ""
    retry_after: float | None = None
    location: str = ""


def _judge_answer(response: ResponseParser) -> _Verdict:
    """A response read to its end (or to the body limit)."""
    assert response.head is not None
    head = response.head
    status = head.status
    outcome = _status_outcome(status)
    excerpt = bytes(response.body[: EXCERPT_CHARS * 4]).decode("utf-8", "replace")[:EXCERPT_CHARS]
    if 300 <= status < 400:
        location = head.get(b"location")[:LOCATION_CHARS]
        return _Verdict(outcome, status, f"HTTP {status} redirect not followed", excerpt, location=location)
    retry_after = _retry_after(head.get(b"retry-after")) if status in (429, 503) else None
    error = "" if outcome is Outcome.SUCCESS else f"HTTP {status}"
    return _Verdict(outcome, status, error, excerpt, retry_after)


def _judge_failure(error: Exception, response: ResponseParser) -> _Verdict:
    status = response.head.status if response.head is not None else 0
    if not isinstance(error, DELIVERY_ERRORS):
        return _Verdict(Outcome.INVALID_RESPONSE, status, f"unexpected {type(error).__name__} reading the response")
    # The encoder's message names the offending header; the value may be a credential.
    local = isinstance(error, RequestNotEncodable)
    text = "the request could not be encoded as HTTP" if local else describe_error(error)[:500]
    return _Verdict(classify_error(error), status, text)


def _judge(response: ResponseParser, failure: Exception | None, timeout_s: float) -> _Verdict:
    if failure is not None:
        return _judge_failure(failure, response)
    if response.head is None or not response.done:
        status = response.head.status if response.head is not None else 0
        return _Verdict(Outcome.TIMEOUT, status, f"no complete answer within {timeout_s:g} s")
    return _judge_answer(response)


async def post(
    client: ConnectionSet, url: str, headers: dict[str, str], body: bytes, timeout_s: float, started_at: float
) -> AttemptResult:
    """POST ``body`` and classify what happened; the whole exchange is bounded by ``timeout_s``.

    ``started_at`` is the engine clock's wall time, recorded as the attempt's start. Returns an
    AttemptResult for everything a destination can do; only cancellation propagates, and
    NotSent (``client.may_send`` said no before the request went).
    """
    start = time.perf_counter()
    response = ResponseParser(MAX_RESPONSE_BYTES)
    failure: Exception | None = None
    with trio.move_on_after(timeout_s):
        try:
            target = client.target(url)
            await client.exchange(target, encode_request(target, headers, body), response)
        except DELIVERY_ERRORS as error:
            failure = error
        except NotSent:
            raise  # nothing happened to record: the caller's to handle
        except Exception as error:
            log.exception("unexpected error in an exchange with destination=%s", url)
            failure = error
    duration_ms = (time.perf_counter() - start) * 1000.0
    try:
        verdict = _judge(response, failure, timeout_s)
    except Exception as error:
        log.exception("unexpected error judging the response of destination=%s", url)
        verdict = _Verdict(Outcome.INVALID_RESPONSE, error=f"unexpected {type(error).__name__} reading the response")
    return AttemptResult(
        url=url,
        start_time=started_at,
        duration_ms=duration_ms,
        status_code=verdict.status,
        outcome=verdict.outcome,
        error=verdict.error,
        response_excerpt=verdict.excerpt,
        retry_after_s=verdict.retry_after,
        location=verdict.location,
    )
