"""StreamHealth watchers: how many may be open, and how long one may take to accept a snapshot.

A watcher that stops reading (a stuck dashboard, a client gone without closing its connection,
or a hostile one) used to hold its handler, and grpc's record of the call with a snapshot in
it, for ever. Now each send is bounded: a snapshot not taken within ``send_timeout_s`` drops
the watcher. Its call is ended with RESOURCE_EXHAUSTED; if even that status cannot go out (it
waits behind the snapshot for the same flow-control window), the connection is shut down,
which is the only way grpc.aio lets a server free such a call (``sockets``).

Open watchers are capped at ``max_watchers``; one more is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import grpc

from hookd.engine.errors import ResourceExhausted
from hookd.server.sockets import shut_down_connection

log = logging.getLogger("hookd.server")

DEFAULT_MAX_WATCHERS = 1000
DEFAULT_SEND_TIMEOUT_S = 30.0
#: How long the status that ends a dropped watcher may take before its connection is shut down.
DROP_GRACE_S = 1.0

Context = grpc.aio.ServicerContext[Any, Any]


class Watchers:
    def __init__(self, max_watchers: int = DEFAULT_MAX_WATCHERS, send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S):
        self.max_watchers = max_watchers
        self.send_timeout_s = send_timeout_s
        #: The gRPC port, once bound: with the peer's address it finds a connection's socket.
        self.local_port = 0
        self.count = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<Watchers {self.count}/{self.max_watchers} open, {self.dropped} dropped>"

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one watcher's place for the duration of its call."""
        if self.count >= self.max_watchers:
            raise ResourceExhausted(
                f"StreamHealth: {self.count} watchers are open, the most this server takes "
                "(--max-watchers); close one or try again later"
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1

    async def send(self, context: Context, message: Any) -> bool:
        """Write one snapshot; False when the watcher did not take it in time and was dropped."""
        try:
            await asyncio.wait_for(context.write(message), self.send_timeout_s)
        except TimeoutError:
            await self._drop(context)
            return False
        return True

    async def _drop(self, context: Context) -> None:
        """End a watcher's call; shut its connection down if the ending cannot be sent either.
        Leaves the call aborted, so grpc ends it quietly once the handler returns."""
        peer = context.peer()
        self.dropped += 1
        log.warning("health watcher dropped peer=%s: a snapshot was not taken within %g s", peer, self.send_timeout_s)
        details = f"StreamHealth: a snapshot was not taken within {self.send_timeout_s:g} s; dropped"
        try:
            await asyncio.wait_for(context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details), DROP_GRACE_S)
        except grpc.aio.AbortError:
            return  # the status went out: grpc finishes the call
        except TimeoutError:
            pass
        closed = shut_down_connection(peer, self.local_port)
        log.warning("health watcher connection %s peer=%s", "shut down" if closed else "not found", peer)
