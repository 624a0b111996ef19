"""One actor per destination URL: its own queue, rate limiter, circuit breaker and connections.

The actor's queue is a window onto the durable backlog in the store. Publishing hands new jobs
to the actor directly while the window has room and nothing older waits on disk; otherwise the
actor is only told that the backlog grew, and it pulls due deliveries in, oldest first, as room
frees. Nothing is ever dropped from memory that is not on disk, so a full queue neither loses an
event nor blocks a publisher, and memory stays flat however deep the backlog gets.

A delivery id stays in ``known`` from the moment it is loaded until its attempt's outcome is
committed, and a refill ignores deliveries settled while it read, so no delivery is loaded twice.
New deliveries are offered from the writer's commit hook, before any actor can have sent them.

Nothing a destination or the store does stops the actor: every exchange ends in an outcome that
is recorded; a bug while sending one delivery is recorded as that delivery's ``INTERNAL``
attempt; while the store cannot be written the actor starts nothing new (its outcomes wait in
the writer, their request slots held); and it sends only while its node holds the destination's
lease, each outcome carrying the lease's fence.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from hookd.engine.breaker import BreakerState, CircuitBreaker
from hookd.engine.clock import Clock
from hookd.engine.config import EngineConfig
from hookd.engine.connections import ConnectionSet, NotSent
from hookd.engine.errors import NotFound, Unavailable
from hookd.engine.http_delivery import USER_AGENT, post
from hookd.engine.jobs import AttemptResult, Job, internal_failure
from hookd.engine.model import DeliveryState, Ordering, Outcome, Status, Webhook, message_id
from hookd.engine.ownership import Ownership
from hookd.engine.ratelimit import TokenBucket
from hookd.engine.registry import WebhookRegistry
from hookd.engine.signing import sign
from hookd.engine.store import delivery_ops, queries
from hookd.engine.store.cluster_ops import Fence
from hookd.engine.store.sql import Tx
from hookd.engine.store.writer import Readers, WriteMany, Writer

log = logging.getLogger("hookd.engine")

#: Rows an attempt's outcome writes: the attempt, the delivery, its share of the health counts.
RECORD_COST = 3
#: After a failed read of its due deliveries (the store cannot be read), an actor reads again
#: after this long, doubling up to ``READ_RETRY_MAX_S`` while the reads keep failing.
READ_RETRY_FIRST_S = 1.0
READ_RETRY_MAX_S = 30.0


@dataclass
class ActorContext:
    """What every actor shares."""

    config: EngineConfig
    clock: Clock
    registry: WebhookRegistry
    writer: Writer
    readers: Readers
    ownership: Ownership
    rng: random.Random
    schedule: Callable[[str, float], None]
    #: Called with a delivery id once its attempt's outcome is committed (TestWebhook waits on it).
    settled: Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """An actor's state, as health reports it."""

    url: str
    queued: dict[str, int]
    in_flight: dict[str, int]
    breaker_state: BreakerState
    breaker_since: float


@dataclass(slots=True)
class _InFlight:
    job: Job
    scope: trio.CancelScope
    fence: Fence | None
    #: Its request is under way (past its checks and its turn): it may have reached the peer.
    sending: bool = False
    #: Its outcome is queued for the writer: a crash from then on owes it nothing.
    recorded: bool = False


@dataclass(slots=True)
class Refill:
    """One read of an actor's due deliveries from disk: what to read, and which deliveries
    settled while it was read (the read runs beside the writer, so it can return them in their
    stale, still-pending form)."""

    url: str
    now: float
    #: Rows to read: the free room, plus the deliveries already in memory the read may meet again.
    limit: int
    room: int
    ordered: list[str]
    #: The actor's poke count when the read began: a poke after it may have added work unseen.
    pokes: int
    settled: set[int] = field(default_factory=set)

    def read(self, tx: Tx) -> tuple[list[Job], float | None]:
        """Due jobs, and when the next not-yet-due one falls due."""
        jobs = queries.due_jobs(tx, self.url, self.now, self.limit, self.ordered)
        following = queries.next_due(tx, self.url, self.now, self.ordered) if len(jobs) < self.limit else None
        return jobs, following


def request_headers(webhook: Webhook, msg_id: str, body: bytes, now: float) -> dict[str, str]:
    """Authentication first, so hookd's own headers can never be overridden by it."""
    timestamp = int(now)
    headers = webhook.auth.request_headers()
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(webhook.signing_secrets(now), msg_id, timestamp, body),
        }
    )
    return headers


#: How soon a delivery this node's lease refused to send is read again from disk.
REFUSED_READ_AGAIN_S = 1.0


class DestinationActor:
    # Slots: ten thousand destinations may each have an actor at once.
    __slots__ = (
        "_connections",
        "_crashed",
        "_ctx",
        "_draining",
        "_on_retire",
        "_pokes",
        "_read_again_at",
        "_read_backoff",
        "_refilling",
        "_scope",
        "_stopped",
        "_wake",
        "backlog",
        "breaker",
        "in_flight",
        "known",
        "limiter",
        "parked_at",
        "queue",
        "running",
        "url",
    )

    def __init__(self, url: str, ctx: ActorContext, on_retire: Callable[[DestinationActor], None]) -> None:
        self.url = url
        self._ctx = ctx
        self._on_retire = on_retire
        #: What was in flight when the actor's task failed (``_note_crash``).
        self._crashed: list[_InFlight] | None = None
        # A list, not a deque: an empty deque costs 600 bytes, ten thousand actors 6 MB, and a
        # queue of at most a few hundred jobs loses nothing to list deletes at its head.
        self.queue: list[Job] = []
        # A dict, not a set: emptied (``clear``), it gives its table back; an empty set keeps
        # 216 bytes, and ten thousand parked actors would keep 2 MB of them.
        self.known: dict[int, None] = {}
        self.in_flight: dict[int, _InFlight] = {}
        self.backlog = True
        self._pokes = 0
        #: Set to wake the running task; None while parked (nothing waits, and nothing is kept).
        self._wake: trio.Event | None = None
        self._draining = False
        self._scope: trio.CancelScope | None = None
        self._stopped = False
        self._connections: ConnectionSet | None = None
        #: Whether the actor's task runs now (the dispatcher starts it when work comes).
        self.running = False
        self.parked_at = trio.current_time()
        self.breaker = CircuitBreaker(ctx.config.breaker)
        self.limiter = TokenBucket(ctx.registry.rate_for(url))
        self._refilling: Refill | None = None
        #: While the store cannot be read: when to read again, and the wait after that.
        self._read_again_at = 0.0
        self._read_backoff = 0.0

    def __repr__(self) -> str:
        return (
            f"<DestinationActor {self.url} queued={len(self.queue)} in_flight={len(self.in_flight)} "
            f"backlog={self.backlog} breaker={self.breaker.state.value}{' draining' if self._draining else ''}>"
        )

    def statistics(self) -> ActorStatistics:
        queued: dict[str, int] = {}
        for job in self.queue:
            queued[job.webhook_id] = queued.get(job.webhook_id, 0) + 1
        in_flight: dict[str, int] = {}
        for entry in self.in_flight.values():
            in_flight[entry.job.webhook_id] = in_flight.get(entry.job.webhook_id, 0) + 1
        return ActorStatistics(self.url, queued, in_flight, self.breaker.state, self.breaker.since_wall)

    # -- called by the dispatcher (synchronous, from other tasks) --------------------------------

    def offer(self, job: Job) -> None:
        """A new delivery: take it into memory if that keeps the order, else leave it on disk.

        A test ping goes to the front: it waits for a free request slot and a token, like every
        request, but not behind the backlog. An ordered webhook's delivery is always loaded from
        disk, where its place in line is known."""
        if job.single_attempt and job.delivery_id not in self.known:
            self.queue.insert(0, job)
            self.known[job.delivery_id] = None
            self._nudge()
            return
        hook = self._ctx.registry.get(job.webhook_id)
        ordered = hook is not None and hook.ordering is Ordering.ORDERED
        if ordered or self.backlog or len(self.queue) >= self._ctx.config.queue_size:
            self.poke()
            return
        if job.delivery_id not in self.known:
            self.queue.append(job)
            self.known[job.delivery_id] = None
        self._nudge()

    def poke(self) -> None:
        """Something may wait on disk for this destination."""
        self.backlog = True
        self._pokes += 1
        self._nudge()

    def cancel_webhook(self, webhook_id: str) -> None:
        """The webhook is gone: forget its queued jobs and abort its requests in flight."""
        kept = [job for job in self.queue if job.webhook_id != webhook_id]
        for job in self.queue:
            if job.webhook_id == webhook_id:
                self.known.pop(job.delivery_id, None)
        self.queue = kept
        for entry in self.in_flight.values():
            if entry.job.webhook_id == webhook_id:
                entry.scope.cancel()
        self._nudge()

    def close_expired_connections(self) -> None:
        """Close the idle connections past their keep-alive (a request taking one does it too,
        but an actor that sends nothing takes none)."""
        if self._connections is not None:
            self._connections.close_expired()

    def forget_job(self, delivery_id: int) -> None:
        """No one wants this job any more (a test ping its caller gave up on): drop it from the
        queue, or stop it while it waits for its turn. One already under way is left to finish:
        it may have reached the destination, and its attempt is recorded as it was."""
        for job in self.queue:
            if job.delivery_id == delivery_id:
                self.queue.remove(job)
                self.known.pop(delivery_id, None)
                break
        entry = self.in_flight.get(delivery_id)
        if entry is not None and not entry.sending:
            entry.scope.cancel()
        self._nudge()

    def drain(self) -> None:
        """Start nothing new; retire once every request in flight has its outcome committed
        (a clean hand-over of the destination to another node)."""
        self._draining = True
        self._nudge()

    def stop(self) -> None:
        """End the actor now, abandoning its requests in flight (this node lost the destination)."""
        self._stopped = True
        self.running = False
        if self._scope is not None:
            self._scope.cancel()
        self.close()

    def forget_strays(self) -> set[int]:
        """Deliveries counted as loaded that are neither queued nor in flight: never any, unless
        the bookkeeping has a bug, which would leave them unsent until a restart. Forgotten, so
        the next refill loads them again; returned, for the log."""
        strays = self.known.keys() - {job.delivery_id for job in self.queue} - self.in_flight.keys()
        if strays:
            for delivery_id in strays:
                del self.known[delivery_id]
            self.poke()
        return strays

    def _note_crash(self) -> None:
        """The actor's loop, or one of its attempts, failed (a bug). Note what is in flight before
        the nursery cancels the attempts under way: a cancelled attempt forgets it was in flight,
        and a request it had sent would go out again uncharged."""
        if self._crashed is None:
            self._crashed = list(self.in_flight.values())

    def crashed_jobs(self) -> list[tuple[Job, Fence | None]]:
        """The deliveries in flight when the actor crashed whose outcome was never queued: each
        is charged an attempt. Asked once every attempt task has ended, so an outcome queued
        while the crash unwound (a send to the writer completes, then yields) is seen as queued
        and not charged twice."""
        caught = self._crashed if self._crashed is not None else list(self.in_flight.values())
        self._crashed = None
        return [(entry.job, entry.fence) for entry in caught if not entry.recorded]

    def reset(self) -> None:
        """After a crash: memory is suspect, the database is not."""
        self.queue.clear()
        self.known.clear()
        self.in_flight.clear()
        self.breaker.release_probe()
        self.backlog = True

    # -- the actor's own task ------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver while there is work; then return, parked.

        The actor parks only once its attempts' tasks have all ended, and it decides so without a
        checkpoint in between: work offered while they were ending (when ``running`` was still
        True, so nobody started another task) is seen here, and an offer made after finds
        ``running`` False and starts the task again. So no offer is lost, and two runs of one
        actor never overlap."""
        if self._stopped:
            return
        self._scope = trio.CancelScope()  # a fresh one for each run: a crashed run is restarted
        try:
            with self._scope:
                while not self._stopped:
                    await self._serve()
                    if not self.running:
                        return  # retired (drained)
                    if self._draining:
                        continue  # only ``_serve`` retires a draining actor, once nothing is in flight
                    if not (self.queue or self.in_flight or self.backlog):
                        self.running = False
                        self.parked_at = trio.current_time()
                        self._shrink()
                        return
        finally:
            self._scope = self._wake = None

    def _shrink(self) -> None:
        """Give back the tables a parked actor's emptied dicts still hold from its last burst
        (an emptied list gives its own back): ten thousand parked actors are most of a busy
        node's memory. Nothing is in flight when it parks; ``known`` is kept if it is not empty
        (only a bookkeeping bug leaves it so, and the backstop reports what it holds)."""
        self.in_flight.clear()
        if not self.known:
            self.known.clear()

    async def _serve(self) -> None:
        """The work loop, in a nursery that owns the attempts; should the loop itself fail (a
        bug), what is in flight is noted before the nursery cancels it (``_note_crash``)."""
        async with trio.open_nursery() as nursery:
            try:
                await self._serve_in(nursery)
            except Exception:
                self._note_crash()
                raise

    async def _serve_in(self, nursery: trio.Nursery) -> None:
        config = self._ctx.config
        while True:
            self._wake = trio.Event()
            if self._draining:
                if not self.in_flight:
                    self._retire(nursery)
                    return
                await self._wake.wait()
                continue
            if not self._ctx.writer.status.available:
                await self._ctx.writer.wait_available()  # outcomes in flight wait in the writer
                continue
            if self.wants_refill and trio.current_time() >= self._read_again_at:
                await self._refill_or_wait()
            self.limiter.set_rate(self._ctx.registry.rate_for(self.url))
            while len(self.in_flight) < config.max_in_flight:
                found = self._next_job()
                if found is None or not (found[1].single_attempt or self.breaker.allow()):
                    break
                index, job = found
                del self.queue[index]
                # In flight from here: it holds its request slot while it waits for a token.
                entry = _InFlight(job, trio.CancelScope(), self._ctx.ownership.fence(self.url))
                self.in_flight[job.delivery_id] = entry
                await self.limiter.acquire()
                # Started one by one, in queue order: the attempt has taken its start time
                # and is on its way before the next one begins.
                await nursery.start(self._attempt, self.connections, entry)
            if not (self.queue or self.in_flight or self.backlog):
                # Nothing to do: the task ends and the actor parks (``run``). Its breaker, its
                # rate and its keep-alive connections stay; the next delivery wakes it.
                return
            deadline = math.inf
            reopen = self.breaker.reopen_at()
            if reopen is not None and self.queue:
                deadline = reopen
            if self.wants_refill:
                deadline = min(deadline, max(trio.current_time(), self._read_again_at))
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def _nudge(self) -> None:
        """Wake the running task to look at its work again (a parked actor has none waiting)."""
        if self._wake is not None:
            self._wake.set()

    def _retire(self, nursery: trio.Nursery) -> None:
        self.running = False
        self._on_retire(self)
        nursery.cancel_scope.cancel()

    @property
    def connections(self) -> ConnectionSet:
        """The keep-alive connections to this destination, made on first use."""
        if self._connections is None:
            ownership, url = self._ctx.ownership, self.url
            self._connections = ConnectionSet(self._ctx.config.destinations, may_send=lambda: ownership.may_send(url))
        return self._connections

    def close(self) -> None:
        """Close the idle connections (the actor is retired)."""
        if self._connections is not None:
            self._connections.close()
            self._connections = None

    def _next_job(self) -> tuple[int, Job] | None:
        """The first queued job that may go now, and its place in the queue; stale ones are
        dropped (disk has them). An ordered webhook's job waits while another of its jobs is in
        flight."""
        busy: set[str] | None = None
        index = 0
        while index < len(self.queue):
            job = self.queue[index]
            hook = self._ctx.registry.get(job.webhook_id)
            if hook is None or not _sendable(hook, job, self.url):
                del self.queue[index]
                self.known.pop(job.delivery_id, None)
                continue
            if hook.ordering is Ordering.ORDERED and not job.single_attempt:
                if busy is None:
                    busy = {entry.job.webhook_id for entry in self.in_flight.values()}
                if job.webhook_id in busy:
                    index += 1
                    continue
            return index, job
        return None

    def _ordered(self) -> list[str]:
        """This URL's ordered webhooks: of each, only the oldest pending delivery may be loaded."""
        return [hook.id for hook in self._ctx.registry.webhooks_at(self.url) if hook.ordering is Ordering.ORDERED]

    @property
    def wants_refill(self) -> bool:
        """Whether deliveries may wait on disk while the queue has room for them."""
        return self.backlog and len(self.queue) < max(1, self._ctx.config.queue_size // 2)

    def begin_refill(self) -> Refill:
        """Start a refill: what to read. ``abandon_refill`` ends the read, whether it failed or
        not (settlements are no longer noted), and ``end_refill`` then takes its rows."""
        room = self._ctx.config.queue_size - len(self.queue)
        refill = Refill(self.url, self._ctx.clock.now(), room + len(self.known), room, self._ordered(), self._pokes)
        self._refilling = refill
        return refill

    def end_refill(self, refill: Refill, window: tuple[list[Job], float | None]) -> None:
        """Queue what the read found (but what settled meanwhile, or is already in memory); the
        backlog is known to be empty when the read came back short and nothing poked since.

        A test ping read from disk (asked for through another node of a cluster) goes to the
        front, as one offered here does: not behind the backlog, nor behind a breaker that holds
        the queue.

        Of an ordered webhook that already has a delivery in memory (queued or in flight), the
        read's head is left on disk. The read cannot know that the one in flight is its head: a
        first attempt is not counted until its outcome commits, so an older publish completed
        meanwhile looks like the head; taken, it would go before the retry, should the one in
        flight fail. Its outcome, once committed, reads the webhook again (``_record``)."""
        jobs, next_due = window
        ordered = set(refill.ordered)
        present = self._ordered_in_memory(ordered)
        added = 0
        for job in jobs:
            if not job.single_attempt and job.webhook_id in present:
                continue
            if added < refill.room and job.delivery_id not in self.known and job.delivery_id not in refill.settled:
                if job.single_attempt:
                    self.queue.insert(0, job)
                else:
                    self.queue.append(job)
                    if job.webhook_id in ordered:
                        present.add(job.webhook_id)
                self.known[job.delivery_id] = None
                added += 1
        if len(jobs) < refill.limit and refill.pokes == self._pokes:
            self.backlog = False
            if next_due is not None:
                self._ctx.schedule(self.url, next_due)

    def _ordered_in_memory(self, ordered: set[str]) -> set[str]:
        """Of ``ordered`` webhooks, those with a delivery (not a ping) queued or in flight."""
        if not ordered:
            return set()
        jobs = (*self.queue, *(entry.job for entry in self.in_flight.values()))
        return {job.webhook_id for job in jobs if job.webhook_id in ordered and not job.single_attempt}

    def abandon_refill(self, refill: Refill) -> None:
        if self._refilling is refill:
            self._refilling = None

    async def _refill_or_wait(self) -> None:
        """Refill; when the store cannot be read (a database restarting, a disk error), go on
        with what memory holds and read again later, backing off, instead of crashing: a store
        outage is not the actor's fault, and a crash would charge its requests in flight an
        attempt each and log a traceback per destination per restart. The first failure of a
        streak is logged, and the recovery."""
        try:
            await self._refill()
        except Unavailable as error:
            if not self._read_backoff:
                log.warning("reading due deliveries failed destination=%s reason=%s", self.url, error)
            self._read_backoff = min(max(self._read_backoff * 2, READ_RETRY_FIRST_S), READ_RETRY_MAX_S)
            self._read_again_at = trio.current_time() + self._read_backoff
            return
        if self._read_backoff:
            log.warning("reading due deliveries works again destination=%s", self.url)
            self._read_backoff = self._read_again_at = 0.0

    async def _refill(self) -> None:
        refill = self.begin_refill()
        try:
            window = await self._ctx.readers.run(refill.read)
        finally:
            self.abandon_refill(refill)
        self.end_refill(refill, window)

    async def _attempt(
        self,
        client: ConnectionSet,
        entry: _InFlight,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ctx = self._ctx
        job = entry.job
        result: AttemptResult | None = None
        refused = False  # by the lease: the delivery stays due on disk
        task_status.started()
        try:
            with entry.scope:
                hook = ctx.registry.get(job.webhook_id)
                if hook is None or not _sendable(hook, job, self.url):
                    return
                if not ctx.ownership.may_send(self.url):
                    refused = True
                    return  # the lease lapsed: the destination is, or soon will be, another node's
                if job.single_attempt and not await self._ping_still_wanted(job):
                    return
                entry.sending = True
                now = ctx.clock.now()
                try:
                    body = job.envelope.encode()
                    headers = request_headers(hook, message_id(job.delivery_id), body, now)
                    result = await post(client, hook.url, headers, body, hook.timeout_s, now)
                except NotSent:
                    refused = True
                    return  # the lease ran out before the request went: the next owner sends it
                except Exception:  # a bug: recorded against this delivery, never the actor's end
                    log.exception("sending failed destination=%s delivery=%d", self.url, job.delivery_id)
                    result = internal_failure(hook.url, now)
            if result is not None:
                await self._record(entry, result)
        except Exception:
            self._note_crash()  # before this error cancels the other attempts
            raise
        finally:
            if result is None:  # never sent (or cancelled): nothing to record
                if not job.single_attempt:  # a ping never takes the breaker's probe
                    self.breaker.release_probe()
                self._settle(job.delivery_id)
                ctx.settled(job.delivery_id)
                if refused:
                    # Read again from disk in a while, should this node keep the destination (a
                    # late renewal); if it lost it, the actor is stopped and the new owner reads it.
                    # Not at once: until the lease is renewed, every read would be refused again.
                    ctx.schedule(self.url, ctx.clock.now() + REFUSED_READ_AGAIN_S)
            self._nudge()

    async def _ping_still_wanted(self, job: Job) -> bool:
        """Whether a test ping is still pending: a caller that gave up on it had it cancelled on
        disk, perhaps through another node, which cannot take it off this actor. One read per
        ping (pings are few); when the store cannot be read, the ping goes as it would have."""
        try:
            state, _ = await self._ctx.readers.run(partial(delivery_ops.settled_state, delivery_id=job.delivery_id))
        except NotFound:
            return False
        except Unavailable:
            return True
        return state is DeliveryState.PENDING

    def _poke_self(self) -> None:
        """``poke``, from a commit hook: the actor may have parked meanwhile (a crash's restart
        found nothing in memory), and then only the dispatcher can start its task again."""
        self.poke()
        if not self.running:
            self._ctx.schedule(self.url, self._ctx.clock.now())

    def _settle(self, delivery_id: int) -> None:
        """The delivery's outcome is on disk (or it was never sent): it may be loaded again, and
        its slot is free.

        The slot is held until the outcome is committed, not just until the response is read: a
        kill -9 re-sends exactly the attempts whose outcome was not on disk, so holding the slot
        is what bounds duplicates to ``max_in_flight`` per destination per crash.
        """
        self.in_flight.pop(delivery_id, None)
        self.known.pop(delivery_id, None)
        if self._refilling is not None:
            self._refilling.settled.add(delivery_id)
        self._nudge()

    def _judge(self, result: AttemptResult) -> None:
        """What the outcome says about the destination, for its breaker."""
        if result.outcome is Outcome.SUCCESS:
            self.breaker.record_success()
        elif result.outcome.trips_breaker:
            before = self.breaker.state
            self.breaker.record_failure()
            if self.breaker.state is BreakerState.OPEN and before is not BreakerState.OPEN:
                log.warning("breaker open destination=%s after=%s", self.url, result.outcome.value)
        elif result.outcome in (Outcome.RATE_LIMITED, Outcome.BLOCKED, Outcome.INTERNAL):
            self.breaker.release_probe()  # overloaded, never sent, or our own fault: says nothing
        else:
            self.breaker.record_success()  # a 4xx: the destination is up and answering

    async def _record(self, entry: _InFlight, result: AttemptResult) -> None:
        """Queue the outcome for the writer without waiting for the commit; the delivery keeps its
        slot and stays in ``known`` until the commit hook settles it."""
        ctx = self._ctx
        job = entry.job
        now = ctx.clock.now()
        self._judge(result)
        retry_at: float | None = None
        merge: tuple[WriteMany, Any] | None = None
        if result.outcome is Outcome.SUCCESS:
            success = delivery_ops.Success(job, result, now, entry.fence)
            write = partial(delivery_ops.record_successes, items=[success])
            merge = (delivery_ops.record_successes, success)
        else:
            if not job.single_attempt:
                delay = ctx.config.retry.delay(job.attempt_count + 1, ctx.rng, result.retry_after_s)
                retry_at = None if delay is None else now + delay
            write = partial(
                delivery_ops.record_failure, job=job, attempt=result, now=now, retry_at=retry_at, fence=entry.fence
            )

        hook = ctx.registry.get(job.webhook_id)
        ordered = hook is not None and hook.ordering is Ordering.ORDERED and not job.single_attempt

        def settled(committed: bool) -> None:
            self._settle(job.delivery_id)
            ctx.settled(job.delivery_id)
            if not committed:
                self._poke_self()  # the outcome is lost, the delivery still due on disk: load it again
            elif retry_at is not None:
                ctx.schedule(self.url, retry_at)
            if committed and ordered and retry_at is None:
                self._poke_self()  # the next in line may go

        await ctx.writer.submit(write, after=settled, cost=RECORD_COST, merge=merge)
        entry.recorded = True


def _sendable(hook: Webhook | None, job: Job, url: str) -> bool:
    """Whether ``job`` still goes to ``url``: its webhook exists there and is active (a test ping
    goes to an inactive webhook too: testing before activating is what it is for)."""
    return hook is not None and hook.url == url and (hook.status is Status.ACTIVE or job.single_attempt)
