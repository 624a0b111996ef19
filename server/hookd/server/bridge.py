"""The bridge between grpc.aio (asyncio) and the trio engine, on one thread and one event loop.

trio runs as a guest on the asyncio loop that serves gRPC (``trio.lowlevel.start_guest_run``).
A handler hands work to trio with ``TrioToken.run_sync_soon`` and awaits an asyncio future that
trio resolves. There is no thread hop and no cap on concurrent calls or streams.

Waking an idle trio costs a round trip through its I/O thread, so hand-offs are gathered: the
calls that arrive before trio next runs share one wake-up. ``call`` runs a coroutine in a trio
task of its own (cancelling the gRPC call cancels it); ``call_soon`` runs a plain function that
answers through a callback, for the hot paths (a publish) where a task per call costs more than
the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

Reply = Callable[[outcome.Outcome[T]], None]


class TrioBridge:
    """Create inside the trio run, with a nursery that outlives every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._handed: list[Callable[[], None]] = []

    def _hand_over(self, work: Callable[[], None]) -> None:
        """Run ``work`` in trio's context soon; one wake-up for everything handed meanwhile."""
        self._handed.append(work)
        if len(self._handed) == 1:
            self._token.run_sync_soon(self._run_handed)

    def _run_handed(self) -> None:
        handed, self._handed = self._handed, []
        for work in handed:
            work()

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

        self._hand_over(lambda: self._nursery.start_soon(runner))
        try:
            return await future
        except asyncio.CancelledError:
            self._token.run_sync_soon(scope.cancel)
            raise

    async def call_soon(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, reply=..., **kwargs)`` in trio's context, without a task, and return
        what it passes to ``reply`` (a result, or an error to raise).

        ``fn`` must not block: it starts the work and arranges for ``reply`` to be called once,
        from trio, when the work is over. Cancelling the gRPC call stops the wait, not the work.
        """
        future: asyncio.Future[T] = self._loop.create_future()

        def reply(result: outcome.Outcome[T]) -> None:
            if future.done():  # the caller went away
                return
            if isinstance(result, outcome.Error):
                future.set_exception(result.error)
            else:
                future.set_result(result.unwrap())

        def start() -> None:
            if future.done():
                return
            try:
                fn(*args, reply=reply, **kwargs)
            except Exception as error:
                reply(outcome.Error(error))

        self._hand_over(start)
        return await future
