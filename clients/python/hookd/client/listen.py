"""``hookctl listen``: a local HTTP receiver to watch webhooks arrive while developing.

It checks each request's Standard Webhooks signature with the webhook's secret, reports it,
and answers with a chosen status after a chosen delay, so retries and timeouts can be tried by
hand. The standard library's threading server is enough: this is a foreground process for one
developer, and a slow answer (``--delay``) must not hold up the next request.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import standardwebhooks

#: How much of a body a report keeps.
EXCERPT = 400


@dataclass
class Delivery:
    """One request as received, and what was answered."""

    time: float
    method: str
    path: str
    #: The ``webhook-id`` header: the same on every attempt of one delivery.
    message_id: str
    #: The envelope's ``type`` and ``id`` (the event), when the body is a JSON envelope.
    event_type: str
    event_id: str
    #: ``ok``, ``invalid`` or ``unchecked`` (no secret given).
    signature: str
    signature_error: str
    body: str
    status: int
    delay: float

    def as_dict(self) -> dict[str, Any]:
        """camelCase keys, like the protobuf JSON of every other ``--json`` output."""
        return {_camel(name): value for name, value in self.__dict__.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def secret_checker(secret: str) -> standardwebhooks.Webhook:
    """Fails at start-up, not at the first request, when the secret is malformed."""
    try:
        return standardwebhooks.Webhook(secret)
    except Exception as error:  # the library raises binascii, ValueError or its own errors
        raise ValueError(f"not a valid signing secret ({error})") from None


def _envelope(body: bytes) -> tuple[str, str]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(parsed, dict):
        return "", ""
    return str(parsed.get("type", "")), str(parsed.get("id", ""))


class Listener:
    """A threading HTTP server that reports each POST to ``report`` and answers ``status``."""

    def __init__(
        self,
        host: str,
        port: int,
        report: Callable[[Delivery], None],
        *,
        secret: str | None = None,
        status: int = 200,
        delay: float = 0.0,
    ) -> None:
        self.checker = secret_checker(secret) if secret else None
        self.status = status
        self.delay = delay
        self._report = report
        self._report_lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        # Handler threads may sit on a kept-alive connection for as long as the sender keeps it;
        # stopping must not wait for them.
        self._server.daemon_threads = True
        self._server.block_on_close = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def verify(self, body: bytes, headers: dict[str, str]) -> tuple[str, str]:
        if self.checker is None:
            return "unchecked", ""
        try:
            self.checker.verify(body, headers, json_parse=False)
        except Exception as error:  # missing headers, bad encoding, stale timestamp, wrong MAC
            return "invalid", str(error) or type(error).__name__
        return "ok", ""

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Delivery:
        signature, problem = self.verify(body, headers)
        event_type, event_id = _envelope(body)
        delivery = Delivery(
            time=time.time(),
            method=method,
            path=path,
            message_id=headers.get("webhook-id", ""),
            event_type=event_type,
            event_id=event_id,
            signature=signature,
            signature_error=problem,
            body=body[:EXCERPT].decode(errors="replace"),
            status=self.status,
            delay=self.delay,
        )
        with self._report_lock:
            self._report(delivery)
        if self.delay:
            self._stop.wait(self.delay)
        return delivery

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Each request is reported once, by ``report``; no access log on stderr."""

            def _answer(self, status: int, text: str) -> None:
                payload = text.encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain; charset=utf-8")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer(200, "hookctl listen: POST webhooks here\n")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                delivery = listener.handle("POST", self.path, headers, body)
                self._answer(delivery.status, f"hookctl listen answered {delivery.status}\n")

        return Handler

    def serve(self) -> None:
        """Serve until Ctrl-C or SIGTERM, then close the socket and return normally."""

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._server.server_close()
