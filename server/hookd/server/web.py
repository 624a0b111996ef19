"""The HTTP listener (``--http-listen``): the dashboard's files and the Connect API, one origin.

Paths under ``/hookd.v1.WebhookService/`` go to the Connect application (``connect_api``), whose
answers no cache may keep (some carry secrets: CreateWebhook's, RotateSecret's); every other GET
is a file of the dashboard, read once at start, gzipped once, sent with an ETag (one for each
encoding) and a Content-Security-Policy that allows scripts, styles and requests from this
origin only, nothing inline, and no framing. hypercorn serves it on the asyncio loop that
grpc.aio runs on, so an API call reaches the servicer exactly as a gRPC call does. There are no
cookies: the page sends the bearer token itself, so a page from another origin has nothing to
ride on (no CSRF surface).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ipaddress
import logging
import mimetypes
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from hookd.server.connect_api import PATH_PREFIX

log = logging.getLogger("hookd.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the dashboard's files are (committed; no build step).
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
#: Added to every answer of the API: CreateWebhook and RotateSecret answer with a signing secret,
#: which no cache along the way may keep.
API_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    #: The plain body's strong ETag; the gzipped body is another representation (other bytes),
    #: so it has its own, ``gzip_etag``.
    etag: str
    gzip_etag: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(body, gzip.compress(body, 9, mtime=0), content_type, f'"{digest}"', f'"{digest}-gzip"')


def load_assets(root: Path = DASHBOARD_DIR) -> dict[str, Asset]:
    """Every file under ``root`` by URL path (``/static/app.js``), and ``index.html`` at ``/`` (the
    page routes itself with the URL's fragment, ``/#/health``, so the server knows no other page)."""
    mimetypes.add_type("text/javascript", ".js")
    assets = {
        "/static/" + path.relative_to(root).as_posix(): Asset.read(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "index.html"
    }
    assets["/"] = Asset.read(root / "index.html")
    return assets


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return b""


def none_match(if_none_match: bytes, etag: str) -> bool:
    """Whether an If-None-Match header (``*``, or a list of tags, weak or strong) names ``etag``:
    its weak comparison (RFC 9110, 13.1.2), so ``W/"x"`` matches ``"x"``."""
    tags = [tag.strip() for tag in if_none_match.decode("latin-1").split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


class StaticFiles:
    """GET and HEAD of the dashboard's files; anything else is 404 or 405."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self._assets = assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        asset = self._assets.get(path)
        if asset is None:
            await _respond(send, 404, b"not found\n", [(b"content-type", b"text/plain; charset=utf-8")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        gzipped = b"gzip" in _header(scope, b"accept-encoding")
        etag = asset.gzip_etag if gzipped else asset.etag
        headers = [
            (b"content-type", asset.content_type.encode()),
            (b"etag", etag.encode()),
            (b"cache-control", b"no-cache"),
            (b"vary", b"accept-encoding"),
        ]
        if none_match(_header(scope, b"if-none-match"), etag):
            await _respond(send, 304, b"", headers)
            return
        body = asset.body
        if gzipped:
            body = asset.gzipped
            headers.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, headers, length=len(body))


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], length: int = -1) -> None:
    headers = [*headers, *SECURITY_HEADERS]
    # A 304 has no body, and a length there would claim to be the full answer's (RFC 9110, 8.6).
    if status != 304:
        headers.append((b"content-length", str(len(body) if length < 0 else length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_api_headers(send: Send) -> Send:
    """``send`` that adds API_HEADERS to the answer's start, in place of any the API set."""

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {name for name, _ in API_HEADERS}
            kept = [(name, value) for name, value in message.get("headers", ()) if bytes(name).lower() not in names]
            message = {**message, "headers": [*kept, *API_HEADERS]}
        await send(message)

    return sending


def rebindable(host_header: bytes) -> bool:
    """Whether a request's Host names this server by a host name other than ``localhost``.

    A page on an attacker's domain can make that domain resolve to 127.0.0.1 (DNS rebinding) and
    then call the listener as its own origin, with none of the browser's cross-origin guards. It
    cannot make its requests carry an IP address or ``localhost`` as Host, so without tokens only
    those are served."""
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return False  # an IPv6 literal
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name in ("localhost", ""):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


class Router:
    """The Connect API under its service path, the dashboard everywhere else.

    Without tokens (``open_access``), only requests addressed to an IP address or ``localhost``
    are served (see ``rebindable``); with tokens, every call needs one anyway."""

    def __init__(self, api: ASGIApp, files: ASGIApp, *, open_access: bool = False) -> None:
        self._api = api
        self._files = files
        self._open_access = open_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif self._open_access and rebindable(_header(scope, b"host")):
            await _respond(
                send,
                403,
                b"hookd answers to an IP address or localhost while it has no --auth-token "
                b"(a guard against DNS rebinding); set --auth-token to use a host name\n",
                [(b"content-type", b"text/plain; charset=utf-8")],
            )
        elif scope["path"].startswith(PATH_PREFIX):
            await self._api(scope, receive, _with_api_headers(send))
        else:
            await self._files(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: the engine and the servicer live as long as the process."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_http(
    app: ASGIApp,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    tls: tuple[Path, Path] | None = None,
    grace_s: float = 5.0,
) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set, then let running requests finish for ``grace_s``."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None  # request lines would carry nothing useful, and no token must reach a log
    config.errorlog = log
    config.graceful_timeout = grace_s
    config.include_server_header = False
    if tls is not None:
        config.certfile, config.keyfile = (str(path) for path in tls)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
