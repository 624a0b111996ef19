"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real hookd
and real receivers: what an operator does in "Settings -> Webhooks", click by click.

One browser per module, a fresh page per test; each test saves a screenshot of its page under
its tmp dir. Chromium missing is a failure, never a skip: `make test` installs it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import APIResponse, Browser, Locator, Page, Route, expect, sync_playwright
from standardwebhooks import Webhook as Verifier

from hookd.client import HookdClient
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Received, Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

CHROMIUM = os.environ.get("HOOKD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-token-7f3a"
#: The en dash of the page's ranges ("1{DASH}20 of 21") and of a figure it does not have.
DASH = "\u2013"
#: Counts, by method, the API answers the page has read: in a task queued as a read ends, so by
#: the time it counts, the page has handled the answer and rendered it (Preact renders in
#: microtasks). The way to know that an answer the page should ignore has come and gone.
COUNT_READS = """
window.answersRead = {};
const read = Response.prototype.json;
Response.prototype.json = async function () {
  const method = new URL(this.url).pathname.split("/").pop();
  try {
    return await read.call(this);
  } finally {
    setTimeout(() => { window.answersRead[method] = (window.answersRead[method] || 0) + 1; });
  }
};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def hookd(tmp_path: Path) -> Iterator[HookdProcess]:
    server = HookdProcess(
        tmp_path, "--http-listen", "127.0.0.1:0", "--retry-base", "0.05", "--retry-cap", "0.2", "--max-attempts", "2"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def client(hookd: HookdProcess) -> HookdClient:
    return hookd.client()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh page; its screenshot is saved when the test ends, and any script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # expect() keeps its own 5 s default otherwise: too short on a loaded machine for what
    # follows a stream's tick or the deliveries' 2 s follow-up read.
    expect.set_options(timeout=15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def row(page: Page, url: str) -> Locator:
    return page.locator("tbody tr", has=page.get_by_text(url, exact=True))


def field_error(page: Page, control: Locator) -> Locator:
    """The error shown under a form control."""
    return page.locator(".field", has=control).locator(".field-error")


def menu_button(page: Page, url: str) -> Locator:
    return row(page, url).get_by_role("button", name=re.compile("^Actions for"))


def open_menu(page: Page, url: str, item: str) -> None:
    menu_button(page, url).click()
    page.get_by_role("menuitem", name=item).click()


def pump_until(page: Page, predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Wait for something the test's route handlers record: they run only while Playwright
    is called, so this keeps calling it (a short wait each time) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(20)


def reads(page: Page, method: str) -> int:
    """How many answers of ``method`` the page has read (needs COUNT_READS)."""
    return int(page.evaluate("(method) => window.answersRead[method] || 0", method))


def wait_for_reads(page: Page, method: str, count: int, timeout_ms: int = 15_000) -> None:
    """Until the page has read ``count`` answers of ``method`` (needs COUNT_READS). Polled in the
    page by a promise: wait_for_function's string would be an eval, which the page's CSP refuses."""
    page.evaluate(
        """([method, count, timeout]) => new Promise((resolve, reject) => {
            const deadline = Date.now() + timeout;
            const check = () => {
                if ((window.answersRead[method] || 0) >= count) resolve();
                else if (Date.now() > deadline) reject(new Error(`${method}: fewer than ${count} answers read`));
                else setTimeout(check, 20);
            };
            check();
        })""",
        [method, count, timeout_ms],
    )


def release_and_wait(page: Page, method: str, release: Callable[[], None]) -> None:
    """Let a held answer of ``method`` through, then wait until the page has read it."""
    before = reads(page, method)
    release()
    wait_for_reads(page, method, before + 1)


def stream_body(*messages: object) -> bytes:
    """A Connect server stream's body: each message enveloped, then the end of the stream."""
    frames = [(0, json.dumps(message).encode()) for message in messages] + [(2, b"{}")]
    return b"".join(struct.pack(">BI", flags, len(data)) + data for flags, data in frames)


def gated(gate: threading.Event, reply: Reply | None = None) -> Callable[[Received, int], Reply]:
    """A receiver's behaviour: each request waits for ``gate``, then gets ``reply`` (200)."""

    def behaviour(request: Received, count: int) -> Reply:
        gate.wait(30)
        return reply or Reply()

    return behaviour


def test_create_through_the_form_shows_a_green_row(hookd: HookdProcess, page: Page, receiver: Receiver) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(hookd.http_url)
    page.get_by_role("link", name="Create Webhook").click()
    page.get_by_label("Resource").select_option("payment")
    # The events follow the resource, from ListEventTypes.
    expect(page.get_by_label("Event").locator("option")).to_have_text(["completed", "failed", "refunded"])
    page.get_by_label("Event").select_option("refunded")
    page.get_by_label("Destination URL").fill("ftp://nowhere")
    page.get_by_role("button", name="Save").click()
    # The server's error, next to the field it names.
    expect(field_error(page, page.get_by_label("Destination URL"))).to_contain_text("http")
    page.get_by_label("Destination URL").fill(receiver.url())
    page.get_by_label("Authentication").select_option("bearer")
    page.get_by_label("Token").fill("erp-token")
    page.get_by_role("button", name="Save").click()
    secret = page.get_by_label("Signing secret", exact=True)
    expect(secret).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/=]{40,}$"))
    page.get_by_role("link", name="Done").click()

    created = row(page, receiver.url())
    expect(created).to_contain_text("payment")
    expect(created.locator(".status-active")).to_have_text("Active")
    dot = created.locator(".status-active .dot")
    assert dot.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(22, 163, 74)"
    [hook] = hookd.client().list_webhooks().webhooks
    assert (hook.resource, hook.event, hook.url) == ("payment", "refunded", receiver.url())
    assert hook.auth.bearer.token == "****"
    # Every request the page made went to hookd itself.
    assert requests and all(url.startswith(hookd.http_url + "/") for url in requests)


def test_search_narrows_the_rows(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/erp/orders")
    client.create_webhook("payment", "failed", "http://127.0.0.1:9/billing")
    client.create_webhook("shipping", "delivered", "http://127.0.0.1:9/erp/parcels")
    page.goto(hookd.http_url)
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Search").fill("erp")
    expect(rows).to_have_count(2)
    page.get_by_label("Search").fill("delivered")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("http://127.0.0.1:9/erp/parcels")
    page.get_by_label("Search").fill("")
    page.get_by_label("Resource").select_option("payment")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("billing")


def test_edit_changes_the_url(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    auth = pb.DestinationAuth(bearer=pb.BearerAuth(token="keep-me"))
    hook = client.create_webhook("order", "created", "http://127.0.0.1:9/old", auth=auth)
    page.goto(hookd.http_url)
    open_menu(page, "http://127.0.0.1:9/old", "Edit")
    expect(page.get_by_label("Destination URL")).to_have_value("http://127.0.0.1:9/old")
    page.get_by_label("Destination URL").fill("http://127.0.0.1:9/new")
    page.get_by_role("button", name="Save").click()
    expect(row(page, "http://127.0.0.1:9/new")).to_have_count(1)
    expect(row(page, "http://127.0.0.1:9/old")).to_have_count(0)
    saved = client.get_webhook(hook.name)
    assert saved.url == "http://127.0.0.1:9/new"
    # The masked credential was not written back over the real one.
    assert saved.auth.bearer.token == "****"
    assert "keep-me" not in hookd.log()


def test_deactivate_turns_the_dot_gray(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    hook = client.create_webhook("customer", "updated", "http://127.0.0.1:9/crm")
    page.goto(hookd.http_url)
    status = row(page, "http://127.0.0.1:9/crm").locator("td[data-label=Status]")
    expect(status).to_have_text("Active")
    open_menu(page, "http://127.0.0.1:9/crm", "Deactivate")
    expect(status.locator(".status-inactive")).to_have_text("Inactive")
    assert status.locator(".dot").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(154, 163, 175)"
    assert client.get_webhook(hook.name).status == pb.Webhook.INACTIVE
    open_menu(page, "http://127.0.0.1:9/crm", "Activate")
    expect(status.locator(".status-active")).to_have_text("Active")


def test_test_connection_shows_the_receivers_answer(hookd: HookdProcess, page: Page) -> None:
    answering = Receiver(always(Reply(status=201, body=b'{"pong": "erp-7"}')))
    try:
        page.goto(hookd.http_url + "/#/webhooks/new")
        page.get_by_label("Destination URL").fill(answering.url())
        page.get_by_role("button", name="Test connection").click()
        result = page.locator(".trial")
        expect(result).to_contain_text("HTTP 201")
        expect(result).to_contain_text('{"pong": "erp-7"}')
        expect(result).to_contain_text("success")
        [ping] = answering.received()
        assert ping.json()["type"] == "webhook.ping" and ping.headers["webhook-signature"].startswith("v1,")
        # Tried before saving: nothing was created.
        assert hookd.client().list_webhooks().total_size == 0
    finally:
        answering.close()


def test_failed_delivery_shows_its_attempts_and_retry_sends_again(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    # Each answer takes a moment, so the list read right after Retry still shows the delivery
    # pending: the page has to follow it to its outcome.
    failing = Receiver(always(Reply(status=500, body=b"database is down", delay=0.3)))
    try:
        hook = client.create_webhook("order", "cancelled", failing.url())
        client.publish_event("order", "cancelled", data={"id": 42})
        wait_until(lambda: client.list_deliveries(hook.name).deliveries[0].state == pb.Delivery.FAILED)
        assert len(failing.received()) == 2
        page.goto(hookd.http_url)
        open_menu(page, failing.url(), "Deliveries")
        delivery = page.locator(".delivery")
        expect(delivery).to_contain_text("failed")
        expect(delivery).to_contain_text("2 attempts")
        delivery.get_by_role("button", name=re.compile("^Delivery")).click()
        attempts = delivery.locator(".attempts li")
        expect(attempts).to_have_count(2)
        expect(attempts.first).to_contain_text("HTTP 500")
        expect(attempts.first).to_contain_text("database is down")
        expect(attempts.first).to_contain_text("server error")
        delivery.get_by_role("button", name=re.compile("^Retry")).click()
        failing.wait_for(3)
        expect(delivery).to_contain_text("3 attempts")
        expect(delivery.locator(".attempts li")).to_have_count(3)
    finally:
        failing.close()


def test_delete_asks_then_removes_the_row_and_stops_sending(
    hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver
) -> None:
    client.create_webhook("product", "updated", receiver.url())
    client.create_webhook("product", "deleted", "http://127.0.0.1:9/other")
    page.goto(hookd.http_url)
    open_menu(page, receiver.url(), "Delete")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"product.updated → {receiver.url()}")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row(page, receiver.url())).to_have_count(1)
    open_menu(page, receiver.url(), "Delete")
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row(page, receiver.url())).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(1)
    assert client.publish_event("product", "updated", data={"id": 1}).delivery_count == 0
    assert receiver.received() == []


def test_health_page_changes_live(hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver) -> None:
    client.create_webhook("order", "created", receiver.url())
    page.goto(hookd.http_url + "/#/health")
    attempts = page.locator("[data-figure=attempts]")
    expect(attempts).to_have_text("0 of 0 attempts")
    for number in range(3):
        client.publish_event("order", "created", data={"id": number})
    receiver.wait_for(3)
    # The same page, not reloaded: the stream brought the figures.
    expect(attempts).to_have_text("3 of 3 attempts")
    expect(page.locator("[data-figure=success-rate] .figure-value")).to_have_text("100%")
    expect(page.locator(".chart path.line-rate, .chart circle.line-rate")).to_have_count(1)
    expect(page.locator("tr", has=page.get_by_text(receiver.url(), exact=True))).to_contain_text("100%")


def test_webhooks_table_shows_last_delivery_and_day_rate(
    hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver
) -> None:
    client.create_webhook("order", "fulfilled", receiver.url())
    client.publish_event("order", "fulfilled", data={"id": 7})
    receiver.wait_for(1)
    page.goto(hookd.http_url)
    hook_row = row(page, receiver.url())
    expect(hook_row.locator("td[data-label='Last delivery']")).to_contain_text("Succeeded")
    expect(hook_row.locator("td[data-label='Success (24 h)']")).to_have_text("100%")


def test_rotate_secret_shows_the_new_secret_once(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", "http://127.0.0.1:9/r")
    page.goto(hookd.http_url)
    open_menu(page, "http://127.0.0.1:9/r", "Rotate secret")
    page.get_by_role("dialog").get_by_role("button", name="Rotate secret").click()
    secret = page.get_by_label("Signing secret", exact=True)
    expect(secret).to_have_value(re.compile("^whsec_"))
    assert secret.input_value() != hook.signing_secret
    assert client.get_webhook(hook.name).HasField("previous_secret_expire_time")


def test_narrow_screen_and_keyboard(browser: Browser, hookd: HookdProcess, client: HookdClient, tmp_path: Path) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/a-rather-long-path/for/a/phone/screen")
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    try:
        page.goto(hookd.http_url)
        expect(page.get_by_role("link", name="Create Webhook")).to_be_visible()
        expect(page.locator("tbody tr")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # Keyboard only: focus the row's menu, open it, walk it, close it.
        menu_button = page.get_by_role("button", name=re.compile("^Actions for"))
        menu_button.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("menuitem", name="Edit")).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(page.get_by_role("menuitem", name="Deliveries")).to_be_focused()
        page.keyboard.press("Escape")
        expect(page.get_by_role("menu")).to_have_count(0)
        expect(menu_button).to_be_focused()
        page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
    finally:
        context.close()


def test_a_wrong_token_is_refused(browser: Browser, tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--http-listen", "127.0.0.1:0", "--auth-token", TOKEN).start()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        server.client(token=TOKEN).create_webhook("order", "created", "http://127.0.0.1:9/guarded")
        page.goto(server.http_url)
        page.get_by_label("Access token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("That token was not accepted")
        page.screenshot(path=str(tmp_path / "refused.png"))
        page.get_by_label("Access token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(row(page, "http://127.0.0.1:9/guarded")).to_have_count(1)
        assert page.evaluate("sessionStorage.getItem('hookd.token')") == TOKEN
        assert TOKEN not in page.url
        page.screenshot(path=str(tmp_path / "signed-in.png"))
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Access token")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('hookd.token')") is None
        assert TOKEN not in server.log()
    finally:
        context.close()
        server.stop()


# Editing a login


def test_a_changed_login_needs_its_secret_typed_again(hookd: HookdProcess, page: Page, receiver: Receiver) -> None:
    client = hookd.client()
    basic = pb.DestinationAuth(basic=pb.BasicAuth(username="erp", password="s3cret-pass"))
    hook = client.create_webhook("order", "created", receiver.url(), auth=basic)
    page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/edit")
    expect(page.get_by_label("Username")).to_have_value("erp")
    page.get_by_label("Username").fill("erp-2")
    page.get_by_role("button", name="Save").click()
    password = page.get_by_label("Password")
    expect(field_error(page, password)).to_have_text("Enter the password again to change the login.")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_attribute("aria-describedby", "auth-password-error")
    # Nothing was sent: the saved login still signs in.
    client.publish_event("order", "created", data={"id": 1})
    [first] = receiver.wait_for(1)
    assert first.headers["authorization"] == "Basic ZXJwOnMzY3JldC1wYXNz"  # erp:s3cret-pass
    password.fill("n3w-pass")
    page.get_by_role("button", name="Save").click()
    expect(row(page, receiver.url())).to_have_count(1)
    client.publish_event("order", "created", data={"id": 2})
    assert receiver.wait_for(2)[1].headers["authorization"] == "Basic ZXJwLTI6bjN3LXBhc3M="  # erp-2:n3w-pass

    header = pb.DestinationAuth(headers=pb.HeaderAuth(headers={"X-Api-Key": "k3y-k3y-k3y-k3y"}))
    keyed = client.create_webhook("order", "updated", "http://127.0.0.1:9/keyed", auth=header)
    page.goto(hookd.http_url + f"/#/webhooks/{keyed.name.split('/')[1]}/edit")
    expect(page.get_by_label("Header name")).to_have_value("X-Api-Key")
    page.get_by_label("Header name").fill("X-Key")
    page.get_by_role("button", name="Test connection").click()
    value = page.get_by_label("Header value")
    expect(field_error(page, value)).to_have_text("Enter the header value again to change the login.")
    expect(value).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Header name").fill("X-Api-Key")
    # The login as it was: saved without it, so nothing to type again.
    page.get_by_label("Description").fill("ERP keyed")
    page.get_by_role("button", name="Save").click()
    expect(row(page, "http://127.0.0.1:9/keyed")).to_contain_text("ERP keyed")
    # Still the saved value (its masked tail), not an empty one.
    assert dict(client.get_webhook(keyed.name).auth.headers.headers) == {"X-Api-Key": "****-k3y"}


def test_several_custom_headers_are_left_as_they_are(hookd: HookdProcess, page: Page, receiver: Receiver) -> None:
    client = hookd.client()
    headers = {"X-Api-Key": "k3y-k3y-k3y-k3y", "X-Tenant": "acme-north-1"}
    hook = client.create_webhook(
        "order", "created", receiver.url(), auth=pb.DestinationAuth(headers=pb.HeaderAuth(headers=headers))
    )
    page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/edit")
    kind = page.get_by_label("Authentication")
    expect(kind).to_be_disabled()
    expect(page.locator("#auth-several")).to_contain_text("Sends 2 custom headers (X-Api-Key, X-Tenant)")
    expect(page.get_by_label("Header value")).to_have_count(0)
    page.get_by_label("Description").fill("two headers")
    page.get_by_role("button", name="Save").click()
    expect(row(page, receiver.url())).to_contain_text("two headers")
    client.publish_event("order", "created", data={"id": 1})
    [sent] = receiver.wait_for(1)
    assert (sent.headers["x-api-key"], sent.headers["x-tenant"]) == ("k3y-k3y-k3y-k3y", "acme-north-1")


# The webhooks list


def test_last_delivery_comes_back_after_the_stream_drops(
    hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver
) -> None:
    client.create_webhook("order", "created", receiver.url())
    client.publish_event("order", "created", data={"id": 1})
    receiver.wait_for(1)
    streams: list[str] = []

    def drop_the_first(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/StreamHealth", drop_the_first)
    page.goto(hookd.http_url)
    expect(row(page, receiver.url()).locator("td[data-label='Last delivery']")).to_contain_text("Succeeded")
    assert len(streams) >= 2


def test_a_webhook_deleted_elsewhere_leaves_the_list(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    gone = client.create_webhook("order", "created", "http://127.0.0.1:9/gone")
    client.create_webhook("order", "created", "http://127.0.0.1:9/stays")
    page.goto(hookd.http_url)
    expect(page.locator("tbody tr")).to_have_count(2)
    client.delete_webhook(gone.name)
    # StreamHealth ends NOT_FOUND on its next snapshot, and the page reads the list again.
    expect(row(page, "http://127.0.0.1:9/gone")).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(1)


def test_the_later_of_two_times_wins_not_the_later_string(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    hook = client.create_webhook("order", "created", "http://127.0.0.1:9/times")
    # A zero fraction is left out, so as strings "...00Z" sorts after "...00.250Z".
    stats = {
        "key": hook.name,
        "lastSuccessTime": "2024-05-01T10:00:00Z",
        "lastFailureTime": "2024-05-01T10:00:00.250Z",
        "lastError": "HTTP 503",
    }
    snapshot = stream_body({"time": "2024-05-01T10:00:01Z", "webhooks": [stats]})
    page.route("**/StreamHealth", lambda route: route.fulfill(body=snapshot, content_type="application/connect+json"))
    page.goto(hookd.http_url)
    cell = row(page, "http://127.0.0.1:9/times").locator("td[data-label='Last delivery']")
    expect(cell).to_contain_text("Failed")
    expect(cell.locator(".outcome-failed")).to_have_attribute("title", "HTTP 503")


def test_two_actions_that_end_together_both_show(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/a")
    client.create_webhook("order", "created", "http://127.0.0.1:9/b")
    page.goto(hookd.http_url)
    status_a = row(page, "http://127.0.0.1:9/a").locator("td[data-label=Status]")
    status_b = row(page, "http://127.0.0.1:9/b").locator("td[data-label=Status]")
    expect(status_b).to_have_text("Active")
    held: list[Route] = []
    page.route("**/UpdateWebhook", lambda route: held.append(route))
    open_menu(page, "http://127.0.0.1:9/a", "Deactivate")
    open_menu(page, "http://127.0.0.1:9/b", "Deactivate")
    pump_until(page, lambda: len(held) == 2)
    held[0].continue_()
    expect(status_a).to_have_text("Inactive")
    expect(status_b).to_have_text("Active")
    held[1].continue_()
    expect(status_b).to_have_text("Inactive")


def test_rotate_secret_twice_clicked_rotates_once(
    hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver
) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    page.goto(hookd.http_url)
    held: list[Route] = []
    page.route("**/RotateSecret", lambda route: held.append(route))
    open_menu(page, receiver.url(), "Rotate secret")
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Rotate secret").dblclick()
    expect(dialog.get_by_role("button", name="Rotating…")).to_be_disabled()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_disabled()
    # While the call runs, Escape does not close the dialog its answer goes to, not even the
    # second one, which the browser lets through whatever the page says.
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    pump_until(page, lambda: len(held) == 1)
    expect(dialog).to_be_visible()
    expect(dialog).to_have_js_property("open", True)
    held[0].continue_()
    expect(page.get_by_label("Signing secret", exact=True)).to_have_value(re.compile("^whsec_"))
    assert len(held) == 1
    # One rotation: the original secret still signs beside the new one.
    client.publish_event("order", "created", data={"id": 1})
    [sent] = receiver.wait_for(1)
    Verifier(hook.signing_secret).verify(sent.body, sent.headers)


def test_delete_waits_for_its_answer_and_counts_one_delivery(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    gate = threading.Event()
    slow = Receiver(gated(gate))
    try:
        client.create_webhook("order", "created", slow.url(), timeout_s=30)
        client.publish_event("order", "created", data={"id": 1})
        slow.wait_for(1)
        page.goto(hookd.http_url)
        held: list[Route] = []
        page.route("**/DeleteWebhook", lambda route: held.append(route))
        open_menu(page, slow.url(), "Delete")
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Delete").click()
        expect(dialog.get_by_role("button", name="Deleting…")).to_be_disabled()
        page.keyboard.press("Escape")
        pump_until(page, lambda: len(held) == 1)
        expect(dialog).to_be_visible()
        held[0].continue_()
        expect(dialog).to_have_count(0)
        expect(page.locator(".notice")).to_have_text(
            f"Deleted order.created → {slow.url()}; 1 waiting delivery cancelled."
        )
        expect(row(page, slow.url())).to_have_count(0)
    finally:
        gate.set()
        slow.close()


def test_deleting_the_last_row_of_the_last_page_shows_the_page_before(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    for number in range(21):
        client.create_webhook("order", "created", f"http://127.0.0.1:9/h{number:02}")
    page.goto(hookd.http_url)
    pager = page.locator(".pager .muted")
    expect(pager).to_have_text(f"1{DASH}20 of 21")
    page.get_by_role("button", name="Next").click()
    expect(pager).to_have_text(f"21{DASH}21 of 21")
    open_menu(page, "http://127.0.0.1:9/h20", "Delete")
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(pager).to_have_text(f"1{DASH}20 of 20")
    expect(page.locator("tbody tr")).to_have_count(20)
    expect(page.locator(".empty")).to_have_count(0)
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()


def test_focus_returns_to_the_row_menu_and_a_menu_left_closes(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/focus")
    page.goto(hookd.http_url)
    button = menu_button(page, "http://127.0.0.1:9/focus")
    # An action without a dialog: Deactivate, by keyboard.
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Edit")).to_be_focused()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Deactivate")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row(page, "http://127.0.0.1:9/focus").locator(".status-inactive")).to_have_text("Inactive")
    expect(button).to_be_focused()
    # A dialog closed with Escape.
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Edit")).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(page.get_by_role("menuitem", name="Delete")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(button).to_be_focused()
    # A dialog closed with its Cancel button.
    open_menu(page, "http://127.0.0.1:9/focus", "Rotate secret")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(button).to_be_focused()
    # The focus going elsewhere closes the menu.
    button.click()
    expect(page.get_by_role("menuitem", name="Edit")).to_be_focused()
    page.get_by_label("Search").focus()
    expect(page.get_by_role("menu")).to_have_count(0)


def test_a_late_test_answer_leaves_another_dialog_alone(hookd: HookdProcess, page: Page, client: HookdClient) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/late")
    page.add_init_script(COUNT_READS)
    page.goto(hookd.http_url)
    held: list[Route] = []
    page.route("**/TestWebhook", lambda route: held.append(route))
    open_menu(page, "http://127.0.0.1:9/late", "Test")
    expect(page.get_by_role("dialog")).to_contain_text("Sending a signed ping")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    open_menu(page, "http://127.0.0.1:9/late", "Rotate secret")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("Rotate the signing secret?")
    pump_until(page, lambda: len(held) == 1)
    release_and_wait(page, "TestWebhook", held[0].continue_)
    expect(dialog.get_by_role("heading")).to_have_text("Rotate the signing secret?")
    expect(dialog.get_by_role("button", name="Rotate secret")).to_be_enabled()


def test_success_rate_shows_100_only_without_a_failure(hookd: HookdProcess, page: Page) -> None:
    page.goto(hookd.http_url)
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    shown = page.evaluate("""async () => {
        const { formatRate } = await import("/static/js/ui.js");
        const cases = [[9997, 10000], ["9997", "10000"], [10000, 10000], [0, 3], [1, 3], [2, 3], [1, 100000], [0, 0]];
        return cases.map(([successes, attempts]) => formatRate(successes, attempts));
    }""")
    assert shown == ["99.9%", "99.9%", "100%", "0%", "33.3%", "66.6%", "<0.1%", DASH]


# The deliveries page


def test_deliveries_page_through_and_say_when_a_filter_matches_nothing(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    hook = client.create_webhook("order", "created", "http://127.0.0.1:9/paged", status=pb.Webhook.INACTIVE)
    for number in range(30):
        client.publish_event("order", "created", data={"id": number})
    page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/deliveries")
    deliveries = page.locator(".delivery")
    pager = page.locator(".pager .muted")
    expect(deliveries).to_have_count(25)
    expect(pager).to_have_text(f"1{DASH}25")
    page.get_by_role("button", name="Next").click()
    expect(deliveries).to_have_count(5)
    expect(pager).to_have_text(f"26{DASH}30")
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(deliveries).to_have_count(25)
    page.get_by_label("State").select_option("FAILED")
    expect(page.locator(".empty")).to_have_text("No delivery matches.")
    expect(deliveries).to_have_count(0)
    page.get_by_label("State").select_option("HELD")
    expect(deliveries).to_have_count(25)
    expect(pager).to_have_text(f"1{DASH}25")


def test_an_older_list_answer_does_not_replace_a_newer_one(
    hookd: HookdProcess, page: Page, client: HookdClient, receiver: Receiver
) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    client.publish_event("order", "created", data={"id": 1})
    receiver.wait_for(1)
    wait_until(lambda: client.list_deliveries(hook.name).deliveries[0].state == pb.Delivery.SUCCEEDED)
    client.set_status(hook.name, pb.Webhook.INACTIVE)
    client.publish_event("order", "created", data={"id": 2})
    page.add_init_script(COUNT_READS)
    held: list[Route] = []

    def hold_the_unfiltered(route: Route) -> None:
        if "state" not in (route.request.post_data_json or {}) and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/ListDeliveries", hold_the_unfiltered)
    page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/deliveries")
    pump_until(page, lambda: len(held) == 1)
    page.get_by_label("State").select_option("SUCCEEDED")
    deliveries = page.locator(".delivery")
    expect(deliveries).to_have_count(1)
    release_and_wait(page, "ListDeliveries", held[0].continue_)
    expect(deliveries).to_have_count(1)
    expect(deliveries).to_contain_text("succeeded")


def test_an_older_attempts_answer_does_not_replace_a_newer_one(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    gate = threading.Event()
    first_fails = Receiver(lambda request, count: Reply(status=500) if count == 1 else gated(gate)(request, count))
    try:
        hook = client.create_webhook("order", "created", first_fails.url(), timeout_s=30)
        client.publish_event("order", "created", data={"id": 1})
        first_fails.wait_for(2)  # the first attempt failed; the second waits for the gate
        page.add_init_script(COUNT_READS)
        held: list[tuple[Route, APIResponse]] = []

        def answer_the_first_late(route: Route) -> None:
            if held:
                route.continue_()
            else:
                held.append((route, route.fetch()))  # read now (one attempt), answered later

        page.route("**/ListAttempts", answer_the_first_late)
        page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/deliveries")
        delivery = page.locator(".delivery")
        expect(delivery).to_contain_text("pending")
        delivery.get_by_role("button", name=re.compile("^Delivery")).click()
        pump_until(page, lambda: len(held) == 1)
        gate.set()
        # The page follows the pending delivery to its end and reads its attempts again.
        expect(delivery).to_contain_text("succeeded")
        attempts = delivery.locator(".attempts li")
        expect(attempts).to_have_count(2)
        route, stale = held[0]
        release_and_wait(page, "ListAttempts", lambda: route.fulfill(response=stale))
        expect(attempts).to_have_count(2)
    finally:
        gate.set()
        first_fails.close()


def test_a_failed_follow_up_read_does_not_stop_the_following(
    hookd: HookdProcess, page: Page, client: HookdClient
) -> None:
    gate = threading.Event()
    slow = Receiver(gated(gate))
    try:
        hook = client.create_webhook("order", "created", slow.url(), timeout_s=30)
        client.publish_event("order", "created", data={"id": 1})
        slow.wait_for(1)
        reads: list[str] = []

        def fail_the_first_follow_up(route: Route) -> None:
            reads.append(route.request.url)
            if len(reads) == 2:
                route.fulfill(status=503, json={"code": "unavailable", "message": "hookd is restarting"})
            else:
                route.continue_()

        page.route("**/ListDeliveries", fail_the_first_follow_up)
        page.goto(hookd.http_url + f"/#/webhooks/{hook.name.split('/')[1]}/deliveries")
        delivery = page.locator(".delivery")
        expect(delivery).to_contain_text("pending")
        expect(page.locator(".notice")).to_have_text("hookd is restarting")
        gate.set()
        expect(delivery).to_contain_text("succeeded")
    finally:
        gate.set()
        slow.close()
