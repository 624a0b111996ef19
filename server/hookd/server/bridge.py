"""The bridge between grpc.aio (asyncio) and the trio engine, on one thread and one event loop.

trio runs as a guest on the asyncio loop that serves gRPC (``trio.lowlevel.start_guest_run``).
A handler hands work to trio with ``TrioToken.run_sync_soon`` and awaits an asyncio future that
trio resolves. There is no thread hop and no cap on concurrent calls or streams.

Waking an idle trio costs a round trip through its I/O thread, so hand-offs are gathered: the
calls that arrive before trio next runs share one wake-up. ``call`` runs a coroutine in a trio
task of its own; ``call_soon`` runs a plain function that answers through a callback, for the
hot paths (a publish) where a task per call costs more than the work. Cancelling the gRPC call
cancels the task, if there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class TrioBridge:
    """Create inside the trio run, with a nursery that outlives every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._handed: list[tuple[Callable[[], None], asyncio.Future[Any]]] = []

    def _hand_over(self, work: Callable[[], None], future: asyncio.Future[Any]) -> None:
        """Run ``work`` in trio's context soon; one wake-up for everything handed meanwhile.
        Should ``work`` raise, ``future`` gets the error."""
        self._handed.append((work, future))
        if len(self._handed) == 1:
            try:
                self._token.run_sync_soon(self._run_handed)
            except BaseException:  # trio has ended: nothing handed can run
                self._handed.clear()
                raise

    def _run_handed(self) -> None:
        handed, self._handed = self._handed, []
        for work, future in handed:
            try:
                work()
            except Exception as error:  # never into trio's own callback queue
                if not future.done():
                    future.set_exception(error)

    def _task(self, future: asyncio.Future[T], fn: Callable[[], Awaitable[T]]) -> trio.CancelScope:
        """Start ``fn`` in a trio task that resolves ``future``; cancel the returned scope to
        cancel the task."""
        scope = trio.CancelScope()

        async def runner() -> None:
            try:
                with scope:
                    try:
                        value = await fn()
                    except Exception as error:
                        if not future.done():
                            future.set_exception(error)
                        return
                    if not future.done():
                        future.set_result(value)
            finally:
                if not future.done():
                    future.cancel()

        self._nursery.start_soon(runner)
        return scope

    async def _wait(self, future: asyncio.Future[T], scopes: list[trio.CancelScope]) -> T:
        try:
            return await future
        except asyncio.CancelledError:
            for scope in scopes:
                self._token.run_sync_soon(scope.cancel)
            raise

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` in trio from asyncio; return its result or raise its error."""
        future: asyncio.Future[T] = self._loop.create_future()
        scopes: list[trio.CancelScope] = []
        self._hand_over(lambda: scopes.append(self._task(future, lambda: fn(*args, **kwargs))), future)
        return await self._wait(future, scopes)

    async def call_soon(self, fn: Callable[..., Callable[[], Awaitable[T]] | None], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, reply=..., **kwargs)`` in trio's context, without a task, and return
        what it passes to ``reply`` (a result, or an error to raise).

        ``fn`` must not block. It either starts the work and arranges for ``reply`` to be called
        once, from trio, when the work is over (and returns None), or returns a coroutine
        function for the bridge to run in a task, as ``call`` would (and never calls ``reply``).
        A call cancelled before trio runs ``fn`` starts nothing; once started, cancelling stops
        the wait, and the task if there is one, but not work already queued.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        scopes: list[trio.CancelScope] = []

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
            slow = fn(*args, reply=reply, **kwargs)
            if slow is not None:
                scopes.append(self._task(future, slow))

        self._hand_over(start, future)
        return await self._wait(future, scopes)
