"""Health snapshots: the rolling figures, the backlog on disk and the actors' live state.

The rolling figures come from the counts the store keeps with the attempts: loaded once at
start (a few rows per key and minute, not the attempts themselves) and brought up to date before
each snapshot by reading only the rows written since the last look, by this node or any other.
So figures survive restarts and do not depend on which node of a cluster is asked.

The backlog on disk (from a covering index) is refreshed in the background while anyone is
watching, so a snapshot never waits on it; one snapshot serves every watcher that asks for the
same thing within ``SHARE_S``, so a hundred StreamHealth watchers cost what one does. A snapshot
of many keys is computed in steps of ``SNAPSHOT_STEP`` keys with a checkpoint between them: it
runs on the loop that serves gRPC calls and runs the actors, and must never hold it for long.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from hookd.engine.actor import ActorStatistics
from hookd.engine.breaker import BreakerState
from hookd.engine.clock import Clock
from hookd.engine.health import (
    SERVICE_KEY,
    WINDOWS_S,
    HealthAggregates,
    MinuteFigures,
    Series,
    WindowFigures,
    by_minute,
    no_figures,
)
from hookd.engine.model import Ordering
from hookd.engine.registry import WebhookRegistry
from hookd.engine.store import health_ops, queries
from hookd.engine.store.health_ops import HealthRows
from hookd.engine.store.writer import Readers, StoreStatus

log = logging.getLogger("hookd.health")

#: Snapshots asked for within this long of each other are shared.
SHARE_S = 0.1
MAX_SHARED = 256
#: Rows written this long before the last look are read again: commits land a little after the
#: time their rows carry, and nodes' clocks differ a little.
TAIL_MARGIN_S = 5.0
#: The background backlog refresh stops this long after the last snapshot.
DEMAND_S = 10.0
#: Keys (or actors' queue entries) a snapshot handles between two checkpoints.
SNAPSHOT_STEP = 100


@dataclass(frozen=True)
class Stats:
    key: str
    windows: list[WindowFigures]
    backlog: int = 0
    queued_in_memory: int = 0
    in_flight: int = 0
    retries_scheduled: int = 0
    breaker_state: BreakerState | None = None
    breaker_since: float = 0.0
    last_success: float = 0.0
    last_failure: float = 0.0
    last_error: str = ""
    #: The node that runs this destination's actor (cluster mode; empty on a single node).
    owner: str = ""
    #: An ordered webhook's delivery the others wait behind while it is retried (0: none).
    held_behind: int = 0
    #: The last hour minute by minute (the service only).
    minutes: tuple[MinuteFigures, ...] = ()


@dataclass(frozen=True)
class NodeInfo:
    """A node of the cluster as the database knows it."""

    id: str
    address: str
    state: str
    last_heartbeat: float
    started: float
    destinations: int
    slots: int


@dataclass(frozen=True)
class Snapshot:
    time: float
    service: Stats
    webhooks: list[Stats]
    destinations: list[Stats]
    actors: int = 0
    actor_restarts: int = 0
    store: StoreStatus = field(default_factory=StoreStatus)
    nodes: list[NodeInfo] = field(default_factory=list)


@dataclass(frozen=True)
class LiveState:
    """What the actors hold in memory right now, across the nodes that run them."""

    actors: list[ActorStatistics]
    #: The node that runs a destination's actor ("" on a single node).
    owner_of: Callable[[str], str] = lambda url: ""
    nodes: list[NodeInfo] = field(default_factory=list)
    actor_count: int = 0
    restarts: int = 0


class _Steps:
    """Counts work and yields to the loop every ``SNAPSHOT_STEP`` units of it."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = 0

    async def spend(self, units: int = 1) -> None:
        self._done += units
        if self._done >= SNAPSHOT_STEP:
            self._done = 0
            await trio.lowlevel.checkpoint()


class HealthMonitor:
    def __init__(
        self,
        clock: Clock,
        registry: WebhookRegistry,
        readers: Readers,
        *,
        live_state: Callable[[], LiveState],
        store_status: Callable[[], StoreStatus],
        refresh_s: float = 0.5,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._readers = readers
        self._live_state = live_state
        self._store_status = store_status
        self._refresh_s = refresh_s
        self.aggregates = HealthAggregates()
        self._backlog: queries.Backlog | None = None
        self._backlog_at = 0.0
        self._backlog_lock = trio.Lock()
        self._tail_lock = trio.Lock()
        #: Reads of new counts begun, and the number of the last one that finished (a count, not
        #: a time: a coarse clock could not tell a read that began just before a commit from one
        #: just after).
        self._reads_begun = 0
        self._last_read = 0
        self._tail_started = 0.0
        self._demand_at = 0.0
        self._demand = trio.Event()
        #: Recent snapshots by what they were asked for, with the trio time each was made at (not
        #: the wall time they carry, which a stepped clock can move backwards).
        self._shared: dict[tuple[tuple[str, ...] | None, tuple[str, ...] | None], tuple[float, Snapshot]] = {}
        self._minutes_cache: tuple[tuple[int, int], tuple[MinuteFigures, ...]] | None = None

    # -- loading and keeping up ---------------------------------------------------------------------

    async def load(self) -> int:
        """Rebuild the rolling figures from the stored counts of the last day; return how many rows."""
        started = time.perf_counter()
        now = self._clock.now()
        self._tail_started = time.time()
        rows = await self._readers.run(partial(health_ops.load, now=now))
        self._apply(rows, now, loading=True)
        self.aggregates.start_counting()
        await self._warm(now)
        count = len(rows.minutes) + len(rows.hours)
        log.info("health history loaded rows=%d ms=%.0f", count, (time.perf_counter() - started) * 1000)
        return count

    async def _warm(self, now: float) -> None:
        """Work out every key's figures once, so the first snapshot after a start does not pay
        for a day of history (later ones recompute only what changed)."""
        steps = _Steps()
        self.aggregates.prune(now)
        for group in (self.aggregates.webhooks, self.aggregates.destinations):
            for series in list(group.values()):
                self._windows(series, now)
                await steps.spend()
        self._windows(self.aggregates.service, now)
        self._service_minutes(now)

    def _service_minutes(self, now: float) -> tuple[MinuteFigures, ...]:
        """The service's last hour minute by minute, worked out again only when it changed."""
        series = self.aggregates.service
        stamp = (series.version, int(now // 60))
        if self._minutes_cache is None or self._minutes_cache[0] != stamp:
            self._minutes_cache = (stamp, tuple(by_minute(series, now)))
        return self._minutes_cache[1]

    def _apply(self, rows: HealthRows, now: float, *, loading: bool = False) -> None:
        aggregates = self.aggregates
        for kind, key, minute, cells in rows.minutes:
            aggregates.set_minute(kind, key, minute, cells, now, loading=loading)
        for kind, key, hour, cells in rows.hours:
            aggregates.add_hour(kind, key, hour, cells)
        for kind, key, last_success, last_failure, last_error in rows.last:
            aggregates.note_last(kind, key, last_success, last_failure, last_error)

    async def _tail(self) -> None:
        """Read the counts written since the last look.

        Callers that queue behind one read share the next: a read that began after a caller asked
        has seen every commit made before it asked. One that began earlier has not (a delivery
        recorded as FAILED a moment ago must show in the figures), so it is never reused."""
        asked = self._reads_begun
        async with self._tail_lock:
            if self._last_read > asked:
                return
            self._reads_begun += 1
            read, started = self._reads_begun, time.time()
            rows = await self._readers.run(partial(health_ops.changed_since, since=self._tail_started - TAIL_MARGIN_S))
            self._last_read, self._tail_started = read, started
            self._apply(rows, self._clock.now())

    async def _refresh_backlog(self) -> queries.Backlog:
        async with self._backlog_lock:
            if self._backlog is None or time.monotonic() - self._backlog_at >= self._refresh_s:
                ordered = [hook.id for hook in self._registry.all() if hook.ordering is Ordering.ORDERED]
                self._backlog = await self._readers.run(partial(queries.backlog, ordered=ordered))
                self._backlog_at = time.monotonic()
            return self._backlog

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the backlog fresh while anyone watches, so snapshots never wait for it."""
        task_status.started()
        while True:
            if time.monotonic() - self._demand_at > DEMAND_S:
                self._demand = trio.Event()
                await self._demand.wait()
            try:
                await self._refresh_backlog()
            except Exception:  # the store may be down: the snapshot keeps the last counts
                log.debug("backlog refresh failed", exc_info=True)
            await trio.sleep(self._refresh_s)

    # -- snapshots --------------------------------------------------------------------------------

    def _windows(self, series: Series | None, now: float) -> list[WindowFigures]:
        if series is None:
            return [no_figures(seconds) for seconds in WINDOWS_S]
        return [series.window(seconds, now) for seconds in WINDOWS_S]

    def _stats(
        self,
        key: str,
        series: Series | None,
        now: float,
        waiting: tuple[int, int],
        queued: int,
        in_flight: int,
        actor: ActorStatistics | None,
        *,
        with_breaker: bool = True,
        owner: str = "",
        held_behind: int = 0,
    ) -> Stats:
        """One key's figures: ``waiting`` is (backlog, retries scheduled); the breaker is the
        destination actor's (a destination without an actor is closed)."""
        return Stats(
            key=key,
            windows=self._windows(series, now),
            backlog=waiting[0],
            queued_in_memory=queued,
            in_flight=in_flight,
            retries_scheduled=waiting[1],
            breaker_state=(actor.breaker_state if actor else BreakerState.CLOSED) if with_breaker else None,
            breaker_since=actor.breaker_since if actor and with_breaker else 0.0,
            last_success=series.last_success if series else 0.0,
            last_failure=series.last_failure if series else 0.0,
            last_error=series.last_error if series else "",
            owner=owner,
            held_behind=held_behind,
        )

    async def snapshot(self, webhook_ids: list[str] | None = None, urls: list[str] | None = None) -> Snapshot:
        """Figures for the service, and for the named webhooks and destinations (all when None).

        Watchers asking for the same thing within ``SHARE_S`` get the same snapshot object, so a
        hundred watchers cost one computation per tick, and the API layer can reuse its encoding.
        """
        key = (tuple(webhook_ids) if webhook_ids is not None else None, tuple(urls) if urls is not None else None)
        made_at = trio.current_time()
        shared = self._shared.get(key)
        if shared is not None and made_at - shared[0] < SHARE_S:
            return shared[1]
        self._demand_at = time.monotonic()
        self._demand.set()
        await self._tail()
        backlog = self._backlog
        if backlog is None or time.monotonic() - self._backlog_at > 5 * self._refresh_s:
            backlog = await self._refresh_backlog()
        snapshot = await self._compute(webhook_ids, urls, backlog, self._live_state())
        if len(self._shared) >= MAX_SHARED:
            self._shared.clear()
        self._shared[key] = (made_at, snapshot)
        return snapshot

    async def _compute(
        self, webhook_ids: list[str] | None, urls: list[str] | None, backlog: queries.Backlog, live: LiveState
    ) -> Snapshot:
        """The figures, taken in steps (``live`` is a copy, so the loop may run others meanwhile)."""
        steps = _Steps()
        now = self._clock.now()
        self.aggregates.prune(now)
        actors = {stats.url: stats for stats in live.actors}
        queued: Counter[str] = Counter()
        in_flight: Counter[str] = Counter()
        for stats in live.actors:
            queued.update(stats.queued)
            in_flight.update(stats.in_flight)
            await steps.spend(1 + len(stats.queued))

        if webhook_ids is not None:
            hooks = [hook for hook_id in webhook_ids if (hook := self._registry.get(hook_id)) is not None]
        elif urls is not None:
            hooks = [hook for url in urls for hook in self._registry.webhooks_at(url)]
        else:
            hooks = self._registry.all()
        if urls is None:
            if webhook_ids is not None:
                urls = sorted({hook.url for hook in hooks})
            else:
                urls = sorted({hook.url for hook in hooks} | set(actors) | set(backlog.destinations))
        webhook_stats = []
        for hook in hooks:
            webhook_stats.append(
                self._stats(
                    f"webhooks/{hook.id}",
                    self.aggregates.webhooks.get(hook.id),
                    now,
                    backlog.webhooks.get(hook.id, (0, 0)),
                    queued[hook.id],
                    in_flight[hook.id],
                    actors.get(hook.url),
                    held_behind=backlog.held_behind.get(hook.id, 0),
                )
            )
            await steps.spend()
        destination_stats = []
        for url in urls:
            actor = actors.get(url)
            destination_stats.append(
                self._stats(
                    url,
                    self.aggregates.destinations.get(url),
                    now,
                    backlog.destinations.get(url, (0, 0)),
                    sum(actor.queued.values()) if actor else 0,
                    sum(actor.in_flight.values()) if actor else 0,
                    actor,
                    owner=live.owner_of(url),
                )
            )
            await steps.spend()
        waiting_total = (
            sum(count for count, _ in backlog.destinations.values()),
            sum(retries for _, retries in backlog.destinations.values()),
        )
        service = self._stats(
            SERVICE_KEY,
            self.aggregates.service,
            now,
            waiting_total,
            sum(queued.values()),
            sum(in_flight.values()),
            None,
            with_breaker=False,
        )
        service = replace(service, minutes=self._service_minutes(now))
        return Snapshot(
            now,
            service,
            webhook_stats,
            destination_stats,
            live.actor_count,
            live.restarts,
            self._store_status(),
            live.nodes,
        )
