"""Health snapshots: the rolling figures, the backlog on disk and the actors' live state.

One snapshot serves every watcher: the disk part (backlog counts, from a covering index) is
cached for ``refresh_s``, so a hundred StreamHealth watchers cost what one does.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlite_utils
import trio

from hookd.engine.actor import DestinationActor
from hookd.engine.breaker import BreakerState
from hookd.engine.clock import Clock
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.health import SERVICE_KEY, WINDOWS_S, HealthAggregates, Series, WindowFigures, no_figures
from hookd.engine.jobs import AttemptResult
from hookd.engine.model import Outcome
from hookd.engine.registry import WebhookRegistry
from hookd.engine.store.writer import Readers

log = logging.getLogger("hookd.health")

DAY_S = 86400.0
#: Snapshots asked for within this long of each other are shared.
SHARE_S = 0.1
MAX_SHARED = 256
LOAD_CHUNK = 50_000


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


@dataclass(frozen=True)
class Snapshot:
    time: float
    service: Stats
    webhooks: list[Stats]
    destinations: list[Stats]
    actors: int = 0
    actor_restarts: int = 0


@dataclass(frozen=True)
class _Backlog:
    """Waiting deliveries on disk: (backlog, retries scheduled) per webhook and per destination."""

    webhooks: dict[str, tuple[int, int]]
    destinations: dict[str, tuple[int, int]]
    taken_at: float


def _load_backlog(db: sqlite_utils.Database, now: float) -> _Backlog:
    rows = db.execute(
        "SELECT webhook_id, destination, COUNT(*), SUM(attempt_count > 0) FROM deliveries "
        "WHERE state IN ('PENDING', 'HELD') GROUP BY webhook_id, destination"
    ).fetchall()
    webhooks: Counter[str] = Counter()
    webhook_retries: Counter[str] = Counter()
    destinations: Counter[str] = Counter()
    destination_retries: Counter[str] = Counter()
    for webhook_id, destination, count, retries in rows:
        webhooks[webhook_id] += count
        webhook_retries[webhook_id] += retries or 0
        destinations[destination] += count
        destination_retries[destination] += retries or 0
    return _Backlog(
        {k: (v, webhook_retries[k]) for k, v in webhooks.items()},
        {k: (v, destination_retries[k]) for k, v in destinations.items()},
        now,
    )


def _load_attempts(db: sqlite_utils.Database, since: float, after_id: int, limit: int) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT id, webhook_id, url, start_time, duration_ms, outcome, error FROM attempts "
        "WHERE start_time >= ? AND id > ? ORDER BY id LIMIT ?",
        [since, after_id, limit],
    ).fetchall()


class HealthMonitor:
    def __init__(
        self, clock: Clock, registry: WebhookRegistry, dispatcher: Dispatcher, readers: Readers, refresh_s: float = 0.5
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._dispatcher = dispatcher
        self._readers = readers
        self._refresh_s = refresh_s
        self.aggregates = HealthAggregates()
        self._backlog: _Backlog | None = None
        self._backlog_lock = trio.Lock()
        self._shared: dict[tuple[tuple[str, ...] | None, tuple[str, ...] | None], Snapshot] = {}

    def record(self, url: str, webhook_id: str, result: AttemptResult) -> None:
        """The engine's attempt listener."""
        self.aggregates.add(webhook_id, url, result.start_time, result.duration_ms, result.outcome, result.error)

    async def load_history(self) -> int:
        """Rebuild the buckets from the last day of stored attempts; run once at start."""
        since = self._clock.now() - DAY_S
        after, loaded = 0, 0
        while True:
            rows = await self._readers.run(partial(_load_attempts, since=since, after_id=after, limit=LOAD_CHUNK))
            for _id, webhook_id, url, start, duration, outcome, error in rows:
                self.aggregates.add(webhook_id, url, start, duration, Outcome(outcome), error)
            loaded += len(rows)
            if len(rows) < LOAD_CHUNK:
                break
            after = rows[-1][0]
        log.info("health history loaded attempts=%d", loaded)
        return loaded

    async def _backlog_now(self) -> _Backlog:
        async with self._backlog_lock:
            now = self._clock.now()
            if self._backlog is None or now - self._backlog.taken_at >= self._refresh_s:
                self._backlog = await self._readers.run(partial(_load_backlog, now=now))
            return self._backlog

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
        actor: DestinationActor | None,
        with_breaker: bool = True,
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
            breaker_state=(actor.breaker.state if actor else BreakerState.CLOSED) if with_breaker else None,
            breaker_since=actor.breaker.since_wall if actor and with_breaker else 0.0,
            last_success=series.last_success if series else 0.0,
            last_failure=series.last_failure if series else 0.0,
            last_error=series.last_error if series else "",
        )

    async def snapshot(self, webhook_ids: list[str] | None = None, urls: list[str] | None = None) -> Snapshot:
        """Figures for the service, and for the named webhooks and destinations (all when None).

        Watchers asking for the same thing within ``SHARE_S`` get the same snapshot object, so a
        hundred watchers cost one computation per tick, and the API layer can reuse its encoding.
        """
        key = (tuple(webhook_ids) if webhook_ids is not None else None, tuple(urls) if urls is not None else None)
        now = self._clock.now()
        shared = self._shared.get(key)
        if shared is not None and now - shared.time < SHARE_S:
            return shared
        snapshot = await self._compute(webhook_ids, urls)
        if len(self._shared) >= MAX_SHARED:
            self._shared.clear()
        self._shared[key] = snapshot
        return snapshot

    async def _compute(self, webhook_ids: list[str] | None, urls: list[str] | None) -> Snapshot:
        backlog = await self._backlog_now()
        now = self._clock.now()
        self.aggregates.prune(now)
        actors = self._dispatcher.actors
        queued: Counter[str] = Counter()
        in_flight: Counter[str] = Counter()
        for live in actors.values():
            for job in live.queue:
                queued[job.webhook_id] += 1
            for webhook_id, _scope in live.in_flight.values():
                in_flight[webhook_id] += 1

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
        webhook_stats = [
            self._stats(
                f"webhooks/{hook.id}",
                self.aggregates.webhooks.get(hook.id),
                now,
                backlog.webhooks.get(hook.id, (0, 0)),
                queued[hook.id],
                in_flight[hook.id],
                actors.get(hook.url),
            )
            for hook in hooks
        ]
        destination_stats = []
        for url in urls:
            actor = actors.get(url)
            destination_stats.append(
                self._stats(
                    url,
                    self.aggregates.destinations.get(url),
                    now,
                    backlog.destinations.get(url, (0, 0)),
                    len(actor.queue) if actor else 0,
                    len(actor.in_flight) if actor else 0,
                    actor,
                )
            )
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
        return Snapshot(now, service, webhook_stats, destination_stats, len(actors), self._dispatcher.restarts)
