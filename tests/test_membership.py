"""Cluster membership races, in-process on a real PostgreSQL database: what a heartbeat that
was already under way does when the node leaves. The acceptance tests start whole nodes
(test_cluster.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import trio

from hookd.engine.cluster import ClusterSync, Membership
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.errors import Unavailable
from hookd.engine.store import cluster_ops
from hookd.engine.store.backend import SharedBackend, open_backend
from tests.support.postgres import PostgresServer


class _NoActors:
    """The dispatcher's part membership uses, for a node that has no destinations."""

    async def drain(self, which: Callable[[str], bool]) -> None:
        return None

    def stop(self, which: Callable[[str], bool]) -> None:
        return None

    async def resume(self, which: Callable[[str], bool]) -> None:
        return None


@pytest.fixture
def shared_store(postgres_server: PostgresServer) -> Iterator[SharedBackend]:
    backend = cast(SharedBackend, open_backend(postgres_server.new_database()))
    backend.open(readers=1)
    yield backend
    backend.close()


def _leaving_node(store: SharedBackend) -> Membership:
    """The membership of a node without destinations, about to leave."""
    return Membership(
        store, cast(Dispatcher, _NoActors()), node_id="leaving", lease_s=30.0, live_actors=list, restarts=lambda: 0
    )


async def test_a_heartbeat_under_way_when_the_node_leaves_does_not_join_it_again(
    shared_store: SharedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    membership = _leaving_node(shared_store)
    control = membership._control
    heartbeat_waiting, node_left = trio.Event(), trio.Event()

    async def renew_after_the_node_left(fn: Callable[..., Any], **kwargs: Any) -> Any:
        if fn is cluster_ops.renew and not node_left.is_set():
            heartbeat_waiting.set()
            await node_left.wait()
        return await control(fn, **kwargs)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.run)
            monkeypatch.setattr(membership, "_control", renew_after_the_node_left)
            membership.wake()
            await heartbeat_waiting.wait()
            await membership.leave(grace_s=1.0)
            node_left.set()
        # ``run`` has returned: the heartbeat's step went to its end, and the loop ended.
    view = shared_store.control(cluster_ops.view)
    assert [node.id for node in view.nodes] == []
    assert all(slot.node_id is None for slot in view.slots)


async def test_a_heartbeat_answered_while_the_node_leaves_does_not_take_back_its_slots(
    shared_store: SharedBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat's renewal commits before ``leave`` releases the slots, but its answer (every
    slot, held) comes once leave has let them go in memory. Adopting that answer took the slots
    back into a node that has stopped its actors and released them in the database."""
    membership = _leaving_node(shared_store)
    control = membership._control
    heartbeat_renewed, releasing = trio.Event(), trio.Event()

    async def answer_the_heartbeat_once_leave_releases(fn: Callable[..., Any], **kwargs: Any) -> Any:
        if fn is cluster_ops.release:
            releasing.set()
        result = await control(fn, **kwargs)
        if fn is cluster_ops.renew and not heartbeat_renewed.is_set():  # the step's, not leave's
            heartbeat_renewed.set()
            await releasing.wait()
        return result

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.run)
            assert membership._slots.held  # a node alone holds every slot
            monkeypatch.setattr(membership, "_control", answer_the_heartbeat_once_leave_releases)
            membership.wake()
            await heartbeat_renewed.wait()
            await membership.leave(grace_s=1.0)
    assert membership._slots.held == {}
    assert "slots adopted" not in caplog.text
    view = shared_store.control(cluster_ops.view)
    assert all(slot.node_id is None for slot in view.slots)


async def test_a_failed_read_while_catching_up_is_retried_not_fatal(shared_store: SharedBackend) -> None:
    # The readers turn a store fault into Unavailable; before, it ended the sync task (and with
    # it the engine) instead of being waited out like a lost connection, and in the first
    # catch-up it kept the engine from starting for as long as reads failed.
    catch_ups: list[str] = []
    readable, caught_up = trio.Event(), trio.Event()

    async def catch_up() -> None:
        catch_ups.append("tried")
        if not readable.is_set():
            raise Unavailable("the store cannot be read: gone; retry later")
        caught_up.set()

    sync = ClusterSync(
        shared_store,
        node_id="one",
        deliveries=lambda urls: None,
        webhooks=lambda ids: None,
        membership=lambda: None,
        catch_up=catch_up,
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sync.run)  # it starts, though it cannot read yet
            readable.set()
            await caught_up.wait()
            nursery.cancel_scope.cancel()
    assert len(catch_ups) >= 2
