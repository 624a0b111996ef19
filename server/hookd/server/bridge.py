"""The bridge between grpc.aio (asyncio) and the trio engine, on one thread and one event loop.

trio runs as a guest on the asyncio loop that serves gRPC (``trio.lowlevel.start_guest_run``).
A handler hands work to trio with ``TrioToken.run_sync_soon`` and awaits an asyncio future that
the trio task resolves. There is no thread hop and no cap on concurrent calls or streams, and
cancelling the gRPC call cancels the trio task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class TrioBridge:
    """Create inside the trio run, with a nursery that outlives every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` in trio from asyncio; return its result or raise its error."""
        future: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()

        async def runner() -> None:
            try:
                with scope:
                    try:
                        value = await fn(*args, **kwargs)
                    except Exception as error:
                        if not future.done():
                            future.set_exception(error)
                        return
                    if not future.done():
                        future.set_result(value)
            finally:
                if not future.done():
                    future.cancel()

        self._token.run_sync_soon(self._nursery.start_soon, runner)
        try:
            return await future
        except asyncio.CancelledError:
            self._token.run_sync_soon(scope.cancel)
            raise
