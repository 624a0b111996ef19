"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real hookd
and real receivers: what an operator does in "Settings -> Webhooks", click by click.

One browser per module, a fresh page per test; each test saves a screenshot of its page under
its tmp dir. Chromium missing is a failure, never a skip: `make test` installs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from hookd.client import HookdClient
from hookd.v1 import hookd_pb2 as pb
from tests.support.receiver import Receiver, Reply, always, wait_until
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


def open_menu(page: Page, url: str, item: str) -> None:
    row(page, url).get_by_role("button", name=re.compile("^Actions for")).click()
    page.get_by_role("menuitem", name=item).click()


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
    expect(page.locator(".field", has=page.get_by_label("Destination URL")).locator(".field-error")).to_contain_text(
        "http"
    )
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
