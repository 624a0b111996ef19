"""Housekeeping, on one node: auto-disable, retention, health compaction, abandoned stagings and
dead nodes.

A run does each job in small batches, each its own short commit through the writer, so
publishes and attempt outcomes commit in between; after each batch it pauses as long as the
batch took, so housekeeping never takes more than half of the writer's time, however far behind
it is. A run that spends its time budget stops, and the next one carries on where it left off.

Runs come every ``min(60 s, retention / 10, auto-disable / 10)``, at least 0.5 s apart, on one
node only: on a single node always; in a cluster only on the node that holds slot 0's lease
(``Membership.leads``), so one node prunes at a time and the job moves with the slot when a node
fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import trio

from hookd.engine.clock import Clock
from hookd.engine.config import EngineConfig
from hookd.engine.errors import Unavailable
from hookd.engine.model import Webhook
from hookd.engine.store import cluster_ops, delivery_ops, health_ops, retention_ops, webhook_ops
from hookd.engine.store.delivery_ops import IDEMPOTENCY_WINDOW_S
from hookd.engine.store.webhook_ops import Disabled
from hookd.engine.store.writer import FollowUp, Writer

log = logging.getLogger("hookd.maintenance")

#: Longest pause between runs, and the shortest.
MAX_INTERVAL_S = 60.0
MIN_INTERVAL_S = 0.5
#: Most of its interval a run may take (at least ``MIN_BUDGET_S``).
MAX_BUDGET_S = 10.0
MIN_BUDGET_S = 1.0
#: A publish staged this long ago and never finished is abandoned (its caller is long gone).
STAGING_ABANDONED_S = 3600.0
#: A node whose lease ran out this long ago is forgotten.
NODE_DEAD_S = 3600.0
#: Webhooks disabled per commit.
DISABLE_BATCH = 100
#: Free pages given back to the file system per commit, and per run.
RECLAIM_BATCH_PAGES = 256
RECLAIM_RUN_PAGES = 4096


def interval_for(config: EngineConfig) -> float:
    """How often runs come: often enough that retention and auto-disable act within a tenth of
    their setting, and at least once a minute for the rest."""
    candidates = [MAX_INTERVAL_S]
    for setting in (config.retention_s, config.auto_disable_after_s):
        if setting > 0:
            candidates.append(setting / 10)
    return max(MIN_INTERVAL_S, min(candidates))


@dataclass
class MaintenanceReport:
    """What one run did; ``complete`` is False when its time budget ran out first."""

    webhooks_disabled: int = 0
    stagings_dropped: int = 0
    health_keys_folded: int = 0
    deliveries_removed: int = 0
    events_removed: int = 0
    pages_reclaimed: int = 0
    nodes_forgotten: int = 0
    commits: int = 0
    complete: bool = True

    @property
    def did_something(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in ("commits", "complete"))

    def summary(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


class Maintenance:
    """Runs the housekeeping loop; ``run_once`` is one run, for the loop and for tests."""

    def __init__(
        self,
        config: EngineConfig,
        clock: Clock,
        writer: Writer,
        *,
        leads: Callable[[], bool],
        shared: bool,
        disabled: Callable[[list[Disabled]], None],
        catch_up: Callable[[Webhook], list[FollowUp]] = lambda old: [],
    ) -> None:
        self._config = config
        self._clock = clock
        self._writer = writer
        self._leads = leads
        self._shared = shared
        self._disabled = disabled
        #: The writes that follow a webhook's change (``Engine._waiting_catch_up``).
        self._catch_up = catch_up
        self.interval = interval_for(config)
        self._budget = max(MIN_BUDGET_S, min(MAX_BUDGET_S, self.interval))
        #: Where the scan of old events goes on from (see retention_ops.prune_events).
        self._events_after: tuple[float, str] = (0.0, "")
        self.runs = 0

    def __repr__(self) -> str:
        return f"<Maintenance every {self.interval:g}s runs={self.runs}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        leading = False
        while True:
            await trio.sleep(self.interval)
            if self._leads() != leading:
                leading = not leading
                log.info("housekeeping %s", "runs on this node" if leading else "left to another node")
            if not leading:
                continue
            try:
                report = await self.run_once()
            except Unavailable as error:
                log.warning("maintenance skipped: %s", error.message)
                continue
            except Exception:  # a bug here must not stop deliveries; the next run tries again
                log.exception("maintenance run failed")
                continue
            if report.did_something or not report.complete:
                log.info("maintenance run %s", report.summary())

    async def run_once(self, now: float | None = None) -> MaintenanceReport:
        """One run: every job, each in batches, within the time budget. ``now`` (epoch seconds)
        is when the run judges ages from; the engine's clock by default."""
        self.runs += 1
        report = MaintenanceReport()
        deadline = trio.current_time() + self._budget
        at = self._clock.now() if now is None else now
        config = self._config
        if config.auto_disable_after_s > 0:
            await self._disable_failing(report, at, deadline)
        report.stagings_dropped = await self._commit(
            report, partial(delivery_ops.drop_staged, older_than=at - STAGING_ABANDONED_S)
        )
        await self._compact(report, at, deadline)
        if config.retention_s > 0:
            await self._retention(report, at - config.retention_s, at, deadline)
        if self._shared:
            report.nodes_forgotten = await self._commit(
                report, partial(cluster_ops.prune_nodes, dead_for_s=NODE_DEAD_S)
            )
        return report

    async def _commit(
        self,
        report: MaintenanceReport,
        fn: Callable[..., Any],
        on_commit: Callable[[Any], None] | None = None,
        then: Callable[[Any], list[FollowUp]] | None = None,
    ) -> Any:
        """One batch in a commit of its own, then a pause as long as it took (see above)."""
        started = trio.current_time()
        result = await self._writer.execute(fn, on_commit=on_commit, then=then)
        report.commits += 1
        await trio.sleep(trio.current_time() - started)
        return result

    async def _disable_failing(self, report: MaintenanceReport, now: float, deadline: float) -> None:
        since_before = now - self._config.auto_disable_after_s
        while trio.current_time() < deadline:
            batch: list[Disabled] = await self._commit(
                report,
                partial(webhook_ops.disable_failing, since_before=since_before, now=now, limit=DISABLE_BATCH),
                on_commit=self._disabled,
                then=lambda disabled: [write for item in disabled for write in self._catch_up(item.old)],
            )
            report.webhooks_disabled += len(batch)
            if len(batch) < DISABLE_BATCH:
                return
        report.complete = False

    async def _compact(self, report: MaintenanceReport, now: float, deadline: float) -> None:
        """Drop health counts a day old, once (``forget`` reads every hour row and every old
        last-seen fact, whatever the batch), then fold old minutes into hours, a batch of keys
        per commit."""
        await self._commit(report, partial(health_ops.forget, now=now))
        while trio.current_time() < deadline:
            folded = await self._commit(report, partial(health_ops.compact, now=now))
            report.health_keys_folded += folded
            if not folded:
                return
        report.complete = False

    async def _retention(self, report: MaintenanceReport, cutoff: float, now: float, deadline: float) -> None:
        batch = self._config.maintenance_batch
        while True:
            if trio.current_time() >= deadline:
                report.complete = False
                return
            removed = await self._commit(
                report, partial(retention_ops.prune_deliveries, older_than=cutoff, limit=batch)
            )
            report.deliveries_removed += removed
            if removed < batch:
                break
        keys_cutoff = min(cutoff, now - IDEMPOTENCY_WINDOW_S)
        while True:
            if trio.current_time() >= deadline:
                report.complete = False
                return
            removed, following = await self._commit(
                report,
                partial(
                    retention_ops.prune_events,
                    older_than=cutoff,
                    keys_older_than=keys_cutoff,
                    after=self._events_after,
                    limit=batch,
                ),
            )
            report.events_removed += removed
            self._events_after = following or (0.0, "")
            if following is None:
                break
        await self._reclaim(report, deadline)

    async def _reclaim(self, report: MaintenanceReport, deadline: float) -> None:
        if not (report.deliveries_removed or report.events_removed):
            return
        while report.pages_reclaimed < RECLAIM_RUN_PAGES and trio.current_time() < deadline:
            pages = await self._commit(report, partial(retention_ops.reclaim_space, max_pages=RECLAIM_BATCH_PAGES))
            report.pages_reclaimed += pages
            if pages < RECLAIM_BATCH_PAGES:
                return
