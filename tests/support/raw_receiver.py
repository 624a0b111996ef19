"""Receivers that misbehave below HTTP: raw sockets on 127.0.0.1, optionally wrapped in TLS.

``tests.support.receiver`` speaks correct HTTP; these do what real destinations sometimes do
instead: reset mid-response, never answer, drip the body a byte a second, send a body of
100 MB, answer something that is not HTTP. Each reads the request first (so it counts what
hookd sent), then runs its ``Misbehaviour`` on the connection, in a thread of its own.
Misbehaviours may read more requests from the connection (``RawReceiver.next_request``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

Misbehaviour = Callable[[socket.socket, threading.Event, "RawReceiver"], None]


@dataclass
class RawRequest:
    head: bytes
    body: bytes


def _read_request(conn: socket.socket) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return RawRequest(head, body)


class RawReceiver:
    """Accepts connections, reads one request on each, then misbehaves as told."""

    def __init__(self, misbehaviour: Misbehaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self.misbehaviour = misbehaviour
        self.requests: list[RawRequest] = []
        #: Bytes the misbehaviour managed to send (the 100 MB body counts here).
        self.bytes_sent = 0
        #: Connections the misbehaviour is holding open right now.
        self.open_connections = 0
        self._connections = 0
        self._tls = tls
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def connections(self) -> int:
        with self._lock:
            return self._connections

    def next_request(self, conn: socket.socket, stop: threading.Event) -> RawRequest | None:
        """Wait for another request on ``conn`` (recorded like the first); None when the client
        closed the connection or the test ended."""
        while not select.select([conn], [], [], 0.2)[0]:
            if stop.is_set():
                return None
        request = _read_request(conn)
        if request is not None:
            with self._lock:
                self.requests.append(request)
        return request

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(raw, server_side=True)
            conn.settimeout(30)
            with self._lock:
                self._connections += 1
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
                self.open_connections += 1
            try:
                self.misbehaviour(conn, self._stop, self)
            finally:
                with self._lock:
                    self.open_connections -= 1
        except (OSError, ssl.SSLError):
            pass  # the client gave up on us: that is what these receivers are for
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)


# -- misbehaviours ---------------------------------------------------------------------------------


def reset_mid_response(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """Status line, headers and a little of the promised body, then RST (SO_LINGER 0)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\npartial")
    stop.wait(0.05)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def never_answer(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """Hold the connection open, silent, until the client leaves or the test ends."""
    conn.settimeout(0.2)
    while not stop.is_set():
        try:
            if not conn.recv(1):
                return
        except TimeoutError:
            continue


def slow_drip(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """A 200 whose 100-byte body comes one byte per second: every byte resets a read timeout."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n")
    for _ in range(100):
        if stop.wait(1.0):
            return
        conn.sendall(b".")
        receiver.add_sent(1)


HUGE_BODY_BYTES = 100 * 1024 * 1024


def huge_body(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """A 200 with a 100 MB body, sent as fast as the client takes it."""
    conn.sendall(f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {HUGE_BODY_BYTES}\r\n\r\n".encode())
    chunk = b"x" * 65536
    for _ in range(HUGE_BODY_BYTES // len(chunk)):
        if stop.is_set():
            return
        conn.sendall(chunk)
        receiver.add_sent(len(chunk))


def not_http(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """Something that is not an HTTP response at all."""
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n")
    stop.wait(0.2)


def ok(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """A plain, correct 200 (for the TLS receivers)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")


def answer_with(response: bytes) -> Misbehaviour:
    """Send ``response`` exactly as given, whatever it holds, then close."""

    def misbehaviour(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
        conn.sendall(response)
        receiver.add_sent(len(response))

    return misbehaviour


KEEP_ALIVE_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


def closes_when_reused(conn: socket.socket, stop: threading.Event, receiver: RawReceiver) -> None:
    """A 200 that keeps the connection alive; but when the next request arrives on it, close
    without answering: what a server whose idle timeout fires just as the request arrives does
    (its close and the request cross on the wire)."""
    conn.sendall(KEEP_ALIVE_OK)
    receiver.next_request(conn, stop)
