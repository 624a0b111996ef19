"""Starts, supervises and retires the destination actors, and wakes them when retries fall due.

An actor that crashes is logged and restarted with backoff; its deliveries live in SQLite, so a
restart only forgets what memory held. Idle actors retire, so the number of live actors follows
the destinations that have work, not the number of webhooks.
"""

from __future__ import annotations

import heapq
import logging
import math

import trio

from hookd.engine.actor import ActorContext, DestinationActor
from hookd.engine.jobs import Job
from hookd.engine.store import queries

log = logging.getLogger("hookd.engine")

MAX_RESTART_BACKOFF_S = 30.0


class Dispatcher:
    def __init__(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        self.actors: dict[str, DestinationActor] = {}
        self._nursery: trio.Nursery | None = None
        self._timers: list[tuple[float, str]] = []
        self._earliest: dict[str, float] = {}
        self._timer_wake = trio.Event()
        self.restarts = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume every destination with pending deliveries, then serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for url, due in await self._ctx.readers.run(queries.destinations_with_work):
                self.schedule(url, due)
            task_status.started()
            await self._timer_loop()

    # -- entry points for the service, all synchronous ---------------------------------------------

    def offer(self, url: str, job: Job) -> None:
        self._actor(url).offer(job)

    def poke(self, url: str) -> None:
        self._actor(url).poke()

    def cancel_webhook(self, url: str, webhook_id: str) -> None:
        actor = self.actors.get(url)
        if actor is not None:
            actor.cancel_webhook(webhook_id)

    def schedule(self, url: str, wall_due: float) -> None:
        """Wake ``url``'s actor at ``wall_due``; only the earliest pending wake-up per URL is kept."""
        when = self._ctx.clock.to_trio(wall_due)
        current = self._earliest.get(url)
        if current is not None and current <= when:
            return
        self._earliest[url] = when
        heapq.heappush(self._timers, (when, url))
        self._timer_wake.set()

    # -- internals ---------------------------------------------------------------------------------

    def _actor(self, url: str) -> DestinationActor:
        actor = self.actors.get(url)
        if actor is None:
            assert self._nursery is not None, "dispatcher not running"
            actor = DestinationActor(url, self._ctx, self._retire)
            self.actors[url] = actor
            self._nursery.start_soon(self._supervise, actor)
        return actor

    def _retire(self, actor: DestinationActor) -> None:
        if self.actors.get(actor.url) is actor:
            del self.actors[actor.url]

    async def _supervise(self, actor: DestinationActor) -> None:
        backoff = 0.1
        while True:
            try:
                await actor.run()
                return
            except Exception:
                self.restarts += 1
                log.exception("actor crashed destination=%s restart_in=%.1fs", actor.url, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)
            actor.reset()
            if self.actors.get(actor.url) is not actor:
                return

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake = trio.Event()
            now = trio.current_time()
            while self._timers and self._timers[0][0] <= now:
                when, url = heapq.heappop(self._timers)
                if self._earliest.get(url) == when:
                    del self._earliest[url]
                    self.poke(url)
            deadline = self._timers[0][0] if self._timers else math.inf
            with trio.move_on_at(deadline):
                await self._timer_wake.wait()
