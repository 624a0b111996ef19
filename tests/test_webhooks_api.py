"""Webhook CRUD, listing and errors, through the generated client against the real server."""

from __future__ import annotations

from functools import partial

import pytest

from hookd.client import AlreadyExists, HookdClient, InvalidArgument, NotFound
from hookd.engine.errors import InvalidArgument as InvalidArgumentError
from hookd.engine.model import Auth
from hookd.engine.store import rows, webhook_ops
from hookd.engine.store.backend import Backend, open_backend
from hookd.v1 import hookd_pb2 as pb
from tests.support.server import HookdProcess
from tests.support.webhooks import stored_webhook

pytestmark = pytest.mark.backends

URL = "http://127.0.0.1:9/hooks"


def test_create_returns_full_secret_and_defaults(client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", URL, description="orders to ERP")
    assert hook.name.startswith("webhooks/wh_")
    assert hook.signing_secret.startswith("whsec_") and "*" not in hook.signing_secret
    assert hook.status == pb.Webhook.ACTIVE
    assert hook.inactive_policy == pb.Webhook.QUEUE
    assert hook.timeout.ToMilliseconds() == 5000
    assert hook.create_time.ToNanoseconds() > 0 and hook.update_time == hook.create_time


def test_get_masks_secret_and_credentials(client: HookdClient) -> None:
    auth = pb.DestinationAuth(basic=pb.BasicAuth(username="erp", password="hunter2-long-password"))
    created = client.create_webhook("payment", "refunded", URL, auth=auth)
    got = client.get_webhook(created.name)
    assert got.signing_secret != created.signing_secret
    assert got.signing_secret.startswith("whsec_****") and got.signing_secret.endswith(created.signing_secret[-4:])
    assert got.auth.basic.username == "erp"
    assert "hunter2" not in got.auth.basic.password
    listed = client.list_webhooks().webhooks[0]
    assert listed.signing_secret == got.signing_secret
    headers = client.create_webhook(
        "payment", "failed", URL, auth=pb.DestinationAuth(headers=pb.HeaderAuth(headers={"x-api-key": "k" * 40}))
    )
    assert "k" * 10 not in client.get_webhook(headers.name).auth.headers.headers["x-api-key"]


def test_update_with_mask_changes_only_named_fields(client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", URL, description="before")
    change = pb.Webhook(name=hook.name, url="http://127.0.0.1:9/v2", description="ignored", rate_limit=5)
    updated = client.update_webhook(change, ["url", "rate_limit"])
    assert updated.url == "http://127.0.0.1:9/v2"
    assert updated.rate_limit == 5
    assert updated.description == "before"
    assert updated.update_time.ToNanoseconds() > hook.update_time.ToNanoseconds()
    # No mask: every populated field.
    updated = client.update_webhook(pb.Webhook(name=hook.name, description="implied"), [])
    assert updated.description == "implied" and updated.url == "http://127.0.0.1:9/v2"
    updated = client.set_status(hook.name, pb.Webhook.INACTIVE)
    assert updated.status == pb.Webhook.INACTIVE
    assert client.get_webhook(hook.name).status == pb.Webhook.INACTIVE


def test_update_ignores_fields_outside_the_mask(client: HookdClient) -> None:
    """AIP-134: what the mask leaves out is not read, so not checked either."""
    hook = client.create_webhook("order", "created", URL, description="before")
    change = pb.Webhook(
        name=hook.name,
        description="after",
        status=pb.Webhook.Status.ValueType(7),
        rate_limit=float("nan"),
        ordering=pb.Webhook.Ordering.ValueType(9),
    )
    change.timeout.seconds = -3
    change.auth.headers.headers["Host"] = "not-allowed"
    updated = client.update_webhook(change, ["description"])
    assert updated.description == "after" and updated.status == pb.Webhook.ACTIVE
    with pytest.raises(InvalidArgument, match="webhook.status"):
        client.update_webhook(change, ["description", "status"])


def test_update_keeps_what_it_does_not_touch_even_under_newer_rules(hookd: HookdProcess) -> None:
    """A webhook stored before a rule was tightened (here: a header hookd now reserves) can still
    be deactivated or moved; only the fields being changed are checked."""
    client = hookd.client()
    hook = client.create_webhook("order", "created", URL, auth=_header_auth("X-Api-Key", "k"))
    hookd.stop()
    legacy = rows.auth_to_json(Auth(kind="headers", headers={"Proxy-Authorization": "Basic old"}))
    backend = open_backend(hookd.database)
    backend.open(readers=1)
    try:
        backend.write(lambda tx: tx.execute("UPDATE webhooks SET auth = ?", [legacy]))
    finally:
        backend.close()
    client = hookd.start().client()
    assert client.set_status(hook.name, pb.Webhook.INACTIVE).status == pb.Webhook.INACTIVE
    moved = client.update_webhook(pb.Webhook(name=hook.name, url="http://127.0.0.1:9/v2"), ["url"])
    assert moved.url == "http://127.0.0.1:9/v2"
    with pytest.raises(InvalidArgument, match="is set by hookd"):
        client.update_webhook(pb.Webhook(name=hook.name, auth=_header_auth("Proxy-Authorization", "x")), ["auth"])


def test_an_event_type_is_checked_on_the_row_the_update_changes(store: Backend) -> None:
    """Two updates at once, one moving a webhook to payment.completed and one changing only its
    event to 'fulfilled', each pass the engine's check against the webhook as it was (order.*);
    together they make payment.fulfilled, which does not exist. The transaction checks the pair
    it would store."""
    store.write(lambda tx: webhook_ops.insert_webhook(tx, stored_webhook("wh_moved"), limit=10))
    moved = {"resource": "payment", "event": "completed"}
    store.write(partial(webhook_ops.update_webhook, webhook_id="wh_moved", changes=moved, now=2.0, limit=10))
    with pytest.raises(InvalidArgumentError, match="webhook.event"):
        store.write(
            partial(
                webhook_ops.update_webhook, webhook_id="wh_moved", changes={"event": "fulfilled"}, now=3.0, limit=10
            )
        )
    stored = store.read(partial(webhook_ops.find_webhook, webhook_id="wh_moved"))
    assert stored is not None and (stored.resource, stored.event) == ("payment", "completed")


def _header_auth(name: str, value: str) -> pb.DestinationAuth:
    return pb.DestinationAuth(headers=pb.HeaderAuth(headers={name: value}))


def test_update_rejects_unknown_and_output_only_paths(client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", URL)
    for path in ("signing_secret", "create_time", "nonsense"):
        with pytest.raises(InvalidArgument) as error:
            client.update_webhook(pb.Webhook(name=hook.name), [path])
        assert "update_mask" in error.value.details
    with pytest.raises(InvalidArgument, match="webhook.event"):
        client.update_webhook(pb.Webhook(name=hook.name, event="refunded"), ["event"])
    with pytest.raises(NotFound):
        client.update_webhook(pb.Webhook(name="webhooks/wh_missing", description="x"), ["description"])


def test_ordering_is_stored_returned_and_updatable(hookd: HookdProcess, client: HookdClient) -> None:
    plain = client.create_webhook("order", "created", URL)
    assert plain.ordering == pb.Webhook.UNORDERED
    assert plain.disabled_reason == "" and not plain.HasField("disable_time")
    ordered = client.create_webhook("order", "updated", URL, ordering=pb.Webhook.ORDERED)
    assert ordered.ordering == pb.Webhook.ORDERED
    assert client.get_webhook(ordered.name).ordering == pb.Webhook.ORDERED
    changed = client.update_webhook(pb.Webhook(name=plain.name, ordering=pb.Webhook.ORDERED), ["ordering"])
    assert changed.ordering == pb.Webhook.ORDERED
    # Unspecified through a mask: the default again.
    assert client.update_webhook(pb.Webhook(name=plain.name), ["ordering"]).ordering == pb.Webhook.UNORDERED
    with pytest.raises(InvalidArgument, match="webhook.ordering"):
        client.create_webhook("order", "fulfilled", URL, ordering=7)  # type: ignore[arg-type]
    for path in ("disabled_reason", "disable_time"):  # output only
        with pytest.raises(InvalidArgument, match="update_mask"):
            client.update_webhook(pb.Webhook(name=plain.name), [path])
    hookd.restart()
    again = hookd.client()
    assert {hook.name: hook.ordering for hook in again.list_webhooks().webhooks} == {
        plain.name: pb.Webhook.UNORDERED,
        ordered.name: pb.Webhook.ORDERED,
    }


def test_operational_events_are_subscribed_to_never_published(client: HookdClient) -> None:
    hook = client.create_webhook("webhook", "disabled", URL)
    assert hook.resource == "webhook" and hook.event == "disabled"
    with pytest.raises(InvalidArgument, match="event.resource: webhook events are published by hookd itself"):
        client.publish_event("webhook", "disabled", data={"name": "webhooks/wh_fake"})


def test_delete_removes_at_once(client: HookdClient) -> None:
    hook = client.create_webhook("customer", "deleted", URL)
    assert client.delete_webhook(hook.name).cancelled_deliveries == 0
    with pytest.raises(NotFound):
        client.get_webhook(hook.name)
    with pytest.raises(NotFound):
        client.delete_webhook(hook.name)
    assert client.list_webhooks().total_size == 0


def test_identical_webhook_is_already_exists(client: HookdClient) -> None:
    client.create_webhook("order", "created", URL)
    with pytest.raises(AlreadyExists):
        client.create_webhook("order", "created", URL)
    other = client.create_webhook("order", "updated", URL)
    with pytest.raises(AlreadyExists):
        client.update_webhook(pb.Webhook(name=other.name, event="created"), ["event"])


@pytest.mark.parametrize(
    ("resource", "event", "url", "field", "hint"),
    [
        ("invoice", "created", URL, "webhook.resource", "order, product, customer, payment, shipping"),
        ("order", "exploded", URL, "webhook.event", "created, updated, fulfilled, cancelled"),
        ("order", "created", "", "webhook.url", "required"),
        ("order", "created", "ftp://127.0.0.1/x", "webhook.url", "http or https"),
        ("order", "created", "/relative", "webhook.url", "http or https"),
        ("order", "created", "http://127.0.0.1/" + "a" * 2050, "webhook.url", "2048"),
        ("order", "created", "http://user:pw@127.0.0.1/x", "webhook.url", "credentials"),
    ],
)
def test_bad_webhooks_name_the_field(
    client: HookdClient, resource: str, event: str, url: str, field: str, hint: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        client.create_webhook(resource, event, url)
    assert error.value.details.startswith(field)
    assert hint in error.value.details


def test_bad_scalars_name_the_field(client: HookdClient) -> None:
    with pytest.raises(InvalidArgument, match="webhook.timeout"):
        client.create_webhook("order", "created", URL, timeout_s=60)
    with pytest.raises(InvalidArgument, match="webhook.rate_limit"):
        client.create_webhook("order", "created", URL, rate_limit=-1)
    with pytest.raises(InvalidArgument, match="webhook.description"):
        client.create_webhook("order", "created", URL, description="x" * 501)
    with pytest.raises(InvalidArgument, match=r"webhook.auth.bearer.token"):
        client.create_webhook("order", "created", URL, auth=pb.DestinationAuth(bearer=pb.BearerAuth()))
    with pytest.raises(InvalidArgument, match="webhook-signature"):
        client.create_webhook(
            "order",
            "created",
            URL,
            auth=pb.DestinationAuth(headers=pb.HeaderAuth(headers={"webhook-signature": "forged"})),
        )
    with pytest.raises(InvalidArgument, match="name"):
        client.get_webhook("webhooks/../etc")


#: Headers that frame or route the request, and Standard Webhooks' namespace: hookd's alone.
RESERVED_HEADERS = [
    "Expect",
    "TE",
    "Upgrade",
    "Trailer",
    "Proxy-Authorization",
    "Proxy-Connection",
    "Proxy-Status",
    "Keep-Alive",
    "Content-Encoding",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Host",
    "webhook-version",
    "Webhook-Anything",
]


def test_custom_headers_may_not_set_framing_or_webhook_headers(client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", URL)
    for name in RESERVED_HEADERS:
        auth = pb.DestinationAuth(headers=pb.HeaderAuth(headers={"X-Ok": "1", name: "100-continue"}))
        with pytest.raises(InvalidArgument) as created:
            client.create_webhook("order", "created", f"{URL}/{name}", auth=auth)
        assert created.value.details.startswith("webhook.auth.headers.headers: "), name
        assert repr(name) in created.value.details, created.value.details
        with pytest.raises(InvalidArgument, match="webhook.auth.headers.headers"):
            client.update_webhook(pb.Webhook(name=hook.name, auth=auth), ["auth"])
    allowed = {"Authorization": "Token abc", "X-Api-Key": "k", "Webhooks-Team": "ops"}
    saved = client.create_webhook(
        "order", "created", URL + "/allowed", auth=pb.DestinationAuth(headers=pb.HeaderAuth(headers=allowed))
    )
    assert set(saved.auth.headers.headers) == set(allowed)


def test_list_event_types_is_the_catalogue(client: HookdClient) -> None:
    types = {t.type for t in client.list_event_types().event_types}
    assert len(types) == 18
    assert {"order.created", "product.inventory_updated", "payment.refunded", "shipping.tracking_updated"} <= types
    assert "webhook.disabled" in types  # hookd's own operational event, for ops systems to subscribe to


def test_list_filters_and_search(client: HookdClient) -> None:
    a = client.create_webhook("order", "created", "http://127.0.0.1:9/erp")
    b = client.create_webhook("order", "cancelled", "http://127.0.0.1:9/crm")
    c = client.create_webhook("payment", "refunded", "http://127.0.0.1:9/erp-payments")
    client.set_status(c.name, pb.Webhook.INACTIVE)

    def names(**filters: object) -> list[str]:
        return [w.name for w in client.list_webhooks(**filters).webhooks]  # type: ignore[arg-type]

    assert names() == [a.name, b.name, c.name]
    assert names(resource="order") == [a.name, b.name]
    assert names(event="refunded") == [c.name]
    assert names(status=pb.Webhook.INACTIVE) == [c.name]
    assert names(status=pb.Webhook.ACTIVE, resource="order", event="cancelled") == [b.name]
    assert names(query="ERP") == [a.name, c.name]
    assert names(query="cancel") == [b.name]
    assert names(query="payment") == [c.name]
    assert names(query="%") == []
    assert client.list_webhooks(query="erp").total_size == 2
    # Filters name catalogue entries: a typo (or a NUL, which PostgreSQL cannot even compare) is
    # an error that lists the choices, not an empty page.
    for field, value in (("resource", "orders"), ("resource", "order\x00"), ("event", "creatd")):
        with pytest.raises(InvalidArgument, match=f"^INVALID_ARGUMENT: {field}: unknown"):
            names(**{field: value})
    with pytest.raises(InvalidArgument, match="event: unknown event 'refunded' for resource 'order'"):
        names(resource="order", event="refunded")


def test_paging_is_stable_under_concurrent_inserts(client: HookdClient) -> None:
    created = [client.create_webhook("product", "updated", f"http://127.0.0.1:9/p{i}").name for i in range(7)]
    page = client.list_webhooks(page_size=3)
    seen = [w.name for w in page.webhooks]
    client.create_webhook("product", "updated", "http://127.0.0.1:9/late")
    while page.next_page_token:
        page = client.list_webhooks(page_size=3, page_token=page.next_page_token)
        seen.extend(w.name for w in page.webhooks)
    assert seen[:7] == created
    assert len(seen) == len(set(seen)) == 8
    first = client.list_webhooks(page_size=3)
    with pytest.raises(InvalidArgument, match="page_token"):
        client.list_webhooks(page_size=3, resource="order", page_token=first.next_page_token)
    with pytest.raises(InvalidArgument, match="page_token"):
        client.list_webhooks(page_token="garbage!")
    with pytest.raises(InvalidArgument, match="page_size"):
        client.list_webhooks(page_size=-1)


def test_everything_survives_a_restart(hookd: HookdProcess) -> None:
    client = hookd.client()
    hook = client.create_webhook("shipping", "delivered", URL, description="keep me", rate_limit=3)
    client.set_status(hook.name, pb.Webhook.INACTIVE)
    before = client.get_webhook(hook.name)
    hookd.restart()
    after = hookd.client().get_webhook(hook.name)
    assert after == before


def test_paging_never_reuses_a_position(client: HookdClient) -> None:
    a = client.create_webhook("order", "created", "http://127.0.0.1:9/a")
    b = client.create_webhook("order", "created", "http://127.0.0.1:9/b")
    c = client.create_webhook("order", "created", "http://127.0.0.1:9/c")
    first = client.list_webhooks(page_size=2)
    assert [w.name for w in first.webhooks] == [a.name, b.name]
    client.delete_webhook(b.name)
    client.delete_webhook(c.name)
    d = client.create_webhook("order", "created", "http://127.0.0.1:9/d")
    rest = client.list_webhooks(page_size=2, page_token=first.next_page_token)
    assert [w.name for w in rest.webhooks] == [d.name]


def test_masked_and_malformed_credentials_are_refused(client: HookdClient) -> None:
    auth = pb.DestinationAuth(bearer=pb.BearerAuth(token="a-real-token-value"))
    hook = client.create_webhook("order", "created", URL, auth=auth)
    echoed = client.get_webhook(hook.name)  # credentials come back masked
    with pytest.raises(InvalidArgument, match="masked"):
        client.update_webhook(echoed, ["*"])
    with pytest.raises(InvalidArgument, match="whitespace"):
        client.create_webhook("order", "updated", URL, auth=pb.DestinationAuth(bearer=pb.BearerAuth(token="token ")))
    with pytest.raises(InvalidArgument, match="webhook.rate_limit"):
        client.create_webhook("order", "updated", URL, rate_limit=0.001)
    updated = client.update_webhook(pb.Webhook(name=hook.name, description="kept auth"), ["description"])
    assert updated.auth.bearer.token == echoed.auth.bearer.token
