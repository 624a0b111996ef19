"""HTTP/1.1 as hookd speaks it to destinations: one POST out, one response in, no I/O here.

A general client (httpx, httpcore, even h11's event objects and state machine) costs more per
request than the exchange itself: about 120 us for h11's cycle against 8 us for these few
functions. hookd sends one kind of request and needs four things from the answer (status,
Retry-After, Location, the first KiB of the body), so it writes the request itself and parses
the response with h11's grammar (the tests hold the two to the same answers), bounded
everywhere: a head of at most ``MAX_HEAD_BYTES``, at most ``MAX_INTERIM_RESPONSES`` 1xx answers
before the real one, chunk lines of at most ``MAX_CHUNK_LINE_BYTES``, and a body read to
``body_limit`` bytes and no further.

A destination's bytes can only ever raise ``MalformedResponse`` (the answer is not HTTP) or
``ConnectionLost`` (it ended before the response did) out of ``ResponseParser``.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

#: Most bytes of a response's status line and headers (h11 allows 16 KiB, httpcore 100 KiB).
MAX_HEAD_BYTES = 64 * 1024
#: Most 1xx answers (100 Continue, 103 Early Hints) taken before the final response.
MAX_INTERIM_RESPONSES = 8
#: Longest chunk-size line of a chunked body, extensions included.
MAX_CHUNK_LINE_BYTES = 4096
#: Longest Content-Length value (h11's bound).
MAX_CONTENT_LENGTH_DIGITS = 20


class RequestNotEncodable(ValueError):
    """The request cannot be written as HTTP/1.1 (a header name or value HTTP does not allow).

    The message never quotes the value: it may be a credential.
    """


class MalformedResponse(Exception):
    """What the destination sent is not an HTTP/1.x response."""


class ConnectionLost(Exception):
    """The connection ended (closed or reset by the peer) before the response did.

    ``response_started`` says whether any byte of the response had arrived: a request that
    failed before that on a reused keep-alive connection met a destination that had just
    closed it, and may be sent again on a fresh one.
    """

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


# -- the request ------------------------------------------------------------------------------------

#: Characters left as they are when a URL's path and query are percent-encoded.
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: An ASCII field value: visible characters, inner spaces and tabs only (h11's rule, ASCII).
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
#: Headers that frame the message: written here, never taken from the caller.
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go and how they are addressed, in the ASCII forms sent."""

    tls: bool
    #: The host as resolved and as the TLS server name: IDNA for names, bare for IPv6 literals.
    host: str
    port: int
    host_header: str
    #: Path and query, percent-encoded UTF-8.
    path: str

    @property
    def origin(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


def target_of(url: str) -> Target:
    """Where ``url``'s requests go, in the forms sent (``ConnectionSet.target`` keeps its
    destination's, so an actor parses its URL once).

    Raises RequestNotEncodable for a URL without an http(s) scheme, a host, a valid port or an
    IDNA form (webhooks' URLs are checked when saved: only a bug gets here).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        name, port = parts.hostname, parts.port
        if parts.scheme not in ("http", "https") or not name:
            raise ValueError("not an absolute http or https URL")
        host = name if name.isascii() else name.encode("idna").decode("ascii")
    except ValueError as error:  # UnicodeError included
        raise RequestNotEncodable(f"the URL cannot be requested: {error}") from error
    tls = parts.scheme == "https"
    default_port = 443 if tls else 80
    port = port or default_port
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    path = urllib.parse.quote(parts.path, safe=_URL_SAFE) or "/"
    if parts.query:
        path = f"{path}?{urllib.parse.quote(parts.query, safe=_URL_SAFE)}"
    return Target(tls=tls, host=host, port=port, host_header=host_header, path=path)


def encode_request(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    """A POST of ``body`` with ``headers``, framed by Content-Length, as the bytes to send."""
    lines = [f"POST {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or name.lower() in _FRAMING_HEADERS:
            raise RequestNotEncodable(f"header name {name[:40]!r} cannot be sent")
        if not _FIELD_VALUE.fullmatch(value):
            raise RequestNotEncodable(f"the value of header {name!r} cannot be sent as HTTP")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("ascii") + body


# -- the response -----------------------------------------------------------------------------------

#: The first empty line: the end of a head (h11 accepts bare LF line ends too).
_BLANK_LINE = re.compile(rb"\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00\r\n]*)?")
#: h11's header line: a token, a colon, the value between optional spaces or tabs.
_HEADER_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
_FOLDED = re.compile(rb"[ \t]+")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*")
_DIGITS = re.compile(rb"[0-9]+")

_HEAD, _BODY_LENGTH, _BODY_CHUNK_SIZE, _BODY_CHUNK, _BODY_CHUNK_END, _TRAILERS, _BODY_UNTIL_CLOSE, _DONE = range(8)


@dataclass(slots=True)
class Head:
    """A final response's status line and headers (names lower-cased, values as sent)."""

    status: int
    http11: bool
    headers: list[tuple[bytes, bytes]]

    def get(self, name: bytes) -> str:
        """The first value of header ``name`` (lower case), as text; empty when absent."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return ""

    def values(self, name: bytes) -> list[bytes]:
        """Every comma-separated element of every ``name`` header, lower-cased and trimmed."""
        found: list[bytes] = []
        for key, value in self.headers:
            if key == name:
                found.extend(item.strip().lower() for item in value.split(b","))
        return [item for item in found if item]


def _header_lines(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header fields from a head's lines after the status line, obsolete line folding undone."""
    headers: list[tuple[bytes, bytes]] = []
    folded: list[bytes] = []
    for line in lines:
        if _FOLDED.match(line):
            if not folded:
                raise MalformedResponse("continuation line at start of headers")
            folded[-1] += b" " + line.lstrip(b" \t")
        else:
            folded.append(line)
    for line in folded:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise MalformedResponse(f"illegal header line {line[:60]!r}")
        headers.append((match[1].lower(), match[2]))
    return headers


def _lines(block: bytes) -> list[bytes]:
    """The lines of a block that ends with a line end, each without its CRLF or LF (h11's split)."""
    lines = block.split(b"\n")[:-1]
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _status_line(line: bytes) -> tuple[int, bool]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise MalformedResponse(f"illegal status line {line[:60]!r}")
    return int(match[2]), match[1] == b"1"


def parse_head(head: bytes) -> Head:
    """A head up to and including the line end of its last header line. Raises MalformedResponse."""
    status_line, *lines = _lines(head)
    status, http11 = _status_line(status_line)
    return Head(status=status, http11=http11, headers=_header_lines(lines))


def _content_length(head: Head) -> int | None:
    values = set(head.values(b"content-length"))
    if not values:
        return None
    if len(values) != 1:
        raise MalformedResponse("conflicting Content-Length headers")
    (value,) = values
    if not _DIGITS.fullmatch(value) or len(value) > MAX_CONTENT_LENGTH_DIGITS:
        raise MalformedResponse(f"bad Content-Length {value[:30]!r}")
    return int(value)


class ResponseParser:
    """Bytes in (``feed``, then ``feed_eof`` if the peer closes), one response out.

    ``head`` is set as soon as the final status line and headers are in; ``body`` holds the
    body's first ``body_limit`` bytes. ``done`` turns true when the message ended or the body
    reached its limit (then ``complete`` stays false: the rest is never read); ``reusable``
    says whether the connection may carry another request.
    """

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_interim",
        "_keep_alive",
        "_remaining",
        "_scanned",
        "_state",
        "body",
        "body_limit",
        "complete",
        "head",
        "started",
    )

    def __init__(self, body_limit: int) -> None:
        self.body_limit = body_limit
        self.head: Head | None = None
        self.body = bytearray()
        self.started = False
        self.complete = False
        self._buffer = bytearray()
        self._state = _HEAD
        self._scanned = 0
        self._interim = 0
        self._remaining = 0
        self._chunk_left = 0
        self._keep_alive = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """The whole response was read, framed, with nothing after it, from a keep-alive peer."""
        return self.complete and self._keep_alive and not self._buffer

    def feed(self, data: bytes | bytearray) -> None:
        """Take bytes from the connection. Raises MalformedResponse."""
        if not data:
            return
        self.started = True
        self._buffer += data  # after the end, only to say the connection carries more than it should
        while self._state != _DONE and self._step():
            pass

    def feed_eof(self) -> None:
        """The peer closed its side. Raises ConnectionLost unless the response was complete."""
        if self._state == _BODY_UNTIL_CLOSE:
            self._finish(complete=True)
            self._keep_alive = False
        elif self._state != _DONE:
            where = "before answering" if not self.started else "before the end of its response"
            raise ConnectionLost(f"the destination closed the connection {where}", response_started=self.started)

    # -- one step each: False when more bytes are needed ------------------------------------------

    def _step(self) -> bool:
        state = self._state
        if state == _HEAD:
            return self._read_head()
        if state == _BODY_LENGTH:
            return self._read_length()
        if state == _BODY_UNTIL_CLOSE:
            self._take(len(self._buffer))
            return False
        if state == _BODY_CHUNK_SIZE:
            return self._read_chunk_size()
        if state == _BODY_CHUNK:
            return self._read_chunk()
        if state == _BODY_CHUNK_END:
            return self._read_chunk_end()
        return self._read_trailers()

    def _read_head(self) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        if buffer[0] < 0x21:  # h11's early check: an empty first line, or TLS bytes on plain HTTP
            raise MalformedResponse(f"no status line: the response starts with {bytes(buffer[:8])!r}")
        blank = _BLANK_LINE.search(buffer, max(0, self._scanned - 2))
        if blank is None:
            self._scanned = len(buffer)
            if self._scanned > MAX_HEAD_BYTES:
                raise MalformedResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
            first_line_end = buffer.find(b"\n")
            if first_line_end >= 0:  # not HTTP at all: say so now rather than wait for a blank line
                _status_line(_lines(bytes(buffer[: first_line_end + 1]))[0])
            return False
        if blank.start() > MAX_HEAD_BYTES:
            raise MalformedResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
        head = parse_head(bytes(buffer[: blank.start() + 1]))
        del buffer[: blank.end()]
        self._scanned = 0
        if head.status < 200:
            if head.status == 101:
                raise MalformedResponse("101 Switching Protocols, never asked for")
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise MalformedResponse(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")
            return bool(buffer)
        self._begin_body(head)
        return True

    def _begin_body(self, head: Head) -> None:
        """RFC 9112 section 6.3, as h11 applies it: which bytes are the body, and whether the
        connection may be used again."""
        encodings = head.values(b"transfer-encoding")
        if encodings and encodings != [b"chunked"]:
            raise MalformedResponse("only Transfer-Encoding: chunked is supported")
        length = _content_length(head)
        self.head = head
        self._keep_alive = head.http11 and b"close" not in head.values(b"connection")
        if head.status in (204, 304):
            self._finish(complete=True)
        elif encodings:
            self._state = _BODY_CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _BODY_LENGTH
            if length == 0:
                self._finish(complete=True)
        else:
            self._state = _BODY_UNTIL_CLOSE
            self._keep_alive = False

    def _take(self, size: int) -> bool:
        """Move ``size`` buffered body bytes into ``body``; when they overflow its limit, the
        reading ends there (False)."""
        room = self.body_limit - len(self.body)
        self.body += self._buffer[: min(size, room)]
        del self._buffer[:size]
        if size > room:
            self._finish(complete=False)
            return False
        return True

    def _finish(self, *, complete: bool) -> None:
        self.complete = complete
        self._state = _DONE

    def _read_length(self) -> bool:
        size = min(self._remaining, len(self._buffer))
        self._remaining -= size
        if self._take(size) and not self._remaining:
            self._finish(complete=True)
        return False

    def _read_chunk_size(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CHUNK_LINE_BYTES:
                raise MalformedResponse(f"chunk-size line longer than {MAX_CHUNK_LINE_BYTES} bytes")
            return False
        line = bytes(self._buffer[:end])
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise MalformedResponse(f"illegal chunk header {line[:40]!r}")
        del self._buffer[: end + 2]
        self._chunk_left = int(match[1], 16)
        self._state = _BODY_CHUNK if self._chunk_left else _TRAILERS
        return True

    def _read_chunk(self) -> bool:
        size = min(self._chunk_left, len(self._buffer))
        if not size:
            return False
        self._chunk_left -= size
        if not self._take(size):
            return False
        if not self._chunk_left:
            self._state = _BODY_CHUNK_END
        return True

    def _read_chunk_end(self) -> bool:
        if len(self._buffer) < 2:
            if self._buffer and self._buffer != b"\r":
                raise MalformedResponse("chunk not followed by CRLF")
            return False
        if self._buffer[:2] != b"\r\n":
            raise MalformedResponse("chunk not followed by CRLF")
        del self._buffer[:2]
        self._state = _BODY_CHUNK_SIZE
        return True

    def _read_trailers(self) -> bool:
        buffer = self._buffer
        if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
            del buffer[: 1 if buffer[:1] == b"\n" else 2]
            self._finish(complete=True)
            return False
        blank = _BLANK_LINE.search(buffer)
        if blank is None:
            if len(buffer) > MAX_HEAD_BYTES:
                raise MalformedResponse(f"trailers longer than {MAX_HEAD_BYTES} bytes")
            return False
        _header_lines(_lines(bytes(buffer[: blank.start() + 1])))
        del buffer[: blank.end()]
        self._finish(complete=True)
        return False
