"""The engine's front door: every API operation, in trio, with the engine wired behind it.

``Engine.run`` owns the writer, the dispatcher and the actors in one nursery; the API layer calls
the other methods from tasks it starts in that trio run. Every change is committed first and then
applied to memory (registry, actors) by the writer's commit hook, in the same step: a caller that
gives up while its change commits cannot leave memory and disk disagreeing.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import trio

from hookd.engine import catalogue
from hookd.engine.actor import ActorContext, request_headers
from hookd.engine.clock import Clock
from hookd.engine.config import EngineConfig
from hookd.engine.connections import ConnectionSet
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.errors import InvalidArgument, NotFound
from hookd.engine.http_delivery import post
from hookd.engine.ids import new_event_id, new_signing_secret, new_webhook_id
from hookd.engine.jobs import AttemptResult, PreparedEvent, PublishResult
from hookd.engine.model import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    InactivePolicy,
    Status,
    Webhook,
    message_id,
)
from hookd.engine.monitor import HealthMonitor
from hookd.engine.paging import decode_token, encode_token, page_size
from hookd.engine.registry import WebhookRegistry
from hookd.engine.store import delivery_ops, queries, webhook_ops
from hookd.engine.store.database import connect, open_database
from hookd.engine.store.writer import Readers, Writer
from hookd.engine.validation import (
    DEFAULT_TIMEOUT_S,
    UPDATABLE,
    WebhookInput,
    check_idempotency_key,
    check_query,
    check_scalars,
    event_payload,
    to_json,
)

log = logging.getLogger("hookd.engine")

MAX_GRACE_S = 7 * 24 * 3600.0


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


def rfc3339(epoch: float) -> str:
    stamp = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event_id: str, event_type: str, epoch: float, data_json: str, related_json: str) -> str:
    """The JSON body every destination receives for an event, around data already serialised."""
    head = to_json({"id": event_id, "type": event_type, "timestamp": rfc3339(epoch)})
    return f'{head[:-1]},"data":{data_json},"related":{related_json}}}'


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.registry = WebhookRegistry(config.default_rate_limit)
        self._attempt_listeners: list[Callable[[str, str, AttemptResult], None]] = []
        self._started = trio.Event()
        self.clock: Clock
        self.writer: Writer
        self.readers: Readers
        self.dispatcher: Dispatcher
        self.monitor: HealthMonitor

    def add_attempt_listener(self, listener: Callable[[str, str, AttemptResult], None]) -> None:
        """Called with (destination, webhook id, result) after every attempt (health figures)."""
        self._attempt_listeners.append(listener)

    def _attempt_finished(self, url: str, webhook_id: str, result: AttemptResult) -> None:
        for listener in self._attempt_listeners:
            listener(url, webhook_id, result)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, resume pending deliveries, and run until cancelled."""
        config = self.config
        db = await trio.to_thread.run_sync(partial(open_database, config.database, synchronous=config.synchronous))
        readers = [
            await trio.to_thread.run_sync(partial(connect, config.database, query_only=True))
            for _ in range(config.readers)
        ]
        self.clock = Clock()
        self.writer = Writer(db)
        self.readers = Readers(readers)
        try:
            self.registry.load(await self.readers.run(queries.all_webhooks))
            ctx = ActorContext(
                config=config,
                clock=self.clock,
                registry=self.registry,
                writer=self.writer,
                readers=self.readers,
                rng=random.Random(),
                schedule=lambda url, due: self.dispatcher.schedule(url, due),
                attempt_finished=self._attempt_finished,
            )
            self.dispatcher = Dispatcher(ctx)
            self.monitor = HealthMonitor(self.clock, self.registry, self.dispatcher, self.readers)
            await self.monitor.load_history()
            self.add_attempt_listener(self.monitor.record)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.writer.run)
                await nursery.start(self.dispatcher.run)
                log.info("engine started database=%s webhooks=%d", config.database, len(self.registry))
                self._started.set()
                task_status.started()
        finally:
            self.readers.close()
            db.conn.close()

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
        )
        await self.writer.execute(partial(webhook_ops.insert_webhook, webhook=webhook), on_commit=self.registry.put)
        log.info("webhook created name=webhooks/%s type=%s.%s", webhook.id, webhook.resource, webhook.event)
        return webhook

    async def get_webhook(self, webhook_id: str) -> Webhook:
        webhook = self.registry.get(webhook_id)
        if webhook is None:
            raise NotFound(f"webhooks/{webhook_id} not found")
        return webhook

    async def update_webhook(self, webhook_id: str, data: WebhookInput, paths: list[str]) -> Webhook:
        for path in paths:
            if path not in UPDATABLE:
                raise InvalidArgument(
                    "update_mask", f"cannot update {path!r}; updatable fields: {', '.join(UPDATABLE)}"
                )
        current = await self.get_webhook(webhook_id)
        changes: dict[str, Any] = {}
        for path in paths:
            if path == "timeout":
                changes["timeout_s"] = data.timeout_s if data.timeout_s is not None else DEFAULT_TIMEOUT_S
            elif path == "status":
                changes["status"] = data.status or Status.ACTIVE
            elif path == "inactive_policy":
                changes["inactive_policy"] = data.inactive_policy or InactivePolicy.QUEUE
            else:
                changes[path] = getattr(data, path)
        new = replace(current, **changes)
        catalogue.check_event_type(new.resource, new.event, field_prefix="webhook.")
        check_scalars(
            WebhookInput(
                description=new.description, rate_limit=new.rate_limit, timeout_s=new.timeout_s, auth=new.auth
            ),
            "webhook",
        )
        if new.url != current.url:
            await self.config.destinations.check_destination(new.url, "webhook.url")
        now = self.clock.now()
        changes["update_time"] = now
        # The changes are applied to the row as it is inside the transaction, so a concurrent
        # change to other fields (a secret rotation, say) is never written back over.
        _, new = await self.writer.execute(
            partial(webhook_ops.update_webhook, webhook_id=webhook_id, changes=changes, now=now),
            on_commit=self._updated,
        )
        log.info("webhook updated name=webhooks/%s fields=%s", webhook_id, ",".join(paths))
        return new

    def _updated(self, versions: tuple[Webhook, Webhook]) -> None:
        old, new = versions
        self.registry.put(new)
        if new.status is Status.ACTIVE and (old.status is not Status.ACTIVE or old.url != new.url):
            self.dispatcher.poke(new.url)

    async def delete_webhook(self, webhook_id: str) -> int:
        await self.get_webhook(webhook_id)
        now = self.clock.now()
        _, cancelled = await self.writer.execute(
            partial(webhook_ops.delete_webhook, webhook_id=webhook_id, now=now), on_commit=self._deleted
        )
        log.info("webhook deleted name=webhooks/%s cancelled=%d", webhook_id, cancelled)
        return int(cancelled)

    def _deleted(self, outcome: tuple[Webhook, int]) -> None:
        old = outcome[0]
        self.registry.remove(old.id)
        self.dispatcher.cancel_webhook(old.url, old.id)

    async def list_webhooks(self, filters: queries.WebhookFilter, size: int, token: str) -> Page:
        check_query(filters.query, "query")
        limit = page_size(size)
        fingerprint = [filters.resource, filters.event, filters.status and filters.status.value, filters.query]
        after = decode_token(token, fingerprint)
        rows, total = await self.readers.run(
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
        webhook = await self.writer.execute(
            partial(
                webhook_ops.rotate_secret,
                webhook_id=webhook_id,
                secret=new_signing_secret(),
                previous_expires=now + grace,
                now=now,
            ),
            on_commit=self.registry.put,
        )
        log.info("secret rotated name=webhooks/%s grace_s=%g", webhook_id, grace)
        return webhook

    async def test_webhook(self, webhook_id: str) -> tuple[int, AttemptRecord]:
        """Send a signed ping now, without retries, and record it; return (delivery id, attempt)."""
        webhook = await self.get_webhook(webhook_id)
        now = self.clock.now()
        event_id = new_event_id()
        body = envelope(event_id, catalogue.PING_TYPE, now, to_json({"webhook": f"webhooks/{webhook_id}"}), "{}")
        ping = PreparedEvent(event_id, catalogue.PING_TYPE, "webhook", "ping", now, body, "")
        delivery_id = await self.writer.execute(
            partial(delivery_ops.insert_test_ping, event=ping, webhook_id=webhook_id, url=webhook.url)
        )
        payload = body.encode()
        async with ConnectionSet(self.config.destinations) as client:
            headers = request_headers(webhook, message_id(delivery_id), payload, now)
            result = await post(client, webhook.url, headers, payload, webhook.timeout_s, self.clock.now())
        self._attempt_finished(webhook.url, webhook_id, result)
        await self.writer.execute(
            partial(
                delivery_ops.finish_test_ping,
                delivery_id=delivery_id,
                webhook_id=webhook_id,
                attempt=result,
                now=self.clock.now(),
            )
        )
        attempts = await self.readers.run(
            partial(queries.list_attempts, delivery_id=delivery_id, after_id=None, limit=1)
        )
        return delivery_id, attempts[0]

    # -- events ------------------------------------------------------------------------------------

    def _prepare(self, item: EventInput, prefix: str, now: float) -> PreparedEvent:
        event_type = catalogue.check_event_type(item.resource, item.event, field_prefix=f"{prefix}.")
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
        """Store events and their deliveries durably, then hand the deliveries to the actors."""
        if batch:
            if not items:
                raise InvalidArgument("events", "must hold at least one event")
            if len(items) > self.config.max_batch_events:
                raise InvalidArgument("events", f"at most {self.config.max_batch_events} events per call")
        now = self.clock.now()
        prepared = [
            self._prepare(item, f"events[{index}]" if batch else "event", now) for index, item in enumerate(items)
        ]
        return await self.writer.execute(partial(delivery_ops.publish, events=prepared), on_commit=self._offer)

    def _offer(self, results: list[PublishResult]) -> None:
        for result in results:
            for url, job in result.jobs:
                self.dispatcher.offer(url, job)

    async def get_event(self, event_id: str) -> EventRecord:
        return await self.readers.run(partial(queries.get_event, event_id=event_id))

    # -- deliveries --------------------------------------------------------------------------------

    async def list_deliveries(
        self, webhook_id: str | None, event_id: str, state: DeliveryState | None, size: int, token: str
    ) -> Page:
        # A deleted webhook's deliveries stay listed under it; only a never-seen id is unknown.
        if (
            webhook_id is not None
            and self.registry.get(webhook_id) is None
            and not await self.readers.run(partial(queries.has_deliveries, webhook_id=webhook_id))
        ):
            raise NotFound(f"webhooks/{webhook_id} not found")
        limit = page_size(size)
        fingerprint = [webhook_id, event_id, state and state.value]
        before = decode_token(token, fingerprint)
        rows = await self.readers.run(
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
        rows = rows[:limit]
        return Page(rows, encode_token(rows[-1].id, fingerprint) if more else "")

    async def get_delivery(self, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
        """``webhook_id`` None finds the delivery under whichever webhook it belongs to."""
        return await self.readers.run(partial(queries.get_delivery, webhook_id=webhook_id, delivery_id=delivery_id))

    async def list_attempts(self, webhook_id: str | None, delivery_id: int, size: int, token: str) -> Page:
        await self.get_delivery(webhook_id, delivery_id)
        limit = page_size(size)
        fingerprint = [webhook_id, delivery_id]
        after = decode_token(token, fingerprint)
        rows = await self.readers.run(
            partial(queries.list_attempts, delivery_id=delivery_id, after_id=after, limit=limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_token(rows[-1].id, fingerprint) if more else "")

    async def retry_delivery(self, webhook_id: str | None, delivery_id: int) -> DeliveryRecord:
        if webhook_id is None:
            webhook_id = (await self.get_delivery(None, delivery_id)).webhook_id
        await self.writer.execute(
            partial(delivery_ops.retry_delivery, webhook_id=webhook_id, delivery_id=delivery_id, now=self.clock.now()),
            on_commit=self.dispatcher.poke,
        )
        return await self.get_delivery(webhook_id, delivery_id)
