"""Starts, supervises and retires the destination actors, and wakes them when retries fall due.

An actor's task runs only while it has work: with nothing queued, in flight or waiting on disk
it ends, and the actor parks (its breaker, rate and keep-alive connections kept); the next offer,
poke or retry starts it again. A parked actor retires after ``actor_idle_s`` (unless its breaker
still remembers a failing destination that has webhooks), so memory follows the destinations
that have work, not the number of webhooks, and ten thousand just-finished destinations cost no
ten thousand tasks.

An actor woken with deliveries waiting on disk does not start its task to read them: the
dispatcher reads the due deliveries of up to ``LOAD_BATCH`` such destinations at once, in one
trip to a reader thread, and starts each task with its work in hand. A publish that wakes ten
thousand destinations so costs a few hundred reads, not ten thousand tasks each waiting for one of
the few readers (which was most of such a node's peak memory).

An actor that crashes is logged and restarted with backoff; its deliveries live in the store, so
a restart only forgets what memory held. The deliveries it had in flight are charged a failed
``INTERNAL`` attempt each, so one whose sending crashes the actor again and again runs out of
attempts and ends FAILED instead of looping.

Only destinations this node owns get an actor (``Ownership``); offers and pokes for the others
are dropped here, because their owner hears of the same deliveries from the store.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
from collections.abc import Callable
from functools import partial

import trio

from hookd.engine.actor import ActorContext, ActorStatistics, DestinationActor, Refill
from hookd.engine.breaker import BreakerState
from hookd.engine.errors import Unavailable
from hookd.engine.jobs import Job
from hookd.engine.store import delivery_ops, queries
from hookd.engine.store.sql import Tx

log = logging.getLogger("hookd.engine")

MAX_RESTART_BACKOFF_S = 30.0
#: How often destinations with work are looked for on disk even without a wake-up: whatever
#: slipped through (a bug, a notification lost in a cluster) waits this long at most.
BACKSTOP_S = 30.0
#: Most destinations whose due deliveries one read loads (each a few indexed queries). Small,
#: because actors start as their reads come back, so the batch sets how many start at once: a
#: publish to ten thousand new destinations peaked at about 110 MB RSS with 32, 140 MB with 256.
LOAD_BATCH = 32

#: One destination's due deliveries, and when its next not-yet-due one falls due.
Window = tuple[list[Job], float | None]


class Dispatcher:
    def __init__(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        self._actors: dict[str, DestinationActor] = {}
        self._nursery: trio.Nursery | None = None
        self._timers: list[tuple[float, str]] = []
        self._earliest: dict[str, float] = {}
        self._timer_wake = trio.Event()
        #: Actors woken with work on disk, waiting for the loader to read it (``running`` is
        #: already True: their task is owed, and no second one may start).
        self._unloaded: dict[str, DestinationActor] = {}
        self._loader_wake = trio.Event()
        self._retired = trio.Event()
        self.restarts = 0

    def __repr__(self) -> str:
        return f"<Dispatcher actors={len(self._actors)} timers={len(self._earliest)} restarts={self.restarts}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume every owned destination with pending deliveries, then serve until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.resume(lambda url: True)
                nursery.start_soon(self._loader)
                nursery.start_soon(self._backstop)
                nursery.start_soon(self._sweep)
                task_status.started()
                await self._timer_loop()
        finally:
            for actor in self._actors.values():
                actor.close()  # the kept keep-alive connections

    # -- entry points, all synchronous but ``resume`` and ``drain`` ------------------------------

    def offer(self, url: str, job: Job) -> None:
        if self._ctx.ownership.owns(url):
            actor = self._actor(url)
            actor.offer(job)
            self._run(actor)

    def poke(self, url: str) -> None:
        if self._ctx.ownership.owns(url):
            actor = self._actor(url)
            actor.poke()
            self._run(actor)

    def forget_job(self, url: str, delivery_id: int) -> None:
        actor = self._actors.get(url)
        if actor is not None:
            actor.forget_job(delivery_id)

    def cancel_webhook(self, url: str, webhook_id: str) -> None:
        actor = self._actors.get(url)
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

    async def resume(self, owned: Callable[[str], bool]) -> None:
        """Schedule every destination ``owned`` selects that has deliveries waiting on disk."""
        for url, due in await self._ctx.readers.run(queries.destinations_with_work):
            if owned(url) and self._ctx.ownership.owns(url):
                self.schedule(url, due)

    def stop(self, selected: Callable[[str], bool]) -> None:
        """Stop the selected actors now, requests in flight abandoned (the node lost them)."""
        for url in [url for url in self._actors if selected(url)]:
            self._unloaded.pop(url, None)
            self._actors.pop(url).stop()
        for url in [url for url in self._earliest if selected(url)]:
            del self._earliest[url]

    async def drain(self, selected: Callable[[str], bool]) -> None:
        """Let the selected actors finish what they have in flight, then retire them (a clean
        hand-over: once this returns, nothing of theirs is in flight or unrecorded)."""
        for url in [url for url in self._earliest if selected(url)]:
            del self._earliest[url]
        for url, actor in list(self._actors.items()):
            if selected(url) and (not actor.running or self._unloaded.pop(url, None) is actor):
                actor.running = False
                self._retire(actor)  # parked, or waiting for its first read: nothing in flight
        while True:
            draining = [actor for url, actor in self._actors.items() if selected(url)]
            if not draining:
                return
            for actor in draining:
                actor.drain()
            self._retired = trio.Event()
            await self._retired.wait()

    def statistics(self) -> list[ActorStatistics]:
        return [actor.statistics() for actor in self._actors.values()]

    # -- internals ---------------------------------------------------------------------------------

    def _actor(self, url: str) -> DestinationActor:
        actor = self._actors.get(url)
        if actor is None:
            actor = self._actors[url] = DestinationActor(url, self._ctx, self._retire)
        return actor

    def _run(self, actor: DestinationActor) -> None:
        """Start the actor's task unless it runs already (it parks when it runs out of work);
        one with deliveries waiting on disk starts once the loader has read them."""
        if actor.running:
            return
        assert self._nursery is not None, "dispatcher not running"
        actor.running = True
        if actor.wants_refill:
            self._unloaded[actor.url] = actor
            self._loader_wake.set()
        else:
            self._nursery.start_soon(self._supervise, actor)

    async def _loader(self) -> None:
        """Read the due deliveries of the actors waiting for them, ``LOAD_BATCH`` at a time, and
        start their tasks. Whatever goes wrong with a batch (the store down, a bug) starts its
        actors anyway: each then reads for itself, and meets the fault as any running actor does."""
        while True:
            if not self._unloaded:
                self._loader_wake = trio.Event()
                await self._loader_wake.wait()
            batch: list[DestinationActor] = []
            while self._unloaded and len(batch) < LOAD_BATCH:
                batch.append(self._unloaded.pop(next(iter(self._unloaded))))
            loaded = await self._load(batch)
            assert self._nursery is not None
            for index, actor in enumerate(batch):
                if self._actors.get(actor.url) is not actor or not actor.running:
                    continue  # stopped or retired while it waited
                if loaded is not None:
                    try:
                        actor.end_refill(*loaded[index])
                    except Exception:  # a bug: the actor reads for itself
                        log.exception("queueing loaded deliveries failed destination=%s", actor.url)
                self._nursery.start_soon(self._supervise, actor)

    async def _load(self, batch: list[DestinationActor]) -> list[tuple[Refill, Window]] | None:
        """Each actor's refill and what it read, in batch order; None when the read failed."""
        refills: list[Refill] = []
        try:
            for actor in batch:
                refills.append(actor.begin_refill())
            windows = await self._ctx.readers.run(partial(_read_windows, refills=refills))
        except Unavailable:
            return None  # the store is down: each actor meets it in its own read
        except Exception:  # a bug: each actor's own read is supervised, the loader goes on
            log.exception("loading due deliveries failed destinations=%d", len(batch))
            return None
        finally:
            for actor, refill in zip(batch, refills, strict=False):  # those whose refill began
                actor.abandon_refill(refill)
        return list(zip(refills, windows, strict=True))

    def _retire(self, actor: DestinationActor) -> None:
        if self._actors.get(actor.url) is actor:
            del self._actors[actor.url]
        actor.close()
        self._retired.set()

    async def _sweep(self) -> None:
        """Retire actors parked for ``actor_idle_s``; one whose breaker is not closed remembers a
        failing destination (and its growing cool-down) while the URL still has webhooks. Every
        actor's idle connections past their keep-alive are closed on the way: one that sends
        nothing (parked, or waiting out an open breaker) would otherwise keep them open."""
        idle = self._ctx.config.actor_idle_s
        while True:
            await trio.sleep(max(0.05, idle / 4))
            now = trio.current_time()
            for actor in list(self._actors.values()):
                actor.close_expired_connections()
                if actor.running or now - actor.parked_at < idle:
                    continue
                if actor.breaker.state is BreakerState.CLOSED or not self._ctx.registry.webhooks_at(actor.url):
                    self._retire(actor)

    async def _supervise(self, actor: DestinationActor) -> None:
        backoff = 0.1
        while True:
            try:
                await actor.run()
                return  # parked or retired
            except Exception:
                self.restarts += 1
                log.exception("actor crashed destination=%s restart_in=%.1fs", actor.url, backoff)
                await self._charge_crash(actor)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF_S)
            actor.reset()
            if self._actors.get(actor.url) is not actor:
                actor.running = False
                self._retired.set()
                return

    async def _charge_crash(self, actor: DestinationActor) -> None:
        """Count an attempt against every delivery the crash caught in flight."""
        ctx = self._ctx
        now = ctx.clock.now()
        for job, fence in actor.crashed_jobs():
            write = partial(
                delivery_ops.record_crash, job=job, now=now, max_attempts=ctx.config.retry.max_attempts, fence=fence
            )
            await ctx.writer.submit(write, after=partial(_notify_settled, ctx.settled, job.delivery_id))

    async def _backstop(self) -> None:
        while True:
            await trio.sleep(BACKSTOP_S)
            for actor in list(self._actors.values()):
                strays = actor.forget_strays()
                if strays:
                    log.error(
                        "actor bookkeeping lost deliveries destination=%s deliveries=%s", actor.url, sorted(strays)
                    )
                    self._run(actor)  # a parked actor has no task to see the poke
            # The store may be down: the writer reports that, and the next round tries again.
            with contextlib.suppress(Unavailable):
                await self.resume(lambda url: True)

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


def _read_windows(tx: Tx, refills: list[Refill]) -> list[Window]:
    return [refill.read(tx) for refill in refills]


def _notify_settled(settled: Callable[[int], None], delivery_id: int, committed: bool) -> None:
    settled(delivery_id)
