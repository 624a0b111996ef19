"""``hookd.v1.WebhookService`` on grpc.aio: decode, call the engine in trio, encode.

No business logic lives here; each method is a translation and a bridge call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from hookd.engine import Engine, EventInput, Snapshot, catalogue
from hookd.engine.errors import InvalidArgument
from hookd.engine.jobs import PublishResult
from hookd.engine.model import WebhookFilter
from hookd.engine.validation import UPDATABLE, check_update_paths, health_filter
from hookd.server import convert
from hookd.server.bridge import TrioBridge
from hookd.server.errors import grpc_errors, lenient_decoder, refuse_undecodable, status_of
from hookd.server.watchers import Watchers
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_HEALTH_INTERVAL_S = 1.0
#: Shorter intervals are raised to this floor.
MIN_HEALTH_INTERVAL_S = 0.1
#: Webhooks and destinations encoded between two turns of the loop, so that a snapshot of ten
#: thousand keys does not hold up every other call while it is turned into protobuf.
ENCODE_STEP = 200


def _event_input(message: pb.EventInput, prefix: str) -> EventInput:
    return EventInput(
        resource=message.resource,
        event=message.event,
        data=convert.struct_to_dict(message.data, f"{prefix}.data"),
        related=convert.struct_to_dict(message.related, f"{prefix}.related"),
        idempotency_key=message.idempotency_key,
    )


def _publish_answer(result: Any) -> pb.PublishEventResponse:
    return pb.PublishEventResponse(
        name=f"events/{result.event_id}", delivery_count=result.delivery_count, duplicate=result.duplicate
    )


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, engine: Engine, bridge: TrioBridge, watchers: Watchers) -> None:
        self._engine = engine
        self._bridge = bridge
        self._watchers = watchers
        self._last_encoded: tuple[Snapshot, asyncio.Future[pb.HealthSnapshot]] | None = None

    @grpc_errors
    async def CreateWebhook(self, request: pb.CreateWebhookRequest, context: Context) -> pb.Webhook:
        data = convert.webhook_input(request.webhook)
        webhook = await self._bridge.call(self._engine.create_webhook, data)
        return convert.webhook_to_proto(webhook, reveal_secret=True)

    @grpc_errors
    async def GetWebhook(self, request: pb.GetWebhookRequest, context: Context) -> pb.Webhook:
        webhook = await self._bridge.call(self._engine.get_webhook, convert.webhook_id(request.name))
        return convert.webhook_to_proto(webhook, now=self._engine.now())

    @grpc_errors
    async def UpdateWebhook(self, request: pb.UpdateWebhookRequest, context: Context) -> pb.Webhook:
        hook_id = convert.webhook_id(request.webhook.name, "webhook.name")
        paths = list(request.update_mask.paths)
        if paths == ["*"]:
            paths = list(UPDATABLE)
        elif not paths:
            paths = convert.populated_paths(request.webhook)
        check_update_paths(paths)
        # Fields outside the mask are ignored, not checked (AIP-134): only the masked ones are read.
        masked = pb.Webhook()
        field_mask_pb2.FieldMask(paths=paths).MergeMessage(request.webhook, masked)
        data = convert.webhook_input(masked)
        webhook = await self._bridge.call(self._engine.update_webhook, hook_id, data, paths)
        return convert.webhook_to_proto(webhook, now=self._engine.now())

    @grpc_errors
    async def DeleteWebhook(self, request: pb.DeleteWebhookRequest, context: Context) -> pb.DeleteWebhookResponse:
        cancelled = await self._bridge.call(self._engine.delete_webhook, convert.webhook_id(request.name))
        return pb.DeleteWebhookResponse(cancelled_deliveries=cancelled)

    @grpc_errors
    async def ListWebhooks(self, request: pb.ListWebhooksRequest, context: Context) -> pb.ListWebhooksResponse:
        status = convert.webhook_status(request.status, "status")
        filters = WebhookFilter(request.resource, request.event, status, request.query)
        page = await self._bridge.call(self._engine.list_webhooks, filters, request.page_size, request.page_token)
        now = self._engine.now()
        return pb.ListWebhooksResponse(
            webhooks=[convert.webhook_to_proto(hook, now=now) for hook in page.items],
            next_page_token=page.next_token,
            total_size=page.total,
        )

    @grpc_errors
    async def ListEventTypes(self, request: pb.ListEventTypesRequest, context: Context) -> pb.ListEventTypesResponse:
        return pb.ListEventTypesResponse(
            event_types=[
                pb.EventType(resource=resource, event=event, type=f"{resource}.{event}")
                for resource, event in catalogue.event_types()
            ]
        )

    @grpc_errors
    async def TestWebhook(self, request: pb.TestWebhookRequest, context: Context) -> pb.TestWebhookResponse:
        if request.HasField("webhook"):
            hook_id = convert.webhook_id(request.name) if request.name else ""
            trial = convert.webhook_input(request.webhook)
            keep_auth = not request.webhook.HasField("auth")  # set without a method: try without
            result = await self._bridge.call(self._engine.try_settings, trial, hook_id, keep_stored_auth=keep_auth)
            return pb.TestWebhookResponse(attempt=convert.trial_to_proto(result))
        _, attempt = await self._bridge.call(self._engine.test_webhook, convert.webhook_id(request.name))
        return pb.TestWebhookResponse(attempt=convert.attempt_to_proto(attempt))

    @grpc_errors
    async def RotateSecret(self, request: pb.RotateSecretRequest, context: Context) -> pb.Webhook:
        grace = convert.seconds(request.grace_period, "grace_period") if request.HasField("grace_period") else None
        webhook = await self._bridge.call(self._engine.rotate_secret, convert.webhook_id(request.name), grace)
        return convert.webhook_to_proto(webhook, reveal_secret=True, now=self._engine.now())

    @grpc_errors
    async def PublishEvent(self, request: pb.PublishEventRequest, context: Context) -> pb.PublishEventResponse:
        item = _event_input(request.event, "event")
        results: list[PublishResult] = await self._bridge.call_soon(self._engine.publish_soon, [item], batch=False)
        return _publish_answer(results[0])

    @grpc_errors
    async def PublishEvents(self, request: pb.PublishEventsRequest, context: Context) -> pb.PublishEventsResponse:
        items = [_event_input(item, f"events[{index}]") for index, item in enumerate(request.events)]
        results: list[PublishResult] = await self._bridge.call_soon(self._engine.publish_soon, items, batch=True)
        return pb.PublishEventsResponse(results=[_publish_answer(result) for result in results])

    @grpc_errors
    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.Event:
        event = await self._bridge.call(self._engine.get_event, convert.event_id(request.name))
        return convert.event_to_proto(event)

    @grpc_errors
    async def ListDeliveries(self, request: pb.ListDeliveriesRequest, context: Context) -> pb.ListDeliveriesResponse:
        hook_id = convert.deliveries_parent(request.parent)
        event = convert.event_id(request.event, "event") if request.event else ""
        state = convert.delivery_state(request.state)
        page = await self._bridge.call(
            self._engine.list_deliveries, hook_id, event, state, request.page_size, request.page_token
        )
        return pb.ListDeliveriesResponse(
            deliveries=[convert.delivery_to_proto(item) for item in page.items], next_page_token=page.next_token
        )

    @grpc_errors
    async def GetDelivery(self, request: pb.GetDeliveryRequest, context: Context) -> pb.Delivery:
        hook_id, delivery_id = convert.delivery_ref(request.name)
        delivery = await self._bridge.call(self._engine.get_delivery, hook_id, delivery_id)
        return convert.delivery_to_proto(delivery)

    @grpc_errors
    async def ListAttempts(self, request: pb.ListAttemptsRequest, context: Context) -> pb.ListAttemptsResponse:
        hook_id, delivery_id = convert.delivery_ref(request.parent, "parent")
        page = await self._bridge.call(
            self._engine.list_attempts, hook_id, delivery_id, request.page_size, request.page_token
        )
        return pb.ListAttemptsResponse(
            attempts=[convert.attempt_to_proto(item) for item in page.items], next_page_token=page.next_token
        )

    @grpc_errors
    async def RetryDelivery(self, request: pb.RetryDeliveryRequest, context: Context) -> pb.Delivery:
        hook_id, delivery_id = convert.delivery_ref(request.name)
        delivery = await self._bridge.call(self._engine.retry_delivery, hook_id, delivery_id)
        return convert.delivery_to_proto(delivery)

    @grpc_errors
    async def RecoverDeliveries(
        self, request: pb.RecoverDeliveriesRequest, context: Context
    ) -> pb.RecoverDeliveriesResponse:
        hook_id = convert.deliveries_parent(request.parent)
        start = convert.epoch(request.start_time, "start_time") if request.HasField("start_time") else None
        end = convert.epoch(request.end_time, "end_time") if request.HasField("end_time") else None
        states = [convert.recover_state(value) for value in request.states]
        count = await self._bridge.call(self._engine.recover_deliveries, hook_id, start, end, states)
        return pb.RecoverDeliveriesResponse(recovered_count=count)

    # A coroutine writing with context.write rather than the generator the stubs expect: a
    # generator's writes are grpc's, and could not be bounded in time.
    async def StreamHealth(self, request: pb.StreamHealthRequest, context: Context) -> None:  # type: ignore[override]
        """A snapshot at once, then one per interval, until the client cancels (which cancels this
        task) or stops taking them (``Watchers.send`` drops it)."""
        await refuse_undecodable(request, context)
        try:
            hook_ids, urls, interval = self._health_request(request)
            with self._watchers.admit():
                while True:
                    snapshot = await self._bridge.call(self._engine.health_snapshot, hook_ids, urls)
                    if not await self._watchers.send(context, await self._encoded(snapshot)):
                        return
                    await asyncio.sleep(interval)
        except grpc.aio.InternalError:
            raise  # a write failed: the client cancelled or went away, and grpc ends the call quietly
        except Exception as error:
            await context.abort(*status_of(error, "StreamHealth"))

    async def _encoded(self, snapshot: Snapshot) -> pb.HealthSnapshot:
        """The proto of a snapshot, encoded once however many watchers share it. Shielded: one
        watcher leaving does not cancel the encoding the others wait for."""
        if self._last_encoded is None or self._last_encoded[0] is not snapshot:
            self._last_encoded = (snapshot, asyncio.ensure_future(self._encode(snapshot)))
        return await asyncio.shield(self._last_encoded[1])

    async def _encode(self, snapshot: Snapshot) -> pb.HealthSnapshot:
        message = convert.snapshot_head_to_proto(snapshot)
        message.watchers = self._watchers.count
        for repeated, items in ((message.webhooks, snapshot.webhooks), (message.destinations, snapshot.destinations)):
            for start in range(0, len(items), ENCODE_STEP):
                repeated.extend([convert.stats_to_proto(stats) for stats in items[start : start + ENCODE_STEP]])
                await asyncio.sleep(0)
        return message

    def _health_request(self, request: pb.StreamHealthRequest) -> tuple[list[str] | None, list[str] | None, float]:
        names = health_filter(request.webhooks, "webhooks")
        urls = health_filter(request.destinations, "destinations")
        hook_ids = [convert.webhook_id(name, "webhooks") for name in names] or None
        interval = DEFAULT_HEALTH_INTERVAL_S
        if request.HasField("interval"):
            interval = convert.seconds(request.interval, "interval")
            if interval <= 0:
                raise InvalidArgument("interval", "must be positive")
        return hook_ids, urls or None, max(interval, MIN_HEALTH_INTERVAL_S)


def add_to_server(servicer: WebhookServicer, server: grpc.aio.Server) -> None:
    """Register the service as ``add_WebhookServiceServicer_to_server`` does, but with request
    deserializers that never raise: a request that does not parse is INVALID_ARGUMENT, not UNKNOWN."""
    service = pb.DESCRIPTOR.services_by_name["WebhookService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=lenient_decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
