"""Reading a webhook through one node right after another node changed it, in-process on a real
PostgreSQL database. The node that reads has not heard of the change (its notifications are
held back, as they are for a moment in a running cluster): what it answers must still be what
was committed. The acceptance tests start whole nodes (test_cluster.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from hookd.engine import Engine, EngineConfig
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.errors import NotFound, ResourceExhausted
from hookd.engine.model import Status
from hookd.engine.validation import WebhookInput
from tests.support.postgres import PostgresServer

URL = "http://127.0.0.1:9/hook"


def _node(database: str, node_id: str) -> Engine:
    return Engine(
        EngineConfig(
            database=database,
            node_id=node_id,
            destinations=DestinationPolicy.from_entries(["127.0.0.0/8"], allow_http=True),
            max_webhooks_per_type=3,
        )
    )


@asynccontextmanager
async def _two_nodes(database: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Engine, Engine]]:
    """Two nodes on one database; the second never hears of the first's webhook changes."""
    writer, reader = _node(database, "writer"), _node(database, "reader")

    async def deaf(webhook_ids: list[str]) -> None:
        return None

    monkeypatch.setattr(reader, "_reload_webhooks", deaf)
    monkeypatch.setattr(reader, "_catch_up", lambda: trio.lowlevel.checkpoint())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await nursery.start(reader.run)
            yield writer, reader
            nursery.cancel_scope.cancel()


async def test_a_webhook_made_on_one_node_is_read_as_committed_on_another(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        hook = await writer.create_webhook(WebhookInput(resource="order", event="created", url=URL))
        assert reader.registry.get(hook.id) is None  # it has not heard, and it need not have
        assert (await reader.get_webhook(hook.id)).url == URL
        await reader.health_snapshot([hook.id])  # raised NotFound while the node had not heard
        page = await reader.list_deliveries(hook.id, "", None, 10, "")
        assert page.items == []

        # A change through the node that had not heard applies to the committed row.
        changed = await reader.update_webhook(hook.id, WebhookInput(status=Status.INACTIVE), ["status"])
        assert changed.status is Status.INACTIVE
        assert (await writer.get_webhook(hook.id)).status is Status.INACTIVE

        await writer.delete_webhook(hook.id)
        with pytest.raises(NotFound):
            await reader.get_webhook(hook.id)
        with pytest.raises(NotFound):
            await reader.update_webhook(hook.id, WebhookInput(status=Status.ACTIVE), ["status"])


async def test_the_webhooks_per_type_limit_holds_across_nodes(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _two_nodes(postgres_server.new_database(), monkeypatch) as (writer, reader):
        # Both nodes create at once, four each, on a type with room for three: the nodes'
        # transactions count in turn, so three get in between them.
        created: list[str] = []

        async def create(node: Engine, n: int) -> None:
            with contextlib.suppress(ResourceExhausted):
                hook = await node.create_webhook(WebhookInput(resource="order", event="created", url=f"{URL}/{n}"))
                created.append(hook.id)

        async with trio.open_nursery() as creates:
            for n in range(8):
                creates.start_soon(create, (writer, reader)[n % 2], n)
        assert len(created) == 3
        # The node that has not heard of them still counts them.
        with pytest.raises(ResourceExhausted):
            await reader.create_webhook(WebhookInput(resource="order", event="created", url=f"{URL}/more"))
