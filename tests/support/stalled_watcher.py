"""A StreamHealth watcher that stops taking snapshots, written against raw HTTP/2 frames.

A gRPC client library keeps its stream windows open as long as the application reads, so a
stalled watcher is made by hand: it opens one StreamHealth stream, then keeps its connection
alive (it acknowledges SETTINGS and answers every PING, so keepalive sees a healthy peer) but
never grants the stream any more window. The server's next write then waits for ever, unless
the server bounds it. ``closed`` tells whether the server has ended the connection.

HPACK is written as literal fields without indexing, which every decoder accepts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING = 0x0, 0x1, 0x4, 0x6
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    head = _read_exactly(sock, 9)
    return head[3], head[4], _read_exactly(sock, int.from_bytes(head[:3], "big"))


class StalledWatcher:
    """One connection with one StreamHealth stream whose window is never replenished."""

    def __init__(self, port: int, request: bytes, *, window: int = 16 * 1024) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.received = 0
        self.closed = threading.Event()
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, window)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        headers = b"".join(
            _literal(name, value)
            for name, value in [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/hookd.v1.WebhookService/StreamHealth"),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ]
        )
        message = b"\x00" + len(request).to_bytes(4, "big") + request
        self.sock.sendall(frame(HEADERS, END_HEADERS, 1, headers) + frame(DATA, END_STREAM, 1, message))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Answer what keeps a connection alive; count the stream's bytes; never grant window."""
        try:
            while True:
                kind, flags, payload = read_frame(self.sock)
                if kind == SETTINGS and not flags & ACK:
                    self.sock.sendall(frame(SETTINGS, ACK, 0, b""))
                elif kind == PING and not flags & ACK:
                    self.sock.sendall(frame(PING, ACK, 0, payload))
                elif kind == DATA:
                    self.received += len(payload)
        except (EOFError, OSError):
            self.closed.set()

    def close(self) -> None:
        """Close the socket for real (a shutdown first: the reader thread is blocked in recv)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)
