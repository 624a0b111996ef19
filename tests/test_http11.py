"""The HTTP/1.1 wire format hookd speaks to destinations, in-process and without sockets.

Responses are fed byte by byte as well as whole (a destination may split them anywhere), and
hypothesis holds the parser to h11's answers for well-formed responses of every framing.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.engine.http11 import (
    MAX_HEAD_BYTES,
    MAX_INTERIM_RESPONSES,
    ConnectionLost,
    MalformedResponse,
    RequestNotEncodable,
    ResponseParser,
    encode_request,
    target_of,
)

LIMIT = 1024


@dataclass
class Parsed:
    status: int
    body: bytes
    complete: bool
    reusable: bool


def parse(raw: bytes, *, eof: bool = False, split: bool = False, limit: int = LIMIT) -> Parsed:
    """Feed ``raw`` (one byte at a time when ``split``), then the peer's close when ``eof``."""
    parser = ResponseParser(limit)
    pieces = [raw[i : i + 1] for i in range(len(raw))] if split else [raw]
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.feed_eof()
    assert parser.done, "the parser still waits for bytes"
    assert parser.head is not None
    return Parsed(parser.head.status, bytes(parser.body), parser.complete, parser.reusable)


# -- responses that parse -------------------------------------------------------------------------

WELL_FORMED = [
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", False, Parsed(200, b"ok", True, True), id="length"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", False, Parsed(204, b"", True, True), id="no-content"),
    pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", False, Parsed(200, b"", True, True), id="empty"),
    pytest.param(b"HTTP/1.1 200\r\ncontent-length: 1\r\n\r\nx", False, Parsed(200, b"x", True, True), id="no-reason"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3;ext=1\r\n!!!\r\n0\r\n\r\n",
        False,
        Parsed(200, b"ok!!!", True, True),
        id="chunked",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n1 \r\nx\r\n0\r\nx-trailer: 1\r\n\r\n",
        False,
        Parsed(200, b"x", True, True),
        id="chunked-trailers",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\nuntil close", True, Parsed(200, b"until close", True, False), id="no-length"),
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\nold", True, Parsed(200, b"old", True, False), id="http10-close"),
    pytest.param(
        b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\n\r\nold",
        False,
        Parsed(200, b"old", True, False),
        id="http10-never-kept",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: Close\r\n\r\nok",
        False,
        Parsed(200, b"ok", True, False),
        id="connection-close",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\n!",
        False,
        Parsed(201, b"!", True, True),
        id="interim",
    ),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, Parsed(200, b"ok", True, True), id="bare-lf"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nx-folded: a\r\n  b\r\ncontent-length: 2\r\n\r\nok",
        False,
        Parsed(200, b"ok", True, True),
        id="obs-fold",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
        False,
        Parsed(200, b"ok", True, True),
        id="repeated-same-length",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nx-name: caf\xc3\xa9 \xff\r\ncontent-length: 2\r\n\r\nok",
        False,
        Parsed(200, b"ok", True, True),
        id="non-latin-1-value",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        False,
        Parsed(200, b"ok", True, False),
        id="bytes-after-the-response",
    ),
    pytest.param(
        b"HTTP/1.1 500 Oops\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        False,
        Parsed(500, b"x", True, True),
        id="chunked-beats-length",
    ),
]


@pytest.mark.parametrize(("raw", "eof", "expected"), WELL_FORMED)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_responses_parse_however_they_are_split(raw: bytes, eof: bool, expected: Parsed, split: bool) -> None:
    assert parse(raw, eof=eof, split=split) == expected


def test_headers_are_kept_for_the_caller() -> None:
    parser = ResponseParser(LIMIT)
    parser.feed(b"HTTP/1.1 429 Slow\r\nRetry-After: 7 \r\nLocation: /x\r\ncontent-length: 0\r\n\r\n")
    assert parser.head is not None
    assert (parser.head.get(b"retry-after"), parser.head.get(b"location"), parser.head.get(b"missing")) == (
        "7",
        "/x",
        "",
    )


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_body_is_read_to_the_limit_and_no_further(framing: str) -> None:
    body = b"x" * (3 * LIMIT)
    if framing == "length":
        raw = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (100, body[i : i + 100]) for i in range(0, len(body), 100)
        )
    else:
        raw = b"HTTP/1.1 200 OK\r\n\r\n" + body
    parser = ResponseParser(LIMIT)
    parser.feed(raw[: len(raw) - len(body) + LIMIT + 1])
    assert parser.done and not parser.complete and not parser.reusable
    assert bytes(parser.body) == b"x" * LIMIT


def test_a_body_exactly_at_the_limit_is_complete() -> None:
    result = parse(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % LIMIT + b"y" * LIMIT)
    assert result == Parsed(200, b"y" * LIMIT, True, True)


def test_feeding_in_two_pieces_keeps_the_head_scan_correct() -> None:
    """The blank line that ends the head may straddle two reads."""
    raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    for cut in range(1, len(raw)):
        parser = ResponseParser(LIMIT)
        parser.feed(raw[:cut])
        parser.feed(raw[cut:])
        assert parser.done and parser.complete and bytes(parser.body) == b"ok", cut


# -- responses that do not ------------------------------------------------------------------------

MALFORMED = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n",
    "not-http-one-line": b"220 smtp.example ESMTP\r\n",
    "tls-on-plain-http": b"\x15\x03\x01\x00\x02\x02\x46",
    "empty-first-line": b"\r\nHTTP/1.1 200 OK\r\n\r\n",
    "http2-version": b"HTTP/2.0 200 OK\r\n\r\n",
    "two-digit-status": b"HTTP/1.1 20 OK\r\n\r\n",
    "status-not-digits": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "bad-header-line": b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nx-a: b\x00c\r\n\r\n",
    "fold-at-start": b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
    "negative-length": b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    "huge-length": b"HTTP/1.1 200 OK\r\ncontent-length: 123456789012345678901\r\n\r\n",
    "hex-length": b"HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
    "conflicting-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
    "gzip-transfer-encoding": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    "chunk-without-crlf": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nxyz",
    "endless-chunk-line": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;" + b"e" * 5000,
    "huge-head": b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * MAX_HEAD_BYTES,
    "huge-head-complete": b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    "too-many-interim": b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM_RESPONSES + 1),
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_what_is_not_http_is_malformed(raw: bytes, split: bool) -> None:
    parser = ResponseParser(LIMIT)
    with pytest.raises(MalformedResponse):
        for piece in [raw[i : i + 1] for i in range(len(raw))] if split else [raw]:
            parser.feed(piece)


@pytest.mark.parametrize(
    ("raw", "started"),
    [
        (b"", False),
        (b"HTTP/1.1 200 OK\r\ncontent-le", True),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab", True),
    ],
    ids=["before-answering", "mid-head", "mid-body", "mid-chunk"],
)
def test_a_close_before_the_end_is_a_lost_connection(raw: bytes, started: bool) -> None:
    parser = ResponseParser(LIMIT)
    parser.feed(raw)
    with pytest.raises(ConnectionLost) as lost:
        parser.feed_eof()
    assert lost.value.response_started is started


# -- h11 as the oracle ------------------------------------------------------------------------------

_TOKEN_CHARS = "!#$%&'*+-.^_`|~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_header_names = st.text(_TOKEN_CHARS, min_size=1, max_size=12).filter(
    lambda name: name.lower() not in ("content-length", "transfer-encoding", "connection")
)
_header_values = st.binary(max_size=20).map(
    lambda raw: bytes(b for b in raw if b not in b"\x00\r\n\t\x0b\x0c ").strip() or b"v"
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A well-formed response (interim answers first, sometimes) and whether it ends by a close."""
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    status = draw(st.integers(200, 599).filter(lambda code: code not in (204, 304)))
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=5))
    body = draw(st.binary(max_size=2 * LIMIT))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    close_header = draw(st.booleans())
    head = [b"HTTP/%s %d Reason" % (version, status)]
    head += [name.encode() + b": " + value for name, value in headers]
    if close_header:
        head.append(b"Connection: close")
    if framing == "length":
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 300), max_size=10))
        chunks, rest = [], body
        for size in sizes:
            chunks.append(rest[:size])
            rest = rest[size:]
        chunks = [chunk for chunk in [*chunks, rest] if chunk]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    else:
        payload = body
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    return interim + b"\r\n".join(head) + b"\r\n\r\n" + payload, framing == "close"


def h11_reading(raw: bytes, closes: bool) -> tuple[int, bytes, bool]:
    """Status, body and keep-alive as h11 reads them, as a client that sent one POST."""
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(raw)
    if closes:
        connection.receive_data(b"")
    status, body = 0, b""
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    return status, body, connection.their_state is h11.DONE and connection.our_state is h11.DONE


@settings(max_examples=300, deadline=None)
@given(responses(), st.lists(st.integers(1, 64), max_size=8))
def test_parser_agrees_with_h11(response: tuple[bytes, bool], cuts: list[int]) -> None:
    raw, closes = response
    parser = ResponseParser(LIMIT)
    rest = raw
    for cut in cuts:
        parser.feed(rest[:cut])
        rest = rest[cut:]
    parser.feed(rest)
    if closes and not parser.done:
        parser.feed_eof()
    status, body, keep_alive = h11_reading(raw, closes)
    assert parser.done and parser.head is not None
    assert parser.head.status == status
    assert bytes(parser.body) == body[:LIMIT]
    assert parser.complete == (len(body) <= LIMIT)
    if closes:  # a body that ends with the connection leaves nothing to reuse
        assert not parser.reusable
    elif parser.complete:
        assert parser.reusable == keep_alive


# -- the request ----------------------------------------------------------------------------------


def test_request_carries_host_length_and_headers_in_ascii() -> None:
    target = target_of("https://Bücher.example:8443/hooks/ü?x=ä")
    raw = encode_request(target, {"content-type": "application/json", "x-key": "a b"}, b"{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /hooks/%C3%BC?x=%C3%A4 HTTP/1.1",
        b"host: xn--bcher-kva.example:8443",
        b"content-type: application/json",
        b"x-key: a b",
        b"content-length: 2",
    ]
    assert body == b"{}"
    assert (target.tls, target.host, target.port) == (True, "xn--bcher-kva.example", 8443)


@pytest.mark.parametrize(
    ("url", "host_header", "path"),
    [
        ("http://example.com", "example.com", "/"),
        ("http://example.com:80/a", "example.com", "/a"),
        ("https://example.com:443/a", "example.com", "/a"),
        ("http://[::1]:8080/x", "[::1]:8080", "/x"),
        ("https://[2001:db8::1]/", "[2001:db8::1]", "/"),
        ("http://127.0.0.1:9/p?q=1#fragment", "127.0.0.1:9", "/p?q=1"),
    ],
)
def test_host_header_and_path(url: str, host_header: str, path: str) -> None:
    target = target_of(url)
    assert (target.host_header, target.path) == (host_header, path)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-evil": "a\r\nx-injected: 1"},
        {"x-evil": "a\nb"},
        {"x-evil": "caf\u00e9"},
        {"x-evil": " padded"},
        {"bad name": "v"},
        {"x-colon:": "v"},
        {"": "v"},
        {"Content-Length": "0"},
        {"transfer-encoding": "chunked"},
        {"Host": "elsewhere.example"},
    ],
    ids=lambda headers: repr(headers)[:30],
)
def test_headers_http_cannot_carry_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(RequestNotEncodable) as refused:
        encode_request(target_of("http://example.com/"), headers, b"")
    assert headers[next(iter(headers))] not in str(refused.value) or not next(iter(headers.values()))


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///nohost", "http://example.com:99999/", "mailto:x@y"])
def test_urls_that_cannot_be_requested(url: str) -> None:
    with pytest.raises(RequestNotEncodable):
        target_of(url)


@st.composite
def damaged_responses(draw: st.DrawFn) -> bytes:
    """A well-formed response with bytes flipped, cut out or spliced in."""
    raw = bytearray(draw(responses())[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "cut", "splice"]))
        if action == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at : at + draw(st.integers(1, 8))]
        else:
            raw[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b":", b" ", b"\x00", b"-1", b"chunked", b"\xff"]))
    return bytes(raw)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), damaged_responses()), st.integers(1, 50), st.booleans())
def test_any_bytes_end_in_a_response_or_one_of_two_errors(raw: bytes, step: int, eof: bool) -> None:
    parser = ResponseParser(LIMIT)
    try:
        for at in range(0, len(raw), step):
            parser.feed(raw[at : at + step])
        if eof:
            parser.feed_eof()
    except (MalformedResponse, ConnectionLost):
        return
    if parser.done:
        assert parser.head is not None and 200 <= parser.head.status <= 999
        assert len(parser.body) <= LIMIT
