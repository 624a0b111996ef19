"""hookctl, run as a real process against a real server: what people type, what they see, what scripts parse."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import standardwebhooks

from hookd.client import DeadlineExceeded, HookdClient, cli, limits
from hookd.engine import core, validation
from hookd.server import servicer
from hookd.v1 import hookd_pb2 as pb
from hookd.v1 import hookd_pb2_grpc as pb_grpc
from tests.support.receiver import Receiver, Reply, always, wait_until
from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

HOOKCTL = [sys.executable, "-m", "hookd.client.cli"]
URL = "http://127.0.0.1:9/hooks"
#: Subprocesses see neither a terminal width nor a server address from the environment running the tests.
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "HOOKD_ADDRESS", "HOOKD_TOKEN")}
FULL_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")
#: What a terminal acts on rather than shows: C0 controls but tab and newline, DEL, C1 controls.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: A destination's answer that would clear the screen, set the clipboard (OSC 52), turn the text
#: red with an 8-bit CSI and overwrite the line with a carriage return, were it printed as it is.
HOSTILE = "\x1b[2J\x1b]52;c;aGFja2Vk\x1b\\ \x9b31mred\rover"
#: How hookctl must show it instead.
HOSTILE_SHOWN = r"\x1b[2J\x1b]52;c;aGFja2Vk\x1b\ \x9b31mred\x0dover"


def hookctl(
    hookd: HookdProcess | str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one command to completion; stdin is empty (not a terminal) unless given."""
    address = hookd if isinstance(hookd, str) else hookd.address
    return subprocess.run(
        [*HOOKCTL, "--address", address, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENV, **(env or {})},
    )


def ok(hookd: HookdProcess, *args: str) -> str:
    result = hookctl(hookd, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def data(hookd: HookdProcess, *args: str) -> Any:
    """A command's ``--json`` output."""
    return json.loads(ok(hookd, "--json", *args))


def fails(hookd: HookdProcess | str, *args: str, code: int = 1) -> str:
    """Run a command that must fail; return its one stderr line."""
    result = hookctl(hookd, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


def single_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


class Background:
    """hookctl running until signalled; threads collect its stdout and stderr as they come."""

    def __init__(self, hookd: HookdProcess, *args: str) -> None:
        self.process = subprocess.Popen(
            [*HOOKCTL, "--address", hookd.address, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._collect, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._collect, args=(self.process.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> Any:
        def check() -> Any:
            if self.process.poll() is not None:
                raise AssertionError(f"hookctl exited {self.process.returncode}:\n{self.stdout}\n{self.stderr}")
            return predicate()

        return wait_until(check, timeout=timeout)

    def stop(self, signum: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        for thread in self._threads:
            thread.join(5)
        return code


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def five_minutes(stats: dict[str, Any]) -> dict[str, Any]:
    (window,) = [w for w in stats["windows"] if w["window"] == "300s"]
    return dict(window)


# -- webhooks ------------------------------------------------------------------------------------


def test_list_filters_search_and_pages(hookd: HookdProcess, client: HookdClient) -> None:
    client.create_webhook("order", "created", "http://127.0.0.1:9/erp/orders")
    client.create_webhook("order", "cancelled", "http://127.0.0.1:9/erp/cancel")
    client.create_webhook("payment", "refunded", "http://127.0.0.1:9/books", status=pb.Webhook.INACTIVE)
    client.create_webhook("shipping", "delivered", "http://127.0.0.1:9/crm/parcels")
    client.create_webhook("customer", "created", "http://127.0.0.1:9/crm/people", status=pb.Webhook.INACTIVE)

    def urls(*args: str) -> list[str]:
        return [hook["url"].rsplit("9/", 1)[1] for hook in data(hookd, "webhooks", "list", *args)["webhooks"]]

    assert urls() == ["erp/orders", "erp/cancel", "books", "crm/parcels", "crm/people"]
    assert urls("--resource", "order") == ["erp/orders", "erp/cancel"]
    assert urls("--event", "created") == ["erp/orders", "crm/people"]
    assert urls("--status", "inactive") == ["books", "crm/people"]
    assert urls("--status", "ACTIVE", "--search", "crm") == ["crm/parcels"]
    assert urls("--search", "ERP", "--event", "cancelled") == ["erp/cancel"]

    first = data(hookd, "webhooks", "list", "--page-size", "2")
    assert [h["url"][-6:] for h in first["webhooks"]] == ["orders", "cancel"]
    assert first["totalSize"] == 5 and first["nextPageToken"]
    second = data(hookd, "webhooks", "list", "--page-size", "2", "--page-token", first["nextPageToken"])
    assert [h["resource"] for h in second["webhooks"]] == ["payment", "shipping"]
    every = data(hookd, "webhooks", "list", "--all", "--page-size", "2")
    assert len(every["webhooks"]) == every["totalSize"] == 5

    table = ok(hookd, "webhooks", "list", "--page-size", "4")
    header = next(line for line in table.splitlines() if "Resource" in line)
    assert header.split() == ["Resource", "Event", "URL", "Status", "Name"]
    assert re.search(r"payment\s+refunded\s+http://127.0.0.1:9/books\s+Inactive\s+webhooks/wh_", table)
    assert re.search(r"order\s+created\s+http://127.0.0.1:9/erp/orders\s+Active\s+webhooks/wh_", table)
    assert "next page: --page-token " in table and "4 of 5" in table
    colored = hookctl(hookd, "webhooks", "list", env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[32mActive" in colored and "\x1b[2mInactive" in colored
    fails(hookd, "webhooks", "list", "--all", "--page-token", "x", code=2)
    fails(hookd, "webhooks", "list", "--status", "paused", code=2)


def test_create_with_each_auth_kind(hookd: HookdProcess, client: HookdClient, receiver: Receiver) -> None:
    plain = ok(hookd, "webhooks", "create", "--resource", "order", "--event", "created", "--url", URL)
    (secret,) = FULL_SECRET.findall(plain)
    name = re.search(r"webhooks/wh_\w+", plain)
    assert name and "Active" in plain and "shown in full only now" in plain
    assert client.get_webhook(name.group()).auth.WhichOneof("method") is None
    assert client.get_webhook(name.group()).signing_secret.endswith(secret[-4:])

    def sent_headers(hook: dict[str, Any]) -> dict[str, str]:
        """What the destination really gets: credentials as given, not as the answers mask them."""
        client.test_webhook(hook["name"])
        return receiver.wait_for(1, path=hook["url"].removeprefix(receiver.url("")))[-1].headers

    bearer = data(
        hookd,
        *("webhooks", "create", "--resource", "order", "--event", "updated", "--url", receiver.url("/bearer")),
        *("--bearer", "tok-" + "t" * 28),
    )
    assert FULL_SECRET.fullmatch(bearer["signingSecret"])
    assert "t" * 10 not in json.dumps(bearer["auth"])  # answers mask credentials, even at create
    assert sent_headers(bearer)["authorization"] == "Bearer tok-" + "t" * 28

    basic = data(
        hookd,
        *("webhooks", "create", "--resource", "payment", "--event", "completed", "--url", receiver.url("/basic")),
        *("--basic", "erp:hunter2:secret", "--inactive", "--discard", "--description", "to the books"),
        *("--rate-limit", "2.5", "--timeout", "1.5", "--ordered"),
    )
    assert basic["ordering"] == "ORDERED" and bearer["ordering"] == "UNORDERED"
    assert basic["auth"]["basic"]["username"] == "erp" and "hunter2" not in basic["auth"]["basic"]["password"]
    assert (basic["status"], basic["inactivePolicy"]) == ("INACTIVE", "DISCARD")
    assert (basic["description"], basic["rateLimit"], basic["timeout"]) == ("to the books", 2.5, "1.500s")
    assert sent_headers(basic)["authorization"] == "Basic " + base64.b64encode(b"erp:hunter2:secret").decode()

    headers = data(
        hookd,
        *("webhooks", "create", "--resource", "shipping", "--event", "delivered", "--url", receiver.url("/keys")),
        *("--header", "X-Api-Key: k3y-k3y-k3y-k3y", "--header", "X-Tenant:acme-north"),
    )
    assert sorted(headers["auth"]["headers"]["headers"]) == ["X-Api-Key", "X-Tenant"]
    sent = sent_headers(headers)
    assert (sent["x-api-key"], sent["x-tenant"]) == ("k3y-k3y-k3y-k3y", "acme-north")
    assert "authorization" not in sent

    create = ("webhooks", "create", "--resource", "order", "--event", "fulfilled", "--url", URL)
    assert "exclude each other" in fails(hookd, *create, "--bearer", "a", "--basic", "b:c", code=2)
    assert "'Name: value'" in fails(hookd, *create, "--header", "no colon", code=2)
    assert "Missing option '--url'" in fails(hookd, *create[:-2], code=2)
    line = single_error_line(fails(hookd, *create[:5], "exploded", *create[6:]))
    assert line.startswith("error: INVALID_ARGUMENT: ") and "webhook.event" in line
    assert client.list_webhooks().total_size == 4


def test_get_and_edit_change_only_the_given_fields(hookd: HookdProcess, client: HookdClient) -> None:
    auth = pb.DestinationAuth(bearer=pb.BearerAuth(token="b" * 24))
    hook = client.create_webhook("order", "created", URL, auth=auth, description="before", rate_limit=3)
    bare_id = hook.name.removeprefix("webhooks/")

    got = data(hookd, "webhooks", "get", bare_id)
    assert got["name"] == hook.name and got["signingSecret"].startswith("whsec_****")
    shown = ok(hookd, "webhooks", "get", hook.name)
    assert "before" in shown and "bearer ****" in shown and not FULL_SECRET.search(shown)

    edited = data(hookd, "webhooks", "edit", bare_id, "--url", "http://127.0.0.1:9/v2")
    assert edited["url"] == "http://127.0.0.1:9/v2"
    assert (edited["description"], edited["rateLimit"], edited["timeout"]) == ("before", 3.0, "5s")
    assert edited["auth"]["bearer"]["token"].endswith("bbbb")

    edited = data(hookd, "webhooks", "edit", hook.name, "--description", "after", "--timeout", "2", "--no-auth")
    assert (edited["description"], edited["timeout"], edited["auth"]) == ("after", "2s", {})
    assert (edited["url"], edited["rateLimit"], edited["status"]) == ("http://127.0.0.1:9/v2", 3.0, "ACTIVE")

    edited = data(hookd, "webhooks", "edit", hook.name, "--inactive", "--discard", "--basic", "u:p4ssword")
    assert (edited["status"], edited["inactivePolicy"], edited["description"]) == ("INACTIVE", "DISCARD", "after")
    assert edited["ordering"] == "UNORDERED"
    assert data(hookd, "webhooks", "edit", hook.name, "--ordered")["ordering"] == "ORDERED"
    assert re.search(r"Ordering\s+ordered", ok(hookd, "webhooks", "get", hook.name))
    assert client.get_webhook(hook.name).auth.basic.username == "u"

    odd = "[/oops] :thumbs_up: [b]verbatim[/b]"  # rich markup and emoji codes are not interpreted
    path = odd.replace(" ", "")
    data(hookd, "webhooks", "edit", hook.name, "--description", odd, "--url", f"http://127.0.0.1:9/{path}")
    shown = ok(hookd, "webhooks", "get", hook.name)
    assert odd in shown and path in shown and path in ok(hookd, "webhooks", "list")
    assert "nothing to change" in fails(hookd, "webhooks", "edit", hook.name, code=2)
    assert single_error_line(fails(hookd, "webhooks", "edit", "wh_missing", "--description", "x")) == (
        "error: NOT_FOUND: webhooks/wh_missing not found"
    )


def test_delete_asks_unless_yes_and_refuses_without_a_terminal(hookd: HookdProcess, client: HookdClient) -> None:
    hook = client.create_webhook("customer", "deleted", URL)

    refused = single_error_line(fails(hookd, "webhooks", "delete", hook.name))
    assert "--yes" in refused and "not a terminal" in refused
    piped = hookctl(hookd, "webhooks", "delete", hook.name, stdin="y\n")  # a pipe is nobody confirming
    assert piped.returncode == 1 and "--yes" in single_error_line(piped.stderr)
    assert client.get_webhook(hook.name).name == hook.name

    def at_terminal(answer: bytes) -> subprocess.CompletedProcess[bytes]:
        primary, secondary = pty.openpty()
        try:
            os.write(primary, answer)
            return subprocess.run(
                [*HOOKCTL, "--address", hookd.address, "webhooks", "delete", hook.name],
                stdin=secondary,
                capture_output=True,
                timeout=30,
                env=ENV,
            )
        finally:
            os.close(secondary)
            os.close(primary)

    declined = at_terminal(b"n\n")
    assert declined.returncode == 1 and b"customer.deleted" in declined.stderr and b"Aborted" in declined.stderr
    assert client.get_webhook(hook.name).name == hook.name
    confirmed = at_terminal(b"y\n")
    assert confirmed.returncode == 0 and b"Deleted " + hook.name.encode() in confirmed.stdout
    assert client.list_webhooks().total_size == 0

    again = client.create_webhook("customer", "deleted", URL)
    assert data(hookd, "webhooks", "delete", again.name, "--yes") == {"name": again.name, "cancelledDeliveries": "0"}
    assert client.list_webhooks().total_size == 0
    assert single_error_line(fails(hookd, "webhooks", "delete", again.name, "-y")).startswith("error: NOT_FOUND")


def test_activate_deactivate_test_and_rotate_secret(
    hookd: HookdProcess, client: HookdClient, receiver: Receiver
) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    assert data(hookd, "webhooks", "deactivate", hook.name)["status"] == "INACTIVE"
    assert client.get_webhook(hook.name).status == pb.Webhook.INACTIVE
    assert "Active" in ok(hookd, "webhooks", "activate", hook.name.removeprefix("webhooks/"))
    assert client.get_webhook(hook.name).status == pb.Webhook.ACTIVE

    attempt = data(hookd, "webhooks", "test", hook.name)
    assert (attempt["statusCode"], attempt["outcome"], attempt["error"]) == (200, "SUCCESS", "")
    assert attempt["duration"].endswith("s") and attempt["url"] == receiver.url()
    (ping,) = receiver.wait_for(1)
    assert ping.json()["type"] == "webhook.ping"
    standardwebhooks.Webhook(hook.signing_secret).verify(ping.body, ping.headers)
    shown = ok(hookd, "webhooks", "test", hook.name)
    assert re.search(r"Status code\s+200", shown) and re.search(r"Outcome\s+SUCCESS", shown)
    assert re.search(r"Latency\s+[\d.]+ ms", shown)

    rotated = data(hookd, "webhooks", "rotate-secret", hook.name, "--grace", "60")
    assert FULL_SECRET.fullmatch(rotated["signingSecret"]) and rotated["signingSecret"] != hook.signing_secret
    assert rotated["previousSecretExpireTime"]
    data(hookd, "webhooks", "test", hook.name)
    signed_twice = receiver.wait_for(3)[-1]
    standardwebhooks.Webhook(rotated["signingSecret"]).verify(signed_twice.body, signed_twice.headers)
    standardwebhooks.Webhook(hook.signing_secret).verify(signed_twice.body, signed_twice.headers)

    shown = ok(hookd, "webhooks", "rotate-secret", hook.name, "--grace", "0")
    (secret,) = FULL_SECRET.findall(shown)
    data(hookd, "webhooks", "test", hook.name)
    last = receiver.wait_for(4)[-1]
    standardwebhooks.Webhook(secret).verify(last.body, last.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(rotated["signingSecret"]).verify(last.body, last.headers)


# -- text others chose ---------------------------------------------------------------------------


def test_text_a_destination_sends_is_shown_escaped(hookd: HookdProcess, client: HookdClient) -> None:
    """hookd stores the start of every answer as it came; hookctl prints it for people with its
    control characters escaped, so a receiver cannot clear the screen or set the clipboard."""
    hostile = Receiver(always(Reply(status=500, body=HOSTILE.encode())))
    try:
        # The server refuses C0 controls in a description or a user name, not C1 ones: those must
        # be escaped too (the user name goes through a rich Text, the description does not).
        auth = pb.DestinationAuth(basic=pb.BasicAuth(username="erp\x9b8m", password="hunter2"))
        hook = client.create_webhook("order", "created", hostile.url(), auth=auth, description="caf\x9b2J")
        assert data(hookd, "webhooks", "test", hook.name)["responseExcerpt"] == HOSTILE  # stored as sent
        shown = ok(hookd, "webhooks", "test", hook.name)
        assert not CONTROL.search(shown), repr(shown)
        assert re.search(r"Status code\s+500", shown) and HOSTILE_SHOWN in shown
        described = ok(hookd, "webhooks", "get", hook.name)
        assert not CONTROL.search(described), repr(described)
        assert r"caf\x9b2J" in described and r"basic erp\x9b8m:" in described
    finally:
        hostile.close()


def test_listen_shows_what_it_receives_escaped(hookd: HookdProcess) -> None:
    """Anyone who can reach ``hookctl listen`` chooses the body, the headers and the event type it
    prints."""
    listener = Background(hookd, "listen", "--port", "0")
    try:
        url = listening_url(listener)
        envelope = json.dumps({"type": "order.\x1b]0;retitled\x07created", "id": "evt_1"}).encode()
        for body, message_id in ((envelope, "msg_\x1b[8m"), (HOSTILE.encode(), "msg_2")):
            request = urllib.request.Request(url + "/hooks", data=body, headers={"webhook-id": message_id})
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
        listener.wait_for(lambda: listener.stdout.count("-> 200") == 2)
    finally:
        assert listener.stop(signal.SIGINT) == 0
    assert not CONTROL.search(listener.stdout), repr(listener.stdout)
    assert r"order.\x1b]0;retitled\x07created" in listener.stdout and r"msg_\x1b[8m" in listener.stdout
    assert HOSTILE_SHOWN.replace(r"\x0d", " ") in listener.stdout  # listen folds whitespace, CR among it


# -- events and deliveries -----------------------------------------------------------------------


def test_events_publish_and_types(hookd: HookdProcess, client: HookdClient, receiver: Receiver) -> None:
    types = data(hookd, "events", "types")["eventTypes"]
    assert {"resource": "order", "event": "created", "type": "order.created"} in types
    assert re.search(r"payment\s+refunded\s+payment.refunded", ok(hookd, "events", "types"))

    client.create_webhook("order", "created", receiver.url())
    answer = data(
        hookd,
        *("events", "publish", "order", "created", "--data", '{"id": 1001, "total": "25.00"}'),
        *("--related", '{"customer": {"id": 7}}', "--idempotency-key", "order-1001"),
    )
    assert answer["name"].startswith("events/") and answer["deliveryCount"] == 1 and answer["duplicate"] is False
    (request,) = receiver.wait_for(1)
    body = request.json()
    assert (body["id"], body["type"]) == (answer["name"].removeprefix("events/"), "order.created")
    assert body["data"] == {"id": 1001, "total": "25.00"} and body["related"] == {"customer": {"id": 7}}

    again = ok(hookd, "events", "publish", "order", "created", "--data", "{}", "--idempotency-key", "order-1001")
    assert answer["name"] in again and "already published" in again
    assert data(hookd, "events", "publish", "product", "created")["deliveryCount"] == 0

    assert "not valid JSON" in fails(hookd, "events", "publish", "order", "created", "--data", "{id: 1}", code=2)
    assert "JSON object" in fails(hookd, "events", "publish", "order", "created", "--related", "[1]", code=2)
    line = single_error_line(fails(hookd, "events", "publish", "order", "exploded"))
    assert line.startswith("error: INVALID_ARGUMENT:")
    assert len(receiver.received()) == 1


def test_deliveries_list_show_and_retry(hookd: HookdProcess, client: HookdClient) -> None:
    failing = Receiver(always(Reply(status=500, body=b"down for maintenance")))
    try:
        hook = client.create_webhook("order", "created", failing.url())
        other = client.create_webhook("order", "created", "http://127.0.0.1:9/unused", status=pb.Webhook.INACTIVE)
        event = client.publish_event("order", "created", data={"id": 1}).name
        wait_until(lambda: client.list_deliveries(hook.name, state=pb.Delivery.FAILED).deliveries)

        every = data(hookd, "deliveries", "list")["deliveries"]
        assert sorted(d["state"] for d in every) == ["FAILED", "HELD"]
        (failed,) = data(hookd, "deliveries", "list", "--state", "failed")["deliveries"]
        assert failed["name"].startswith(hook.name + "/deliveries/")
        assert (failed["attemptCount"], failed["lastError"], failed["event"]) == (4, "HTTP 500", event)
        assert data(hookd, "deliveries", "list", "--webhook", other.name)["deliveries"][0]["state"] == "HELD"
        assert len(data(hookd, "deliveries", "list", "--event", event.removeprefix("events/"))["deliveries"]) == 2
        assert data(hookd, "deliveries", "list", "--state", "succeeded")["deliveries"] == []
        paged = data(hookd, "deliveries", "list", "--page-size", "1")
        assert len(paged["deliveries"]) == 1 and paged["nextPageToken"]
        assert len(data(hookd, "deliveries", "list", "--all", "--page-size", "1")["deliveries"]) == 2
        table = ok(hookd, "deliveries", "list", "--webhook", hook.name)
        assert re.search(re.escape(failed["name"]) + r"\s+order.created\s+failed\s+4\s+HTTP 500", table)

        shown = data(hookd, "deliveries", "show", failed["name"])
        assert shown["delivery"] == failed
        assert [(a["statusCode"], a["outcome"]) for a in shown["attempts"]] == [(500, "SERVER_ERROR")] * 4
        assert shown["attempts"][0]["responseExcerpt"] == "down for maintenance"
        by_id = ok(hookd, "deliveries", "show", failed["name"].rsplit("/", 1)[1])
        assert by_id.count("SERVER_ERROR") == 4 and "Attempts" in by_id and failed["name"] in by_id

        failing.behaviour = always(Reply())
        retried = data(hookd, "deliveries", "retry", failed["name"])
        assert retried["name"] == failed["name"] and retried["state"] in ("PENDING", "SUCCEEDED")
        wait_until(lambda: client.list_deliveries(hook.name, state=pb.Delivery.SUCCEEDED).deliveries)
        after = data(hookd, "deliveries", "show", failed["name"])
        assert after["delivery"]["state"] == "SUCCEEDED"
        assert [a["outcome"] for a in after["attempts"]] == ["SERVER_ERROR"] * 4 + ["SUCCESS"]
        (held,) = data(hookd, "deliveries", "list", "--webhook", other.name, "--state", "held")["deliveries"]
        line = single_error_line(fails(hookd, "deliveries", "retry", held["name"]))
        assert line.startswith("error: FAILED_PRECONDITION: delivery is HELD"), line
        missing = single_error_line(fails(hookd, "deliveries", "show", f"{hook.name}/deliveries/999"))
        assert missing.startswith("error: NOT_FOUND: ")
    finally:
        failing.close()


def test_deliveries_recover(hookd: HookdProcess, client: HookdClient) -> None:
    failing = Receiver(always(Reply(status=500)))
    try:
        hook = client.create_webhook("order", "created", failing.url())
        other = client.create_webhook("order", "created", failing.url("/other"))
        client.publish_event("order", "created", data={"id": 1})
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.FAILED).deliveries) == 2)
        failing.behaviour = always(Reply())
        assert data(hookd, "deliveries", "recover", "--webhook", hook.name, "--until", "1h") == {"recoveredCount": "0"}
        shown = ok(hookd, "deliveries", "recover", "--webhook", hook.name, "--since", "1h", "--state", "failed")
        assert shown.strip() == "Recovered 1 delivery: each is sent once more, now."
        wait_until(lambda: client.list_deliveries(hook.name, state=pb.Delivery.SUCCEEDED).deliveries)
        assert data(hookd, "deliveries", "recover", "--since", "2000-01-01T00:00:00Z") == {"recoveredCount": "1"}
        wait_until(lambda: client.list_deliveries(other.name, state=pb.Delivery.SUCCEEDED).deliveries)
        assert "Nothing to recover" in ok(hookd, "deliveries", "recover")
        assert "expected a time" in fails(hookd, "deliveries", "recover", "--since", "yesterday", code=2)
        assert "'pending' is not one of" in fails(hookd, "deliveries", "recover", "--state", "pending", code=2)
        line = single_error_line(fails(hookd, "deliveries", "recover", "--webhook", "wh_missing"))
        assert line == "error: NOT_FOUND: webhooks/wh_missing not found"
    finally:
        failing.close()


# -- health --------------------------------------------------------------------------------------


def test_health_snapshot_figures(hookd: HookdProcess, client: HookdClient, receiver: Receiver) -> None:
    hook = client.create_webhook("order", "created", receiver.url())
    quiet = client.create_webhook("order", "created", "http://127.0.0.1:9/quiet", status=pb.Webhook.INACTIVE)
    for n in range(3):
        client.publish_event("order", "created", data={"n": n})
    receiver.wait_for(3)

    def settled() -> Any:
        snap = data(hookd, "health")
        return snap if int(five_minutes(snap["service"]).get("successes", 0)) == 3 else None

    snap = wait_until(settled, timeout=10, interval=0.1)
    service = five_minutes(snap["service"])
    assert (int(service["attempts"]), service["successRate"]) == (3, 1.0)
    assert service["p50Ms"] > 0 and service["p99Ms"] >= service["p50Ms"]
    webhooks = {stats["key"]: stats for stats in snap["webhooks"]}
    assert int(five_minutes(webhooks[hook.name])["attempts"]) == 3
    assert int(webhooks[quiet.name]["backlog"]) == 3 and int(five_minutes(webhooks[quiet.name])["attempts"]) == 0
    (destination,) = [d for d in snap["destinations"] if d["key"] == receiver.url()]
    assert int(five_minutes(destination)["successes"]) == 3 and destination["breakerState"] == "CLOSED"

    only = data(hookd, "health", "--webhook", hook.name.removeprefix("webhooks/"))
    assert [stats["key"] for stats in only["webhooks"]] == [hook.name]
    table = ok(hookd, "health", "--destination", receiver.url())
    assert "Delivery health" in table and receiver.url() in table and quiet.name not in table
    # On PostgreSQL the destination's owner follows its URL (" @node").
    figures = r"(\s+@\S+)?\s+100% of 3\s+[\d.]+/[\d.]+/[\d.]+\s+0\s+0\s+0\s+0\s+closed"
    assert re.search(re.escape(receiver.url()) + figures, table)
    assert single_error_line(fails(hookd, "health", "--webhook", "wh_missing")).startswith("error: NOT_FOUND")
    assert "--watch" in fails(hookd, "health", "--interval", "1", code=2)


def test_health_watch_updates_until_interrupted(hookd: HookdProcess, client: HookdClient) -> None:
    client.create_webhook("order", "created", URL)
    lines = Background(hookd, "--json", "health", "--watch", "--interval", "0.1")
    try:
        lines.wait_for(lambda: len(json_lines(lines.stdout)) >= 2)
    finally:
        code = lines.stop(signal.SIGINT)
    assert code in (0, 130), lines.stderr
    snapshots = json_lines(lines.stdout)
    assert len({s["time"] for s in snapshots}) == len(snapshots) >= 2
    assert "Traceback" not in lines.stderr and "Aborted" not in lines.stderr

    tables = Background(hookd, "health", "--watch", "--interval", "0.1")
    try:
        tables.wait_for(lambda: tables.stdout.count("Delivery health") >= 2)
    finally:
        code = tables.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in tables.stderr


def test_health_watch_live_table_on_a_terminal(hookd: HookdProcess) -> None:
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [*HOOKCTL, "--address", hookd.address, "health", "--watch", "--interval", "0.1"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=ENV,
    )
    os.close(secondary)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed with the process
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: screen.count(b"Delivery health") >= 2 or process.poll() is not None, timeout=15)
        assert process.poll() is None, bytes(screen).decode(errors="replace")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
        reader.join(5)
        os.close(primary)
    assert code in (0, 130)
    assert b"\x1b[" in screen  # redrawn in place, not appended
    assert b"Traceback" not in screen and b"Aborted" not in screen


# -- listen --------------------------------------------------------------------------------------


def listening_url(listener: Background) -> str:
    found = listener.wait_for(lambda: re.search(r"listening on (http://\S+)", listener.stderr))
    return str(found.group(1)).rstrip("/")


def test_listen_prints_webhooks_and_verifies_signatures(hookd: HookdProcess, client: HookdClient) -> None:
    with socket.socket() as probe:  # a free port for the receiver, as a developer would pick one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    signed = client.create_webhook("order", "created", f"http://127.0.0.1:{port}/hooks")
    client.create_webhook("order", "created", f"http://127.0.0.1:{port}/other")
    listener = Background(hookd, "--json", "listen", "--port", str(port), "--secret", signed.signing_secret)
    try:
        assert listening_url(listener) == f"http://127.0.0.1:{port}"
        event = client.publish_event("order", "created", data={"id": 42}).name.removeprefix("events/")
        seen = listener.wait_for(lambda: len(json_lines(listener.stdout)) >= 2 and json_lines(listener.stdout))
        by_path = {item["path"]: item for item in seen}
        assert by_path["/hooks"]["signature"] == "ok" and by_path["/hooks"]["signatureError"] == ""
        assert by_path["/other"]["signature"] == "invalid"  # signed with the other webhook's secret
        assert (by_path["/hooks"]["eventType"], by_path["/hooks"]["eventId"]) == ("order.created", event)
        assert by_path["/hooks"]["messageId"].startswith("msg_") and '"id":42' in by_path["/hooks"]["body"]
        wait_until(lambda: len(client.list_deliveries(state=pb.Delivery.SUCCEEDED).deliveries) == 2)
    finally:
        code = listener.stop(signal.SIGTERM)
    assert code == 0 and "stopped" in listener.stderr and "Traceback" not in listener.stderr


def test_listen_answers_the_chosen_status_after_the_delay(hookd: HookdProcess, client: HookdClient) -> None:
    unchecked = Background(hookd, "listen", "--port", "0", "--status", "500", "--delay", "0.2")
    try:
        url = listening_url(unchecked)
        hook = client.create_webhook("payment", "refunded", url + "/refunds")
        client.publish_event("payment", "refunded", data={"amount": "9.99"})

        def first_attempt() -> pb.Attempt | None:
            deliveries = client.list_deliveries(hook.name).deliveries
            attempts = client.list_attempts(deliveries[0].name).attempts if deliveries else []
            return attempts[0] if attempts else None

        attempt = wait_until(first_attempt, timeout=10)
        assert (attempt.status_code, attempt.outcome) == (500, pb.SERVER_ERROR)
        assert attempt.duration.ToMilliseconds() >= 200
        assert attempt.response_excerpt.startswith("hookctl listen answered 500")
        listener_output = unchecked.wait_for(lambda: "payment.refunded" in unchecked.stdout and unchecked.stdout)
        assert "signature unchecked" in listener_output and "-> 500 after 0.2 s" in listener_output
        assert '"amount":"9.99"' in listener_output
    finally:
        code = unchecked.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in unchecked.stderr

    verified = Background(hookd, "listen", "--port", "0", "--secret", hook.signing_secret)
    try:
        client.update_webhook(pb.Webhook(name=hook.name, url=listening_url(verified) + "/refunds"), ["url"])
        client.publish_event("payment", "refunded", data={"amount": "1.00"})
        verified.wait_for(lambda: "signature ok" in verified.stdout)
        assert "-> 200" in verified.stdout
    finally:
        assert verified.stop(signal.SIGINT) == 0
    assert "Invalid value for '--secret'" in fails(hookd, "listen", "--secret", "whsec_", code=2)


# -- errors, options, entry point ----------------------------------------------------------------


def test_errors_are_one_line_without_traceback(hookd: HookdProcess) -> None:
    assert fails(hookd, "webhooks", "get", "wh_missing") == "error: NOT_FOUND: webhooks/wh_missing not found\n"
    assert single_error_line(fails(hookd, "webhooks", "test", "webhooks/wh_missing")).startswith("error: NOT_FOUND")
    assert single_error_line(fails(hookd, "deliveries", "retry", "webhooks/wh_missing/deliveries/1"))
    assert single_error_line(fails(hookd, "deliveries", "list", "--webhook", "bad name!")).startswith(
        "error: INVALID_ARGUMENT"
    )

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"  # nobody listens once the socket closes
    for command in (("webhooks", "list"), ("--json", "health"), ("events", "publish", "order", "created")):
        line = single_error_line(fails(closed, *command))
        assert line.startswith(f"error: UNAVAILABLE: cannot reach hookd at {closed}"), line
    assert "No such command" in fails(hookd, "webhook", code=2)


@pytest.mark.parametrize(
    "command",
    [
        ("webhooks", "create", "--resource", "order", "--event", "created", "--url", URL, "--timeout", "nan"),
        ("webhooks", "create", "--resource", "order", "--event", "created", "--url", URL, "--timeout", "inf"),
        ("webhooks", "edit", "wh_x", "--timeout", "31"),
        ("webhooks", "edit", "wh_x", "--timeout", "inf"),
        ("webhooks", "edit", "wh_x", "--rate-limit", "nan"),
        ("webhooks", "edit", "wh_x", "--rate-limit", "0.05"),
        ("webhooks", "rotate-secret", "wh_x", "--grace", "inf"),
        ("webhooks", "rotate-secret", "wh_x", "--grace", "604801"),
        ("health", "--watch", "--interval", "inf"),
        ("health", "--watch", "--interval", "nan"),
        ("deliveries", "recover", "--since", "99999999999d"),
        ("deliveries", "recover", "--until", "9999-12-31T23:59:59-01:00"),
        ("listen", "--delay", "inf"),
    ],
    ids=lambda command: " ".join(command[:2] + command[-2:]),
)
def test_numbers_out_of_range_are_usage_errors(command: tuple[str, ...]) -> None:
    """``nan``, ``inf`` and values the server would refuse stop before anything is sent, as a
    usage error naming the option, where they used to end in a traceback (or a round trip)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"  # nothing is sent: no server needed
    assert f"Invalid value for '{command[-2]}'" in fails(closed, *command, code=2)


def test_client_limits_are_the_servers() -> None:
    """hookd-client cannot import the server's packages; its copies of their limits must agree."""
    assert (limits.MIN_TIMEOUT_S, limits.MAX_TIMEOUT_S) == (validation.MIN_TIMEOUT_S, validation.MAX_TIMEOUT_S)
    assert (limits.MIN_RATE_LIMIT, limits.MAX_RATE_LIMIT) == (validation.MIN_RATE_LIMIT, validation.MAX_RATE_LIMIT)
    assert limits.MAX_GRACE_S == core.MAX_GRACE_S
    assert limits.PING_QUEUE_WAIT_S == core.PING_QUEUE_WAIT_S
    assert limits.MIN_HEALTH_INTERVAL_S == servicer.MIN_HEALTH_INTERVAL_S


class Deadlines(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Records the deadline each call really goes out with, by method name."""

    def __init__(self) -> None:
        self.seen: dict[str, float | None] = {}

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self.seen[details.method.rsplit("/", 1)[1]] = details.timeout
        return continuation(details, request)


def test_test_webhook_outlasts_the_servers_wait(hookd: HookdProcess, client: HookdClient, receiver: Receiver) -> None:
    """TestWebhook may rightly take two of the webhook's timeouts plus the wait for a request slot
    (up to 70 s); the default 30 s deadline gave up first, with a bare DEADLINE_EXCEEDED."""
    hook = client.create_webhook("order", "created", receiver.url(), timeout_s=validation.MAX_TIMEOUT_S)

    def deadlines(timeout: float | None) -> dict[str, float | None]:
        recorder = Deadlines()
        with HookdClient(hookd.address, timeout=timeout) as watched:
            watched.stub = pb_grpc.WebhookServiceStub(grpc.intercept_channel(watched.channel, recorder))
            assert watched.test_webhook(hook.name).attempt.status_code == 200
            watched.get_webhook(hook.name)
        return recorder.seen

    default = deadlines(30.0)
    ping = default["TestWebhook"]
    assert ping is not None and ping >= 2 * validation.MAX_TIMEOUT_S + core.PING_QUEUE_WAIT_S + 10, ping
    assert default["GetWebhook"] == 30.0  # the others keep the client's own
    assert deadlines(None) == {"TestWebhook": None, "GetWebhook": None}  # no deadline stays none
    assert deadlines(300.0) == {"TestWebhook": 300.0, "GetWebhook": 300.0}  # a longer one is kept


def test_a_call_past_its_deadline_is_one_named_error() -> None:
    """A server that takes the connection and never answers: the call ends at its deadline as
    ``DeadlineExceeded``, and hookctl's line for it says which server and after how long."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts connections; nobody ever speaks HTTP/2 on them
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with HookdClient(address, timeout=0.5) as client, pytest.raises(DeadlineExceeded) as raised:
            client.get_webhook("wh_x")
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and raised.value.deadline_s == 0.5
    line = cli._one_line(raised.value, address)
    assert line == f"DEADLINE_EXCEEDED: hookd at {address}: no answer within 0.5 s"


def test_token_and_address_from_options_or_environment(tmp_path: Path) -> None:
    server = HookdProcess(tmp_path, "--auth-token", "s3cret-token").start()
    try:
        line = single_error_line(fails(server, "events", "types"))
        assert line.startswith("error: UNAUTHENTICATED")
        assert "order.created" in ok(server, "--token", "s3cret-token", "events", "types")
        from_env = subprocess.run(
            [*HOOKCTL, "--json", "events", "types"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**ENV, "HOOKD_ADDRESS": server.address, "HOOKD_TOKEN": "s3cret-token"},
        )
        assert from_env.returncode == 0 and json.loads(from_env.stdout)["eventTypes"], from_env.stderr
    finally:
        server.stop()


def test_installed_entry_point() -> None:
    script = Path(sys.executable).parent / "hookctl"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 0, result.stderr
    for command in ("webhooks", "events", "deliveries", "health", "listen"):
        assert command in result.stdout
    assert "HOOKD_ADDRESS" in result.stdout and "--json" in result.stdout
