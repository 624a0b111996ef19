"""grpcurl against the running server, with reflection alone (no proto files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import HookdProcess

pytestmark = pytest.mark.backends

GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl(server: HookdProcess, *args: str, data: dict[str, Any] | None = None, check: bool = True) -> str:
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [server.address, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout + result.stderr


def test_list_and_describe(hookd: HookdProcess) -> None:
    services = grpcurl(hookd, "list").split()
    assert {"hookd.v1.WebhookService", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(hookd, "describe", "hookd.v1.Webhook")
    assert "Absolute http or https URL" in described and "update_mask" not in described
    assert "rpc StreamHealth" in grpcurl(hookd, "describe", "hookd.v1.WebhookService")


def test_crud_round_trip_with_json(hookd: HookdProcess) -> None:
    method = "hookd.v1.WebhookService/"
    created = json.loads(
        grpcurl(
            hookd,
            method + "CreateWebhook",
            data={
                "webhook": {
                    "resource": "order",
                    "event": "created",
                    "url": "http://127.0.0.1:9/hooks",
                    "auth": {"bearer": {"token": "secret-token-value"}},
                    "timeout": "2.5s",
                }
            },
        )
    )
    name = created["name"]
    assert created["signingSecret"].startswith("whsec_") and created["timeout"] == "2.500s"
    listed = json.loads(grpcurl(hookd, method + "ListWebhooks", data={"resource": "order"}))
    assert [w["name"] for w in listed["webhooks"]] == [name]
    got = json.loads(grpcurl(hookd, method + "GetWebhook", data={"name": name}))
    assert "****" in got["signingSecret"] and "secret-token-value" not in json.dumps(got)
    updated = json.loads(
        grpcurl(
            hookd,
            method + "UpdateWebhook",
            data={
                "webhook": {"name": name, "status": "INACTIVE", "description": "paused"},
                "update_mask": {"paths": ["status", "description"]},
            },
        )
    )
    assert updated["status"] == "INACTIVE" and updated["description"] == "paused"
    grpcurl(hookd, method + "DeleteWebhook", data={"name": name})
    missing = grpcurl(hookd, method + "GetWebhook", data={"name": name}, check=False)
    assert "NotFound" in missing


def test_errors_reach_grpcurl_with_their_code(hookd: HookdProcess) -> None:
    answer = grpcurl(
        hookd,
        "hookd.v1.WebhookService/CreateWebhook",
        check=False,
        data={"webhook": {"resource": "order", "event": "nope", "url": "http://127.0.0.1:9/"}},
    )
    assert "InvalidArgument" in answer and "webhook.event" in answer


@pytest.mark.parametrize("service", ["", "hookd.v1.WebhookService"])
def test_health_service_reports_serving(hookd: HookdProcess, service: str) -> None:
    data = {"service": service}
    assert json.loads(grpcurl(hookd, "grpc.health.v1.Health/Check", data=data))["status"] == "SERVING"
