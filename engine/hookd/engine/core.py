"""The engine's front door: every API operation, in trio, with the engine wired behind it.

``Engine.run`` owns the writer, the dispatcher and the actors in one nursery; the API layer calls
the other methods from tasks it starts in that trio run. Every change is committed first and then
applied to memory (registry, actors) by the writer's commit hook, in the same step: a caller that
gives up while its change commits cannot leave memory and disk disagreeing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import outcome
import trio

from hookd.engine import catalogue
from hookd.engine.actor import ActorContext, request_headers
from hookd.engine.clock import Clock
from hookd.engine.cluster import ClusterSync, Membership
from hookd.engine.config import EngineConfig
from hookd.engine.connections import ConnectionSet
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.envelopes import envelope
from hookd.engine.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from hookd.engine.http11 import RequestNotEncodable, target_of
from hookd.engine.http_delivery import post
from hookd.engine.ids import new_event_id, new_signing_secret, new_webhook_id
from hookd.engine.jobs import AttemptResult, Job, PreparedEvent, PublishResult
from hookd.engine.maintenance import Maintenance, MaintenanceReport
from hookd.engine.model import (
    AttemptRecord,
    Auth,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    InactivePolicy,
    Ordering,
    Status,
    Webhook,
    WebhookFilter,
)
from hookd.engine.monitor import HealthMonitor, LiveState, Snapshot
from hookd.engine.ownership import SingleNode
from hookd.engine.paging import decode_token, encode_token, page_size
from hookd.engine.registry import WebhookRegistry
from hookd.engine.store import delivery_ops, queries, webhook_ops
from hookd.engine.store.backend import SharedBackend, open_backend
from hookd.engine.store.delivery_ops import RecoveredBatch, RecoveryFilter
from hookd.engine.store.sql import Tx
from hookd.engine.store.webhook_ops import Disabled
from hookd.engine.store.writer import FollowUp, Readers, Reply, StoreStatus, Writer, WriterStatistics
from hookd.engine.validation import (
    DEFAULT_TIMEOUT_S,
    WebhookInput,
    check_idempotency_key,
    check_query,
    check_scalars,
    check_update_paths,
    event_payload,
    to_json,
)

log = logging.getLogger("hookd.engine")

#: Reads of a webhook another node changed, when this node keeps changing it meanwhile.
RELOAD_ATTEMPTS = 3
#: Cluster: how often a node reads every webhook again, whatever it has heard.
WEBHOOK_REFRESH_S = 30.0
#: Cluster: how long a node remembers a webhook was deleted, against commit hooks that run late
#: (they run right after their commit; this is far beyond that).
GONE_KEPT_S = 600.0

MAX_GRACE_S = 7 * 24 * 3600.0
#: How long TestWebhook waits for a request slot at a busy destination, beyond two timeouts.
PING_QUEUE_WAIT_S = 10.0
#: How often TestWebhook looks at its ping when another node sends it.
PING_POLL_S = 0.25


@dataclass(frozen=True)
class EventInput:
    """One event to publish, as the API layer decoded it."""

    resource: str
    event: str
    data: dict[str, Any]
    related: dict[str, Any]
    idempotency_key: str = ""


@dataclass(frozen=True)
class Page:
    """A page of results and the token for the next one (empty on the last)."""

    items: list[Any]
    next_token: str
    total: int = 0


class Engine:
    """The engine's public face: the server calls these methods and nothing deeper."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.registry = WebhookRegistry(config.default_rate_limit)
        self._settle_waiters: dict[int, trio.Event] = {}
        self.clock: Clock
        self._writer: Writer
        self._readers: Readers
        self._dispatcher: Dispatcher
        self._monitor: HealthMonitor
        self._membership: Membership | None = None
        self._sync: ClusterSync
        self._maintenance: Maintenance
        self._nursery: trio.Nursery
        # Background recoveries go one after another.
        self._recovery_lock = trio.Lock()
        # Cluster: this node's own webhook changes, counted, and which webhooks they were while
        # reads of other nodes' changes were under way (see _reload).
        self._local_changes = 0
        self._reads_under_way = 0
        self._changed_during_reads: dict[str, int] = {}
        self._reload_lock = trio.Lock()
        # Webhooks this node learned were deleted, and when (ids are never reused): a commit hook
        # of this node's that runs later must not bring one back.
        self._gone: dict[str, float] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, resume pending deliveries, and run until cancelled.

        Raises ``StartupError`` (one line for the operator) when the store cannot be opened.
        """
        config = self.config
        backend = open_backend(config.database, synchronous=config.synchronous, lease_s=config.lease_s)
        await trio.to_thread.run_sync(backend.open, config.readers)
        try:
            self.clock = Clock()
            self._writer = Writer(backend)
            self._readers = Readers(backend, config.readers)
            self.registry.load(await self._readers.run(queries.all_webhooks))
            ctx = ActorContext(
                config=config,
                clock=self.clock,
                registry=self.registry,
                writer=self._writer,
                readers=self._readers,
                ownership=SingleNode(),
                rng=random.Random(),
                schedule=lambda url, due: self._dispatcher.schedule(url, due),
                settled=self._settled,
            )
            self._dispatcher = Dispatcher(ctx)
            if backend.shared:
                self._membership = self._join(cast(SharedBackend, backend), ctx)
            self._monitor = HealthMonitor(
                self.clock,
                self.registry,
                self._readers,
                live_state=self._live_state,
                store_status=lambda: self._writer.status,
            )
            await self._monitor.load()
            self._maintenance = Maintenance(
                config,
                self.clock,
                self._writer,
                leads=self._membership.leads if self._membership is not None else lambda: True,
                shared=backend.shared,
                disabled=self._disabled,
                catch_up=self._waiting_catch_up,
            )
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._writer.run)
                await nursery.start(self._dispatcher.run)
                if self._membership is not None:
                    await nursery.start(self._membership.run)
                    await nursery.start(self._sync.run)
                    nursery.start_soon(self._refresh_webhooks)
                await nursery.start(self._monitor.run)
                await nursery.start(self._maintenance.run)
                log.info(
                    "engine started database=%s webhooks=%d node=%s",
                    backend.description,
                    len(self.registry),
                    config.node_id or "-",
                )
                task_status.started()
        finally:
            backend.close()

    def _join(self, backend: SharedBackend, ctx: ActorContext) -> Membership:
        """Cluster mode: this node owns only the destinations of the slots it holds."""
        backend.origin = self.config.node_id
        membership = Membership(
            backend,
            self._dispatcher,
            node_id=self.config.node_id,
            lease_s=self.config.lease_s,
            live_actors=self._dispatcher.statistics,
            restarts=lambda: self._dispatcher.restarts,
        )
        ctx.ownership = membership
        self._sync = ClusterSync(
            backend,
            node_id=self.config.node_id,
            deliveries=self._due_elsewhere,
            webhooks=self._reload_webhooks,
            membership=membership.wake,
            catch_up=self._catch_up,
        )
        return membership

    def set_address(self, address: str) -> None:
        """The address this node serves on, shown to the cluster (from the next heartbeat)."""
        if self._membership is not None:
            self._membership.address = address

    async def leave(self, grace_s: float) -> None:
        """Before stopping: in a cluster, hand this node's destinations over at once."""
        if self._membership is not None:
            await self._membership.leave(grace_s)

    # -- keeping up with the other nodes -----------------------------------------------------------

    def _due_elsewhere(self, urls: list[str]) -> None:
        for url in urls:
            self._dispatcher.poke(url)

    def _changed_here(self, webhook_id: str) -> None:
        """This node committed a change of the webhook (its commit hook is running)."""
        self._local_changes += 1
        if self._reads_under_way:
            self._changed_during_reads[webhook_id] = self._local_changes

    async def _reload(self, read: Callable[[Tx], dict[str, Webhook]], webhook_ids: list[str] | None) -> list[str]:
        """Apply what ``read`` finds of ``webhook_ids`` (None: every webhook known or stored);
        return the ids to read again.

        A read under way while this node commits a change of its own may return the row as it
        was before. Versions order two copies of a row, but not a row and its absence: which
        webhooks this node changed meanwhile says when a missing or present row may be stale.
        Reloads run one at a time (one query each), so an older read is never applied after a
        newer one: a row read before another node deleted it cannot land after its absence.
        """
        async with self._reload_lock:
            self._reads_under_way += 1
            started = self._local_changes
            try:
                stored = await self._readers.run(read)
                ids = webhook_ids if webhook_ids is not None else [*stored, *(h.id for h in self.registry.all())]
                again = []
                for webhook_id in dict.fromkeys(ids):
                    changed_meanwhile = self._changed_during_reads.get(webhook_id, 0) > started
                    if not self._apply_stored(webhook_id, stored.get(webhook_id), changed_meanwhile):
                        again.append(webhook_id)
                return again
            finally:
                self._reads_under_way -= 1
                if not self._reads_under_way:
                    self._changed_during_reads.clear()

    async def _reload_webhooks(self, webhook_ids: list[str]) -> None:
        """Another node changed these webhooks: apply the stored versions here."""
        ids = list(dict.fromkeys(webhook_ids))
        for _ in range(RELOAD_ATTEMPTS):
            if not ids:
                return
            ids = await self._reload(partial(webhook_ops.find_webhooks, webhook_ids=ids), ids)
        # Changed here at every try: each change of this node's is newer anyway, and the
        # periodic refresh reads them again.

    def _apply_stored(self, webhook_id: str, stored: Webhook | None, changed_meanwhile: bool) -> bool:
        """Bring memory to the stored version if it is newer; False when the read may be stale
        and must be made again."""
        current = self.registry.get(webhook_id)
        if stored is None:
            if current is None:
                return True
            if changed_meanwhile:  # the read may be from before this node created it
                return False
            self._deleted((current, 0))
        elif current is None:
            if not changed_meanwhile:  # else this node deleted it after the read
                self.registry.put(stored)
                # Even when inactive: a ping made through another node may be waiting for it here.
                self._dispatcher.poke(stored.url)
        elif stored.version > current.version or (stored.version == current.version and stored != current):
            # Same version, other contents: written by something that does not count versions
            # (a node of the release before them, during a rolling upgrade; a hand-made UPDATE).
            # Among nodes that count them, one version has one content.
            self._updated((current, stored), newer=True)
        return True

    async def _refresh_webhooks(self) -> None:
        """Read every webhook again every ``WEBHOOK_REFRESH_S``, on a clock: the catch-up after a
        silence never comes on a busy cluster, and a copy can be wrong without a notification
        to come (a change made by hand in the database, say). One scan of a small table."""
        while True:
            await trio.sleep(WEBHOOK_REFRESH_S)
            try:
                again = await self._reload(_webhooks_by_id, None)
                await self._reload_webhooks(again)
            except Unavailable as error:
                log.warning("cannot read the webhooks to refresh them reason=%s", error)

    async def _catch_up(self) -> None:
        """After notifications may have been missed: read the webhooks and the work again."""
        again = await self._reload(_webhooks_by_id, None)
        await self._reload_webhooks(again)
        await self._dispatcher.resume(lambda url: True)
        if self._membership is not None:
            self._membership.wake()

    # -- what the server reads ---------------------------------------------------------------------

    def now(self) -> float:
        """The engine's wall clock, in epoch seconds."""
        return self.clock.now()

    @property
    def store_status(self) -> StoreStatus:
        return self._writer.status

    def store_statistics(self) -> WriterStatistics:
        """Commits made, writes queued and held (while the store cannot write)."""
        return self._writer.statistics()

    def add_store_listener(self, listener: Callable[[StoreStatus], None]) -> None:
        """Called in trio whenever the store becomes unavailable, or available again."""
        self._writer.add_status_listener(listener)

    async def health_snapshot(self, webhook_ids: list[str] | None = None, urls: list[str] | None = None) -> Snapshot:
        """Health figures for the service and the named webhooks and destinations (all when None)."""
        if webhook_ids and self._membership is not None:
            # Made, changed or deleted through another node, maybe not heard of here yet: the
            # figures come from memory, so bring it up to date first.
            await self._reload_webhooks(webhook_ids)
        for hook_id in webhook_ids or ():
            if self.registry.get(hook_id) is None:
                raise NotFound(f"webhooks/{hook_id} not found")
        return await self._monitor.snapshot(webhook_ids, urls)

    def attempt_totals(self) -> dict[tuple[str, str], int]:
        """(destination, outcome) -> attempts counted since this process started."""
        return dict(self._monitor.aggregates.totals)

    def _live_state(self) -> LiveState:
        if self._membership is not None:
            return self._membership.live_state()
        actors = self._dispatcher.statistics()
        return LiveState(actors=actors, actor_count=len(actors), restarts=self._dispatcher.restarts)

    def _settled(self, delivery_id: int) -> None:
        waiter = self._settle_waiters.get(delivery_id)
        if waiter is not None:
            waiter.set()

    # -- webhooks ----------------------------------------------------------------------------------

    async def create_webhook(self, data: WebhookInput) -> Webhook:
        catalogue.check_event_type(data.resource, data.event, field_prefix="webhook.")
        check_scalars(data, "webhook")
        await self.config.destinations.check_destination(data.url, "webhook.url")
        now = self.clock.now()
        webhook = Webhook(
            id=new_webhook_id(),
            resource=data.resource,
            event=data.event,
            url=data.url,
            auth=data.auth,
            secret=new_signing_secret(),
            status=data.status or Status.ACTIVE,
            inactive_policy=data.inactive_policy or InactivePolicy.QUEUE,
            description=data.description,
            rate_limit=data.rate_limit,
            timeout_s=data.timeout_s if data.timeout_s is not None else DEFAULT_TIMEOUT_S,
            create_time=now,
            update_time=now,
            ordering=data.ordering or Ordering.UNORDERED,
        )
        webhook = await self._writer.execute(
            partial(webhook_ops.insert_webhook, webhook=webhook, limit=self.config.max_webhooks_per_type),
            on_commit=self._created,
            first=webhook_ops.lock_type_room,
        )
        log.info("webhook created name=webhooks/%s type=%s.%s", webhook.id, webhook.resource, webhook.event)
        return webhook

    async def get_webhook(self, webhook_id: str) -> Webhook:
        webhook = await self._find_webhook(webhook_id)
        if webhook is None:
            raise NotFound(f"webhooks/{webhook_id} not found")
        return webhook

    async def _find_webhook(self, webhook_id: str) -> Webhook | None:
        """The webhook as last committed, or None.

        On its own, this process makes every change, so its registry is the truth. In a cluster,
        another node may have just changed the webhook and its notification may not have
        arrived here yet: a caller who created a webhook through one node and reads it through
        another must find it, so the database is read.
        """
        if self._membership is None:
            return self.registry.get(webhook_id)
        return await self._readers.run(partial(webhook_ops.find_webhook, webhook_id=webhook_id))

    async def update_webhook(self, webhook_id: str, data: WebhookInput, paths: list[str]) -> Webhook:
        """Change the fields named in ``paths``, checking those alone: a field left out of the
        mask is kept as stored, even one stored under rules that have since been tightened."""
        check_update_paths(paths)
        current = await self.get_webhook(webhook_id)
        changes: dict[str, Any] = {}
        for path in paths:
            if path == "timeout":
                changes["timeout_s"] = data.timeout_s if data.timeout_s is not None else DEFAULT_TIMEOUT_S
            elif path == "status":
                changes["status"] = data.status or Status.ACTIVE
            elif path == "inactive_policy":
                changes["inactive_policy"] = data.inactive_policy or InactivePolicy.QUEUE
            elif path == "ordering":
                changes["ordering"] = data.ordering or Ordering.UNORDERED
            else:
                changes[path] = getattr(data, path)
        new = replace(current, **changes)
        catalogue.check_event_type(new.resource, new.event, field_prefix="webhook.")
        check_scalars(
            WebhookInput(
                description=changes.get("description", ""),
                rate_limit=changes.get("rate_limit", 0.0),
                timeout_s=changes.get("timeout_s"),
                auth=changes.get("auth", Auth()),
            ),
            "webhook",
        )
        if new.url != current.url:
            await self.config.destinations.check_destination(new.url, "webhook.url")
        now = self.clock.now()
        changes["update_time"] = now
        # The changes are applied to the row as it is inside the transaction, so a concurrent
        # change to other fields (a secret rotation, say) is never written back over.
        _, new = await self._writer.execute(
            partial(
                webhook_ops.update_webhook,
                webhook_id=webhook_id,
                changes=changes,
                now=now,
                limit=self.config.max_webhooks_per_type,
            ),
            on_commit=self._updated_here,
            first=webhook_ops.lock_type_room if {"resource", "event"} & set(paths) else None,
            then=lambda versions: self._waiting_catch_up(versions[0]) if webhook_ops.changes_waiting(*versions) else [],
        )
        log.info("webhook updated name=webhooks/%s fields=%s", webhook_id, ",".join(paths))
        return new

    def _waiting_catch_up(self, old: Webhook) -> list[FollowUp]:
        """After a committed change that moves ``old``'s waiting deliveries: in a cluster, the
        write that sets right the deliveries of publishes on other nodes that read it as it was
        (``webhook_ops.catch_up_waiting``), committed after them; the destinations it makes due
        are poked here (a node does not hear its own notifications). One node writes alone."""
        if self._membership is None:
            return []
        fn, first = webhook_ops.catch_up_write(old, self.clock.now())
        return [FollowUp(fn, first=first, on_commit=self._poke_all)]

    def _poke_all(self, urls: list[str]) -> None:
        for url in urls:
            self._dispatcher.poke(url)

    def _created(self, webhook: Webhook) -> None:
        self._changed_here(webhook.id)
        known = self.registry.get(webhook.id)
        if webhook.id not in self._gone and (known is None or known.version < webhook.version):
            self.registry.put(webhook)

    def _updated_here(self, versions: tuple[Webhook, Webhook]) -> None:
        self._changed_here(versions[1].id)
        self._updated(versions)

    def _updated(self, versions: tuple[Webhook, Webhook], *, newer: bool = False) -> None:
        """Apply a committed change to memory and the actors; ``newer``: the caller has judged
        ``new`` the newer copy already."""
        stored, new = versions
        known = self.registry.get(new.id)
        if not newer and known is not None and known.version >= new.version:
            return  # memory holds this version or a newer one already (read from the store meanwhile)
        if new.id in self._gone:
            return  # deleted through another node, heard of between this commit and its hook
        # The actors act on the version in memory, which in a cluster may lag the stored one.
        old = known or stored
        self.registry.put(new)
        if known is None:
            # Unheard of here until now: its destination's actor dropped its jobs (a ping, say).
            self._dispatcher.poke(new.url)
        if old.url != new.url:
            # The old URL's actor lets go of the webhook's jobs and aborts its requests in flight,
            # so the next attempt is the new URL's (and the two actors never send it together).
            self._dispatcher.cancel_webhook(old.url, old.id)
        if new.status is Status.ACTIVE and (old.status is not Status.ACTIVE or old.url != new.url):
            self._dispatcher.poke(new.url)

    async def delete_webhook(self, webhook_id: str) -> int:
        await self.get_webhook(webhook_id)
        now = self.clock.now()
        _, cancelled = await self._writer.execute(
            partial(webhook_ops.delete_webhook, webhook_id=webhook_id, now=now),
            on_commit=self._deleted_here,
            then=lambda deleted: self._waiting_catch_up(deleted[0]),
        )
        log.info("webhook deleted name=webhooks/%s cancelled=%d", webhook_id, cancelled)
        return int(cancelled)

    def _disabled(self, disabled: list[Disabled]) -> None:
        """Webhooks maintenance switched off (committed): apply, say so, send the announcements."""
        for item in disabled:
            self._updated_here((item.old, item.new))
            log.warning("webhook disabled name=webhooks/%s reason=%s", item.new.id, item.new.disabled_reason)
            self._offer(item.published)

    async def run_maintenance(self, now: float | None = None) -> MaintenanceReport:
        """One maintenance run now, judging ages as of ``now`` (epoch seconds; default: now)."""
        return await self._maintenance.run_once(now)

    def _deleted_here(self, outcome: tuple[Webhook, int]) -> None:
        self._changed_here(outcome[0].id)
        self._deleted(outcome)

    def _deleted(self, outcome: tuple[Webhook, int]) -> None:
        stored = outcome[0]
        # The actors act on the version in memory, which in a cluster may lag the stored one.
        old = self.registry.remove(stored.id) or stored
        self._dispatcher.cancel_webhook(old.url, old.id)
        if self._membership is not None:
            now = trio.current_time()
            self._gone[stored.id] = now
            expired = [hook_id for hook_id, gone_at in self._gone.items() if gone_at < now - GONE_KEPT_S]
            for hook_id in expired:
                del self._gone[hook_id]

    async def list_webhooks(self, filters: WebhookFilter, size: int, token: str) -> Page:
        catalogue.check_filter(filters.resource, filters.event)
        check_query(filters.query, "query")
        limit = page_size(size)
        fingerprint = [filters.resource, filters.event, filters.status and filters.status.value, filters.query]
        after = decode_token(token, fingerprint)
        rows, total = await self._readers.run(
            partial(queries.list_webhooks, filters=filters, after_seq=after, limit=limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_token(rows[-1][0], fingerprint) if more else ""
        return Page([webhook for _, webhook in rows], next_token, total)

    async def rotate_secret(self, webhook_id: str, grace_s: float | None) -> Webhook:
        grace = self.config.secret_grace_s if grace_s is None else grace_s
        if not (0.0 <= grace <= MAX_GRACE_S):
            raise InvalidArgument("grace_period", "must be between 0 and 7 days")
        await self.get_webhook(webhook_id)
        now = self.clock.now()
        webhook = await self._writer.execute(
            partial(
                webhook_ops.rotate_secret,
                webhook_id=webhook_id,
                secret=new_signing_secret(),
                previous_expires=now + grace,
                now=now,
            ),
            on_commit=lambda rotated: self._updated_here((rotated, rotated)),
        )
        log.info("secret rotated name=webhooks/%s grace_s=%g", webhook_id, grace)
        return webhook

    async def test_webhook(self, webhook_id: str) -> tuple[int, AttemptRecord]:
        """Send a signed ping through the destination's actor, so it waits for a request slot and
        a rate-limit token like every delivery; wait for its one attempt and return it."""
        webhook = await self.get_webhook(webhook_id)
        now = self.clock.now()
        event_id = new_event_id()
        body = envelope(event_id, catalogue.PING_TYPE, now, to_json({"webhook": f"webhooks/{webhook_id}"}), "{}")
        ping = PreparedEvent(event_id, catalogue.PING_TYPE, "webhook", "ping", now, body, "")
        waiter = trio.Event()
        job = await self._writer.execute(
            partial(delivery_ops.insert_test_ping, event=ping, webhook_id=webhook_id, url=webhook.url),
            on_commit=lambda job: self._watch_ping(job, webhook.url, waiter),
            cost=2,
        )
        try:
            with trio.move_on_after(2 * webhook.timeout_s + PING_QUEUE_WAIT_S):
                await self._wait_settled(job.delivery_id, waiter)
        finally:
            self._settle_waiters.pop(job.delivery_id, None)
        attempts = await self._readers.run(
            partial(queries.list_attempts, delivery_id=job.delivery_id, after_id=None, limit=1)
        )
        if not attempts:
            # Given up on: a ping still waiting for its turn is never sent (the caller is told to
            # try again, and must not find it arriving later beside the new one); one already
            # under way, which may have reached the destination, finishes and is recorded.
            self._dispatcher.forget_job(webhook.url, job.delivery_id)
            with trio.CancelScope(shield=True):
                await self._writer.submit(partial(delivery_ops.abandon_ping, delivery_id=job.delivery_id, now=now))
            raise Unavailable(
                f"the ping to {webhook.url} got no answer in time (the destination is busy: no free request "
                "slot, or a slow answer); try again"
            )
        return job.delivery_id, attempts[0]

    def _watch_ping(self, job: Job, url: str, waiter: trio.Event) -> None:
        self._settle_waiters[job.delivery_id] = waiter
        self._dispatcher.offer(url, job)

    async def _wait_settled(self, delivery_id: int, waiter: trio.Event) -> None:
        """Until the delivery is no longer pending: woken by the local actor, or, when another
        node owns the destination, by reading its state now and then."""
        while True:
            with trio.move_on_after(PING_POLL_S):
                await waiter.wait()
            state, _ = await self._readers.run(partial(delivery_ops.settled_state, delivery_id=delivery_id))
            if state is not DeliveryState.PENDING:
                return

    async def try_settings(
        self, data: WebhookInput, webhook_id: str = "", *, keep_stored_auth: bool = True
    ) -> AttemptResult:
        """Send a signed ping to a URL, auth and timeout not saved yet, and record nothing.

        With ``webhook_id`` the stored webhook fills what ``data`` leaves unset and its secrets
        sign, so its receiver can verify the ping. An auth without a method keeps the stored
        credentials when ``keep_stored_auth`` (the caller left the auth unset; without it, the
        trial goes without credentials, as the settings would once saved), and only for the
        stored URL's origin (scheme, host and port): they are the destination's, and a caller
        who may not read them must not be able to send them to a server of its choosing; for
        another origin the caller sends them itself.
        """
        stored = await self.get_webhook(webhook_id) if webhook_id else None
        now = self.clock.now()
        trial = stored or Webhook(
            id="",
            resource="webhook",
            event="ping",
            url="",
            auth=Auth(),
            secret=new_signing_secret(),
            status=Status.ACTIVE,
            inactive_policy=InactivePolicy.QUEUE,
            description="",
            rate_limit=0.0,
            timeout_s=DEFAULT_TIMEOUT_S,
            create_time=now,
            update_time=now,
        )
        url = data.url or trial.url
        kept_auth = trial.auth if stored is not None and _same_origin(url, stored.url) else Auth()
        trial = replace(
            trial,
            url=url,
            auth=data.auth if data.auth.kind != "none" or not keep_stored_auth else kept_auth,
            timeout_s=data.timeout_s if data.timeout_s is not None else trial.timeout_s,
        )
        check_scalars(WebhookInput(url=trial.url, auth=trial.auth, timeout_s=trial.timeout_s), "webhook")
        await self.config.destinations.check_destination(trial.url, "webhook.url")
        event_id = new_event_id()
        data_json = to_json({"webhook": f"webhooks/{webhook_id}" if webhook_id else None})
        payload = envelope(event_id, catalogue.PING_TYPE, now, data_json, "{}").encode()
        log.info("webhook settings tried name=%s url=%s", f"webhooks/{webhook_id}" if webhook_id else "-", trial.url)
        async with ConnectionSet(self.config.destinations) as client:
            headers = request_headers(trial, f"msg_{event_id}", payload, now)
            return await post(client, trial.url, headers, payload, trial.timeout_s, self.clock.now())

    # -- events ------------------------------------------------------------------------------------

    def _prepare(self, item: EventInput, prefix: str, now: float) -> PreparedEvent:
        event_type = catalogue.check_event_type(item.resource, item.event, field_prefix=f"{prefix}.")
        catalogue.check_publishable(item.resource, field_prefix=f"{prefix}.")
        check_idempotency_key(item.idempotency_key, f"{prefix}.idempotency_key")
        data_json, related_json = event_payload(item.data, item.related, self.config.max_event_bytes, prefix)
        event_id = new_event_id()
        return PreparedEvent(
            id=event_id,
            type=event_type,
            resource=item.resource,
            event=item.event,
            create_time=now,
            envelope=envelope(event_id, event_type, now, data_json, related_json),
            idempotency_key=item.idempotency_key,
        )

    async def publish(self, items: list[EventInput], *, batch: bool) -> list[PublishResult]:
        """Store events and their deliveries durably, then hand the deliveries to the actors.

        A fan-out of more than ``publish_chunk`` deliveries is written over several short
        commits (``_publish_staged``) so that no other write waits behind it; it returns, like
        any publish, only once all of it is stored.
        """
        prepared, fan_out = self._plan_publish(items, batch)
        return await self._publish_planned(prepared, fan_out)

    async def _publish_planned(self, prepared: list[PreparedEvent], fan_out: int) -> list[PublishResult]:
        if fan_out <= self.config.publish_chunk:
            return await self._writer.execute(
                partial(delivery_ops.publish, events=prepared), on_commit=self._offer, cost=len(prepared) + fan_out
            )
        return await self._publish_staged(prepared)

    def publish_soon(
        self, items: list[EventInput], *, batch: bool, reply: Reply[list[PublishResult]]
    ) -> Callable[[], Awaitable[list[PublishResult]]] | None:
        """``publish`` for a caller outside trio (the API's event loop), without a task per call.

        Called in trio's thread context, it checks the events and queues their write at once;
        ``reply`` hears the outcome from the writer (or at once, for bad input), and None is
        returned. A large fan-out, or a full writer queue, needs a task: then nothing is done or
        replied, and the coroutine function to run in that task is returned instead (the caller
        owns the task, so cancelling the call cancels the publish)."""
        try:
            prepared, fan_out = self._plan_publish(items, batch)
        except Exception as error:
            reply(outcome.Error(error))
            return None
        if fan_out <= self.config.publish_chunk and self._writer.execute_soon(
            partial(delivery_ops.publish, events=prepared), reply, self._offer, cost=len(prepared) + fan_out
        ):
            return None
        return partial(self._publish_planned, prepared, fan_out)

    def _plan_publish(self, items: list[EventInput], batch: bool) -> tuple[list[PreparedEvent], int]:
        """The checked, prepared events of one publish call and the deliveries they would create."""
        field = "events" if batch else "event"
        if batch:
            if not items:
                raise InvalidArgument("events", "must hold at least one event")
            if len(items) > self.config.max_batch_events:
                raise InvalidArgument("events", f"at most {self.config.max_batch_events} events per call")
        now = self.clock.now()
        prepared = [
            self._prepare(item, f"events[{index}]" if batch else "event", now) for index, item in enumerate(items)
        ]
        fan_out = sum(self.registry.subscriber_count(event.resource, event.event) for event in prepared)
        if fan_out > self.config.max_deliveries_per_call:
            raise InvalidArgument(
                field,
                f"this call would create {fan_out} deliveries (events x subscribed webhooks); at most "
                f"{self.config.max_deliveries_per_call} per call: publish fewer events per call",
            )
        return prepared, fan_out

    async def _publish_staged(self, events: list[PreparedEvent]) -> list[PublishResult]:
        chunk = self.config.publish_chunk
        counts: list[int] = []
        parts: list[tuple[PreparedEvent, list[delivery_ops.Subscriber]]] = []
        size = 0
        try:
            for event in events:
                hooks = await self._readers.run(
                    partial(delivery_ops.subscribers, resource=event.resource, event=event.event)
                )
                counts.append(len(hooks))
                offset = 0
                while offset < len(hooks):
                    part = hooks[offset : offset + chunk - size]
                    offset += len(part)
                    parts.append((event, part))
                    size += len(part)
                    if size >= chunk:
                        await self._writer.execute(partial(delivery_ops.stage_deliveries, parts=parts))
                        parts, size = [], 0
            if parts:
                await self._writer.execute(partial(delivery_ops.stage_deliveries, parts=parts))
            results, urls = await self._writer.execute(
                partial(delivery_ops.finish_staged, events=events, counts=counts)
            )
        except BaseException:
            # Abandoned (the caller went away, the store failed): remove what was staged.
            with trio.CancelScope(shield=True):
                await self._writer.submit(partial(delivery_ops.drop_staged, event_ids=[e.id for e in events]))
            raise
        for url in urls:
            self._dispatcher.poke(url)
        return list(results)

    def _offer(self, results: list[PublishResult]) -> None:
        for result in results:
            for url, job in result.jobs:
                self._dispatcher.offer(url, job)

    async def get_event(self, event_id: str) -> EventRecord:
        return await self._readers.run(partial(queries.get_event, event_id=event_id))

    # -- deliveries --------------------------------------------------------------------------------

    async def list_deliveries(
        self, webhook_id: str | None, event_id: str, state: DeliveryState | None, size: int, token: str
    ) -> Page:
        # A deleted webhook's deliveries stay listed under it; only a never-seen id is unknown.
        if (
            webhook_id is not None
            and await self._find_webhook(webhook_id) is None
            and not await self._readers.run(partial(queries.has_deliveries, webhook_id=webhook_id))
        ):
            raise NotFound(f"webhooks/{webhook_id} not found")
        limit = page_size(size)
        fingerprint = [webhook_id, event_id, state and state.value]
        before = decode_token(token, fingerprint)
        rows = await self._readers.run(
            partial(
                queries.list_deliveries,
                webhook_id=webhook_id,
                event_id=event_id,
                state=state,
                before_id=before,
                limit=limit + 1,
            )
        )
        more = len(rows) > limit
        rows = await self._mark_waiting(rows[:limit])
        return Page(rows, encode_token(rows[-1].id, fingerprint) if more else "")

    async def get_delivery(self, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
        """``webhook_id`` None finds the delivery under whichever webhook it belongs to."""
        record = await self._readers.run(partial(queries.get_delivery, webhook_id=webhook_id, delivery_id=delivery_id))
        return (await self._mark_waiting([record]))[0]

    async def _mark_waiting(self, records: list[DeliveryRecord]) -> list[DeliveryRecord]:
        """Of ordered webhooks' pending deliveries, say which earlier one each waits behind."""
        ordered = {
            record.webhook_id
            for record in records
            if record.state is DeliveryState.PENDING
            and record.event_type != catalogue.PING_TYPE
            and (hook := self.registry.get(record.webhook_id)) is not None
            and hook.ordering is Ordering.ORDERED
        }
        if not ordered:
            return records
        heads = await self._readers.run(partial(queries.ordered_heads, webhook_ids=sorted(ordered)))
        marked = []
        for record in records:
            head = heads.get(record.webhook_id)
            waiting = record.state is DeliveryState.PENDING and record.event_type != catalogue.PING_TYPE
            if waiting and head is not None and head[0] != record.id and head[1] > 0:
                record = replace(record, waiting_for=head[0])
            marked.append(record)
        return marked

    async def list_attempts(self, webhook_id: str | None, delivery_id: int, size: int, token: str) -> Page:
        await self.get_delivery(webhook_id, delivery_id)
        limit = page_size(size)
        fingerprint = [webhook_id, delivery_id]
        after = decode_token(token, fingerprint)
        rows = await self._readers.run(
            partial(queries.list_attempts, delivery_id=delivery_id, after_id=after, limit=limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_token(rows[-1].id, fingerprint) if more else "")

    async def retry_delivery(self, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
        if webhook_id is None:
            webhook_id = (await self.get_delivery(None, delivery_id)).webhook_id
        await self._writer.execute(
            partial(delivery_ops.retry_delivery, webhook_id=webhook_id, delivery_id=delivery_id, now=self.clock.now()),
            on_commit=self._dispatcher.poke,
        )
        return await self.get_delivery(webhook_id, delivery_id)

    async def recover_deliveries(
        self, webhook_id: str | None, start: float | None, end: float | None, states: list[DeliveryState]
    ) -> int:
        """Send finished deliveries again (see ``delivery_ops.recover_batch``); return how many.

        The first batch commits before this returns; the rest, if any, is counted now and queued
        in the background, one short commit per batch.
        """
        states = states or [DeliveryState.FAILED]
        for state in states:
            if not state.finished:
                raise InvalidArgument("states", f"{state.value} is not a finished state; recover only finished ones")
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("end_time", "must be after start_time")
        if webhook_id is not None:
            webhook = await self.get_webhook(webhook_id)
            if webhook.status is not Status.ACTIVE:
                raise FailedPrecondition(f"webhooks/{webhook_id} is inactive; activate it before recovering")
        up_to = await self._readers.run(delivery_ops.newest_delivery_id)
        selection = RecoveryFilter(webhook_id, start, end, tuple(dict.fromkeys(states)), up_to)
        first = await self._recover_batch(selection, 0)
        if first.done:
            return first.recovered
        rest = await self._readers.run(
            partial(delivery_ops.count_recoverable, selection=selection, after_id=first.last_id)
        )
        self._nursery.start_soon(self._recover_rest, selection, first.last_id)
        log.info("recovery queued name=webhooks/%s now=%d background=%d", webhook_id or "-", first.recovered, rest)
        return first.recovered + rest

    async def _recover_batch(self, selection: RecoveryFilter, after_id: int) -> RecoveredBatch:
        def poke(batch: RecoveredBatch) -> None:
            for url in batch.urls:
                self._dispatcher.poke(url)

        return await self._writer.execute(
            partial(
                delivery_ops.recover_batch,
                selection=selection,
                after_id=after_id,
                limit=self.config.maintenance_batch,
                now=self.clock.now(),
            ),
            on_commit=poke,
        )

    async def _recover_rest(self, selection: RecoveryFilter, after_id: int) -> None:
        """The background part: a batch per commit, each followed by a pause as long as it took,
        so publishes and attempt outcomes keep their share of the writer."""
        recovered = 0
        async with self._recovery_lock:
            try:
                while True:
                    started = trio.current_time()
                    batch = await self._recover_batch(selection, after_id)
                    recovered += batch.recovered
                    after_id = batch.last_id
                    if batch.done:
                        break
                    await trio.sleep(trio.current_time() - started)
            except Unavailable as error:
                log.warning(
                    "recovery interrupted recovered=%d reason=%s; call again to go on", recovered, error.message
                )
                return
        log.info("recovery finished name=webhooks/%s recovered=%d", selection.webhook_id or "-", recovered)


def _webhooks_by_id(tx: Tx) -> dict[str, Webhook]:
    return {webhook.id: webhook for webhook in queries.all_webhooks(tx)}


def _same_origin(url: str, other: str) -> bool:
    """Whether requests to both URLs go to the same scheme, host and port."""
    try:
        return target_of(url).origin == target_of(other).origin
    except RequestNotEncodable:
        return False
