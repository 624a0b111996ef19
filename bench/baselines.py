"""What hookd is measured against, run in the same benchmark process and on the same receiver.

``bare_httpx`` is the floor for hookd's own cost: the same bodies, the same concurrency, the same
HTTP client, with nothing persisted. ``worker_pool`` is the conventional design (Celery / RQ
style): a fixed pool of workers taking jobs from one shared queue, whatever their destination.
``receiver_capacity`` shows the receiver is not the limit: a minimal keep-alive HTTP/1.1 load
generator over raw trio streams, much cheaper per request than any real client.
"""

from __future__ import annotations

import time
from collections import deque

import httpx
import trio


async def _bare_httpx(url: str, body: bytes, total: int, concurrency: int) -> float:
    remaining = total
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return total / (time.perf_counter() - start)


def bare_httpx(url: str, body: bytes, total: int, concurrency: int) -> float:
    """Requests per second of a plain httpx loop."""
    return trio.run(_bare_httpx, url, body, total, concurrency)


async def _worker_pool(
    jobs: list[str], body: bytes, workers: int, timeout: float, window: float, fast_prefix: str
) -> tuple[float, int]:
    queue = deque(jobs)
    fast_done = 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=workers)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal fast_done
            while queue:
                url = queue.popleft()
                try:
                    with trio.move_on_after(timeout):
                        await client.post(url, content=body, headers={"content-type": "application/json"})
                        if url.startswith(fast_prefix):
                            fast_done += 1
                except httpx.HTTPError:
                    pass

        start = time.perf_counter()
        with trio.move_on_after(window):
            async with trio.open_nursery() as nursery:
                for _ in range(workers):
                    nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    return fast_done / elapsed, fast_done


def worker_pool(
    jobs: list[str], body: bytes, workers: int, timeout: float, window: float, fast_prefix: str
) -> tuple[float, int]:
    """The fast destination's completions per second within ``window`` seconds, and their count."""
    return trio.run(_worker_pool, jobs, body, workers, timeout, window, fast_prefix)


async def _receiver_capacity(port: int, connections: int, seconds: float) -> float:
    request = b"POST /ok HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    done = 0

    async def client() -> None:
        nonlocal done
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while True:
                await stream.send_all(request)
                buffer = b""
                while True:
                    buffer += await stream.receive_some(65536)
                    head, sep, rest = buffer.partition(b"\r\n\r\n")
                    if sep:
                        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                        if len(rest) >= length:
                            break
                done += 1

    start = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(client)
    return done / (time.perf_counter() - start)


def receiver_capacity(port: int, connections: int = 32, seconds: float = 3.0) -> float:
    return trio.run(_receiver_capacity, port, connections, seconds)
