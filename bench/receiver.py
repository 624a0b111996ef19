"""A fast HTTP receiver in its own process, for the benchmarks.

trio + h11, one event loop, keep-alive. What it answers depends on the path's first segment:
``/ok...`` 200 at once, ``/hang...`` never answers, ``/fail...`` 500, ``/slow<ms>...`` 200 after
that many milliseconds. ``GET /stats`` returns JSON: request counts per first segment, and the
publish-to-arrival latencies (ms) of bodies whose data carries ``sent_at`` (epoch seconds).
Run: ``python -m bench.receiver PORT_FILE``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import h11
import trio

counts: Counter[str] = Counter()
latencies_ms: list[float] = []


def _segment(target: bytes) -> str:
    path = target.split(b"?", 1)[0].decode()
    first = path.strip("/").split("/", 1)[0]
    return first or "root"


async def _reply(stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes) -> None:
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
    await stream.send_all(conn.send(h11.Data(data=body)) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


async def handle(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    body = bytearray()
    request: h11.Request | None = None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                await _respond(stream, conn, request, bytes(body))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await stream.aclose()


async def _respond(stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, body: bytes) -> None:
    segment = _segment(request.target)
    if request.method == b"GET" and segment == "stats":
        payload = json.dumps({"counts": counts, "latencies_ms": latencies_ms}).encode()
        await _reply(stream, conn, 200, payload)
        return
    if request.method == b"POST" and segment == "reset":
        counts.clear()
        latencies_ms.clear()
        await _reply(stream, conn, 200, b"{}")
        return
    counts[segment] += 1
    if segment.startswith("lat"):
        try:
            sent_at = json.loads(body)["data"]["sent_at"]
            latencies_ms.append((time.time() - float(sent_at)) * 1000.0)
        except (ValueError, KeyError, TypeError):
            pass
    if segment.startswith("hang"):
        await trio.sleep_forever()
    if segment.startswith("slow"):
        await trio.sleep(int(segment[4:] or "10") / 1000.0)
    await _reply(stream, conn, 500 if segment.startswith("fail") else 200, b'{"ok":true}')


async def main(port_file: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    port_file.write_text(str(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
