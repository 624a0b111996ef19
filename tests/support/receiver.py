"""HTTP receivers on 127.0.0.1 that tests control: fast, slow, hanging, failing, 429, resetting.

Each receiver runs in its own thread pool (``ThreadingHTTPServer``) in the test process and
records every request it gets, so tests assert on what really went over the wire.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    time: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to answer: a status, headers, a body, after a delay; or ``reset`` / ``hang``."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    hang: bool = False


Behaviour = Callable[[Received, int], Reply]


def always(reply: Reply) -> Behaviour:
    return lambda request, count: reply


def fail_first(n: int, failure: Reply, then: Reply | None = None) -> Behaviour:
    """Answer ``failure`` to the first ``n`` requests, then ``then`` (200 by default)."""
    success = then or Reply()
    return lambda request, count: failure if count <= n else success


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) resets connections when hookd opens many at once.
    request_queue_size = 256


class Receiver:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour: Behaviour = behaviour or always(Reply())
        self.requests: list[Received] = []
        #: Requests being answered now, and the most there ever were at once.
        self.in_progress = 0
        self.most_in_progress = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver._lock:
                    receiver.requests.append(request)
                    count = len(receiver.requests)
                    receiver.in_progress += 1
                    receiver.most_in_progress = max(receiver.most_in_progress, receiver.in_progress)
                try:
                    self._answer(receiver.behaviour(request, count))
                finally:
                    with receiver._lock:
                        receiver.in_progress -= 1

            def _answer(self, reply: Reply) -> None:
                if reply.hang:
                    receiver._stop.wait(600)
                    return
                if reply.delay:
                    receiver._stop.wait(reply.delay)
                if reply.reset:
                    # SO_LINGER 0: close sends RST instead of FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, count: int, timeout: float = 20.0, path: str | None = None) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.received(path))}")

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate`` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
