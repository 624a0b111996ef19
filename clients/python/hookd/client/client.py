"""A thin typed wrapper over the generated stub: keyword arguments in, messages out, named errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from hookd.client.errors import from_rpc_error
from hookd.client.limits import TEST_WEBHOOK_DEADLINE_S
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if value:
        struct.update(value)
    return struct


def webhook_name(name_or_id: str) -> str:
    """Accept ``wh_...`` or ``webhooks/wh_...``."""
    return name_or_id if name_or_id.startswith("webhooks/") else f"webhooks/{name_or_id}"


def event_input(
    resource: str,
    event: str,
    data: dict[str, Any] | None = None,
    related: dict[str, Any] | None = None,
    idempotency_key: str = "",
) -> pb.EventInput:
    return pb.EventInput(
        resource=resource, event=event, data=_struct(data), related=_struct(related), idempotency_key=idempotency_key
    )


class HookdClient:
    """One channel to hookd. ``token`` adds ``authorization: Bearer``; ``root_certificates`` turns on TLS.

    ``timeout`` is each call's deadline in seconds (``None``: no deadline); a call that may rightly
    take longer on the server (``test_webhook``) gets a longer one. A call past its deadline raises
    ``DeadlineExceeded``.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tls: bool = False,
        timeout: float | None = 30.0,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if tls or root_certificates is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.WebhookServiceStub(self.channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def __enter__(self) -> HookdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _deadline(self, at_least: float) -> float | None:
        """The timeout for a call the server may rightly take ``at_least`` seconds over: the
        client's own when longer, and none when the client was made without one."""
        return None if self._timeout is None else max(self._timeout, at_least)

    def _call(self, rpc: Any, request: Any, timeout: float | None = None) -> Any:
        """One unary call, with the client's timeout unless ``timeout`` is given; a failure is
        raised as the named ``HookdError`` for its status code."""
        deadline = self._timeout if timeout is None else timeout
        try:
            return rpc(request, metadata=self._metadata, timeout=deadline)
        except grpc.RpcError as error:
            raise from_rpc_error(error, deadline) from None

    # -- webhooks ----------------------------------------------------------------------------------

    def create_webhook(
        self,
        resource: str,
        event: str,
        url: str,
        *,
        auth: pb.DestinationAuth | None = None,
        status: pb.Webhook.Status.ValueType = pb.Webhook.STATUS_UNSPECIFIED,
        inactive_policy: pb.Webhook.InactivePolicy.ValueType = pb.Webhook.INACTIVE_POLICY_UNSPECIFIED,
        description: str = "",
        rate_limit: float = 0.0,
        timeout_s: float | None = None,
        ordering: pb.Webhook.Ordering.ValueType = pb.Webhook.ORDERING_UNSPECIFIED,
    ) -> pb.Webhook:
        webhook = pb.Webhook(
            resource=resource,
            event=event,
            url=url,
            status=status,
            inactive_policy=inactive_policy,
            description=description,
            rate_limit=rate_limit,
            ordering=ordering,
        )
        if auth is not None:
            webhook.auth.CopyFrom(auth)
        if timeout_s is not None:
            webhook.timeout.FromNanoseconds(int(timeout_s * 1e9))
        return self._call(self.stub.CreateWebhook, pb.CreateWebhookRequest(webhook=webhook))  # type: ignore[no-any-return]

    def get_webhook(self, name: str) -> pb.Webhook:
        return self._call(self.stub.GetWebhook, pb.GetWebhookRequest(name=webhook_name(name)))  # type: ignore[no-any-return]

    def update_webhook(self, webhook: pb.Webhook, paths: Sequence[str]) -> pb.Webhook:
        request = pb.UpdateWebhookRequest(webhook=webhook, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        return self._call(self.stub.UpdateWebhook, request)  # type: ignore[no-any-return]

    def set_status(self, name: str, status: pb.Webhook.Status.ValueType) -> pb.Webhook:
        return self.update_webhook(pb.Webhook(name=webhook_name(name), status=status), ["status"])

    def delete_webhook(self, name: str) -> pb.DeleteWebhookResponse:
        return self._call(self.stub.DeleteWebhook, pb.DeleteWebhookRequest(name=webhook_name(name)))  # type: ignore[no-any-return]

    def list_webhooks(
        self,
        *,
        resource: str = "",
        event: str = "",
        status: pb.Webhook.Status.ValueType = pb.Webhook.STATUS_UNSPECIFIED,
        query: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListWebhooksResponse:
        request = pb.ListWebhooksRequest(
            resource=resource, event=event, status=status, query=query, page_size=page_size, page_token=page_token
        )
        return self._call(self.stub.ListWebhooks, request)  # type: ignore[no-any-return]

    def iter_webhooks(self, **filters: Any) -> Iterator[pb.Webhook]:
        """Every matching webhook, following page tokens."""
        token = ""
        while True:
            page = self.list_webhooks(page_token=token, **filters)
            yield from page.webhooks
            token = page.next_page_token
            if not token:
                return

    def list_event_types(self) -> pb.ListEventTypesResponse:
        return self._call(self.stub.ListEventTypes, pb.ListEventTypesRequest())  # type: ignore[no-any-return]

    def test_webhook(self, name: str) -> pb.TestWebhookResponse:
        """Send a signed ping now and wait for its attempt. The server may wait up to two of the
        webhook's timeouts plus a while for a request slot, longer than the default 30 s: the call
        gets a deadline beyond that (``limits.TEST_WEBHOOK_DEADLINE_S``), so it ends with the
        server's answer rather than the client giving up first."""
        request = pb.TestWebhookRequest(name=webhook_name(name))
        return self._call(self.stub.TestWebhook, request, self._deadline(TEST_WEBHOOK_DEADLINE_S))  # type: ignore[no-any-return]

    def rotate_secret(self, name: str, grace_period_s: float | None = None) -> pb.Webhook:
        request = pb.RotateSecretRequest(name=webhook_name(name))
        if grace_period_s is not None:
            request.grace_period.CopyFrom(
                duration_pb2.Duration(seconds=int(grace_period_s), nanos=int((grace_period_s % 1) * 1e9))
            )
        return self._call(self.stub.RotateSecret, request)  # type: ignore[no-any-return]

    # -- events and deliveries ---------------------------------------------------------------------

    def publish_event(
        self,
        resource: str,
        event: str,
        data: dict[str, Any] | None = None,
        related: dict[str, Any] | None = None,
        *,
        idempotency_key: str = "",
    ) -> pb.PublishEventResponse:
        request = pb.PublishEventRequest(event=event_input(resource, event, data, related, idempotency_key))
        return self._call(self.stub.PublishEvent, request)  # type: ignore[no-any-return]

    def publish_events(self, events: Sequence[pb.EventInput]) -> pb.PublishEventsResponse:
        return self._call(self.stub.PublishEvents, pb.PublishEventsRequest(events=list(events)))  # type: ignore[no-any-return]

    def get_event(self, name: str) -> pb.Event:
        name = name if name.startswith("events/") else f"events/{name}"
        return self._call(self.stub.GetEvent, pb.GetEventRequest(name=name))  # type: ignore[no-any-return]

    def list_deliveries(
        self,
        parent: str = "webhooks/-",
        *,
        event: str = "",
        state: pb.Delivery.State.ValueType = pb.Delivery.STATE_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDeliveriesResponse:
        request = pb.ListDeliveriesRequest(
            parent=parent if parent == "webhooks/-" else webhook_name(parent),
            event=event,
            state=state,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self.stub.ListDeliveries, request)  # type: ignore[no-any-return]

    def list_attempts(self, delivery: str, *, page_size: int = 0, page_token: str = "") -> pb.ListAttemptsResponse:
        request = pb.ListAttemptsRequest(parent=delivery, page_size=page_size, page_token=page_token)
        return self._call(self.stub.ListAttempts, request)  # type: ignore[no-any-return]

    def iter_deliveries(self, parent: str = "webhooks/-", **filters: Any) -> Iterator[pb.Delivery]:
        """Every matching delivery, newest first, following page tokens."""
        token = ""
        while True:
            page = self.list_deliveries(parent, page_token=token, **filters)
            yield from page.deliveries
            token = page.next_page_token
            if not token:
                return

    def iter_attempts(self, delivery: str) -> Iterator[pb.Attempt]:
        """Every attempt of one delivery, oldest first, following page tokens."""
        token = ""
        while True:
            page = self.list_attempts(delivery, page_size=1000, page_token=token)
            yield from page.attempts
            token = page.next_page_token
            if not token:
                return

    def get_delivery(self, name: str) -> pb.Delivery:
        """``webhooks/{webhook}/deliveries/{id}``, or ``webhooks/-/deliveries/{id}`` for any webhook."""
        return self._call(self.stub.GetDelivery, pb.GetDeliveryRequest(name=name))  # type: ignore[no-any-return]

    def find_delivery(self, name_or_id: str) -> pb.Delivery:
        """One delivery by ``webhooks/{webhook}/deliveries/{id}`` or by its bare id."""
        name = name_or_id if "/deliveries/" in name_or_id else f"webhooks/-/deliveries/{name_or_id}"
        return self.get_delivery(name)

    def retry_delivery(self, delivery: str) -> pb.Delivery:
        return self._call(self.stub.RetryDelivery, pb.RetryDeliveryRequest(name=delivery))  # type: ignore[no-any-return]

    def recover_deliveries(
        self,
        parent: str = "webhooks/-",
        *,
        start_time: float | None = None,
        end_time: float | None = None,
        states: Sequence[pb.Delivery.State.ValueType] = (),
    ) -> pb.RecoverDeliveriesResponse:
        """Send finished deliveries again (FAILED ones unless ``states`` says otherwise), made
        between ``start_time`` and ``end_time`` (epoch seconds), of one webhook or of all."""
        request = pb.RecoverDeliveriesRequest(
            parent=parent if parent == "webhooks/-" else webhook_name(parent), states=list(states)
        )
        if start_time is not None:
            request.start_time.FromNanoseconds(int(start_time * 1e9))
        if end_time is not None:
            request.end_time.FromNanoseconds(int(end_time * 1e9))
        return self._call(self.stub.RecoverDeliveries, request)  # type: ignore[no-any-return]

    def stream_health(
        self,
        *,
        webhooks: Sequence[str] = (),
        destinations: Sequence[str] = (),
        interval_s: float | None = None,
    ) -> Iterator[pb.HealthSnapshot]:
        """Health snapshots until the iterator is closed; errors arrive as named exceptions."""
        request = pb.StreamHealthRequest(webhooks=[webhook_name(w) for w in webhooks], destinations=list(destinations))
        if interval_s is not None:
            request.interval.FromNanoseconds(int(interval_s * 1e9))
        call = self.stub.StreamHealth(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error(error) from None
        finally:
            call.cancel()  # type: ignore[no-untyped-call]
