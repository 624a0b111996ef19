"""Cluster membership: many nodes on one PostgreSQL, exactly one actor per destination.

Every destination URL hashes to one of ``SLOT_COUNT`` slots; every slot is leased to one node
at a time, in the database. The node a slot *should* belong to is chosen by rendezvous
(highest-random-weight) hashing over the live nodes, so when a node joins or leaves only the
slots it gains or loses move. Each node, every ``lease / 5`` seconds and whenever a
notification says membership changed:

1. heartbeats and renews the leases on the slots it holds, in one transaction; a slot missing
   from the renewal was claimed by another node meanwhile: its actors stop at once; a slot the
   renewal found held by this node that memory does not know of (a claim whose reply was lost)
   is adopted;
2. hands over slots rendezvous now gives to another live node: their actors finish what they
   have in flight (outcomes committed), then the slots are released, and the new owner, told by
   a notification, claims them at once (no delivery is sent twice by a hand-over);
3. claims the slots rendezvous gives it that are free or whose lease has expired (a node that
   died); every claim bumps the slot's epoch.

Every write an owner makes for a destination carries its fence (slot, epoch): a node that was
paused or cut off past its lease cannot write after it lost the slot, and it does not send
either, because ``may_send`` holds only while the lease renewed at ``t`` is younger than
``0.9 x lease`` by this node's own monotonic clock (which keeps running while it is stopped).

A store fault (``StoreFault``, a ``Conflict`` that outlasted the backend's retries, or
``Unavailable`` from a read) never ends the node: a step that meets one is tried again, a
hand-over keeps its slots until their release commits, and destinations whose slots were just
taken are looked up again until the read succeeds. Each streak of failures is logged once, and
its end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import trio

from hookd.engine.actor import ActorStatistics
from hookd.engine.breaker import BreakerState
from hookd.engine.dispatcher import Dispatcher
from hookd.engine.errors import Unavailable
from hookd.engine.monitor import LiveState, NodeInfo
from hookd.engine.store import cluster_ops
from hookd.engine.store.backend import SharedBackend
from hookd.engine.store.cluster_ops import SLOT_COUNT, ClusterView, Fence
from hookd.engine.store.sql import Conflict, StoreFault

log = logging.getLogger("hookd.cluster")

#: The share of the lease a node trusts its own renewal for (clocks drift a little).
TRUST = 0.9
#: The node holding this slot's lease runs the cluster's housekeeping.
LEADER_SLOT = 0
#: What the store raises when it cannot do something now; never a reason to stop the node.
STORE_FAULTS = (StoreFault, Conflict, Unavailable)


@lru_cache(maxsize=65536)
def slot_of(url: str) -> int:
    """The hash slot of a destination URL: the same on every node and every version."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big") % SLOT_COUNT


def _weight(node_id: str, slot: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{node_id}/{slot}".encode(), digest_size=8).digest(), "big")


def rendezvous(nodes: list[str]) -> dict[int, str]:
    """slot -> the node it belongs to among ``nodes`` (highest random weight wins)."""
    if not nodes:
        return {}
    return {slot: max(nodes, key=lambda node: _weight(node, slot)) for slot in range(SLOT_COUNT)}


@dataclass
class _Slots:
    """What this node holds: slot -> epoch, and which of them are being handed over."""

    held: dict[int, int] = field(default_factory=dict)
    leaving: set[int] = field(default_factory=set)


class Membership:
    """This node's place in the cluster; the dispatcher's ``Ownership``."""

    def __init__(
        self,
        backend: SharedBackend,
        dispatcher: Dispatcher,
        *,
        node_id: str,
        lease_s: float,
        live_actors: Callable[[], list[ActorStatistics]],
        restarts: Callable[[], int],
    ) -> None:
        self._backend = backend
        self._dispatcher = dispatcher
        self.node_id = node_id
        self.address = ""
        self._lease_s = lease_s
        self._live_actors = live_actors
        self._restarts = restarts
        self._slots = _Slots()
        self._valid_until = -math.inf  # trio time
        self._wake = trio.Event()
        self._view: ClusterView | None = None
        self._leaving = False
        self._nursery: trio.Nursery | None = None
        # One connection for membership: the loop and a hand-over in progress take turns on it.
        self._control_lock = trio.Lock()
        # Slots taken (claimed or adopted) whose destinations have not been looked up yet.
        self._unresumed: set[int] = set()
        # What is failing now ("step", "hand-over", "resume"): each streak is logged once.
        self._failing: set[str] = set()
        self._retry_s = min(1.0, lease_s / 10)

    def __repr__(self) -> str:
        return f"<Membership {self.node_id} slots={len(self._slots.held)} handing_over={len(self._slots.leaving)}>"

    # -- Ownership ---------------------------------------------------------------------------------

    def owns(self, url: str) -> bool:
        slot = slot_of(url)
        return slot in self._slots.held and slot not in self._slots.leaving and not self._leaving

    def may_send(self, url: str) -> bool:
        return slot_of(url) in self._slots.held and trio.current_time() < self._valid_until

    def fence(self, url: str) -> Fence | None:
        slot = slot_of(url)
        return Fence(slot, self._slots.held.get(slot, -1), self.node_id)

    def leads(self) -> bool:
        """Whether this node runs the cluster's housekeeping (maintenance.py): it holds slot 0's
        lease, trusted by its own clock, and is not handing the slot over."""
        return (
            LEADER_SLOT in self._slots.held
            and LEADER_SLOT not in self._slots.leaving
            and not self._leaving
            and trio.current_time() < self._valid_until
        )

    # -- the membership loop -----------------------------------------------------------------------

    def wake(self) -> None:
        """Membership may have changed (a notification): look again now."""
        self._wake.set()

    async def _control(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        async with self._control_lock:
            return await trio.to_thread.run_sync(self._backend.control, partial(fn, **kwargs))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, take this node's share, and keep it until cancelled (or ``leave``)."""
        await self._control(cluster_ops.register, node_id=self.node_id, address=self.address, lease_s=self._lease_s)
        log.info("node joined id=%s lease_s=%g", self.node_id, self._lease_s)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # The node is registered: if its first step fails it starts all the same and tries
            # again, rather than exit and leave a live-looking row that refuses its own restart.
            await self._try_step()
            task_status.started()
            while not self._leaving:
                with trio.move_on_after(self._next_step_in()):
                    await self._wake.wait()
                self._wake = trio.Event()
                if not await self._try_step():
                    await trio.sleep(self._retry_s)
            nursery.cancel_scope.cancel()

    async def _try_step(self) -> bool:
        """One step; a store fault is waited out (the next step starts from what the database
        says, so a step cut short anywhere leaves nothing to undo)."""
        try:
            await self._step()
        except STORE_FAULTS as error:
            self._failed("step", error)
            return False
        self._recovered("step")
        return True

    def _failed(self, what: str, error: Exception) -> None:
        """Log the first failure of a streak (a store outage fails every step until it ends)."""
        if what not in self._failing:
            self._failing.add(what)
            log.warning("membership %s failed node=%s reason=%s", what, self.node_id, error)

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.warning("membership %s works again node=%s", what, self.node_id)

    def _next_step_in(self) -> float:
        """A fifth of the lease, or sooner when a slot this node should own expires sooner."""
        interval = self._lease_s / 5 if not self._unresumed else self._retry_s
        view = self._view
        if view is None:
            return interval
        owners = rendezvous(self._live(view))
        for row in view.slots:
            if owners.get(row.slot) == self.node_id and row.node_id not in (None, self.node_id):
                interval = min(interval, max(0.0, row.expires_at - view.now) + 0.05)
        return interval

    def _live(self, view: ClusterView) -> list[str]:
        nodes = [n.id for n in view.nodes if n.state == "active" and n.lease_expires_at > view.now]
        if self.node_id not in nodes and not self._leaving:
            nodes.append(self.node_id)
        return nodes

    async def _renew(self) -> dict[int, int] | None:
        """Heartbeat and renew this node's leases (``cluster_ops.renew``): the slots the
        database says it holds, or None when its row is gone."""
        return await self._control(  # type: ignore[no-any-return]
            cluster_ops.renew, node_id=self.node_id, address=self.address, lease_s=self._lease_s, live=self._live_json()
        )

    def _renewed(self, held: dict[int, int], started: float) -> None:
        """After a renewal that began at ``started``: drop the slots it no longer found at the
        epoch memory holds, and trust the rest for ``TRUST`` of a lease from then."""
        self._lose({slot for slot, epoch in self._slots.held.items() if held.get(slot) != epoch})
        self._valid_until = started + TRUST * self._lease_s

    async def _step(self) -> None:
        started = trio.current_time()
        held = await self._renew()
        if self._leaving:
            # ``leave`` began while this step waited for the connection: it renews, releases
            # and forgets on its own. Adopting what the renewal found would bring back the slots
            # leave has just released; joining again, were the row gone, would leave a
            # live-looking node behind, owed half the slots until its lease ran out.
            return
        if held is None:  # our row is gone
            # It was pruned (we were taken for dead): join again from nothing.
            self._lose(set(self._slots.held))
            await self._control(cluster_ops.register, node_id=self.node_id, address=self.address, lease_s=self._lease_s)
            held = {}
        self._renewed(held, started)
        self._adopt({slot: epoch for slot, epoch in held.items() if slot not in self._slots.held})
        view: ClusterView = await self._control(cluster_ops.view)
        self._view = view
        owners = rendezvous(self._live(view))
        handover = {
            slot for slot in self._slots.held if owners.get(slot) != self.node_id and slot not in self._slots.leaving
        }
        if handover and self._nursery is not None:
            self._slots.leaving |= handover
            self._nursery.start_soon(self._hand_over, handover)
        wanted = [
            row.slot
            for row in view.slots
            if owners.get(row.slot) == self.node_id
            and row.slot not in self._slots.held
            and (row.node_id is None or row.expires_at < view.now)
        ]
        if wanted and not self._leaving:
            claimed = await self._control(cluster_ops.claim, node_id=self.node_id, slots=wanted, lease_s=self._lease_s)
            if claimed:
                self._slots.held.update(claimed)
                self._unresumed |= set(claimed)
                log.info("slots claimed node=%s count=%d held=%d", self.node_id, len(claimed), len(self._slots.held))
        await self._resume()

    def _adopt(self, found: dict[int, int]) -> None:
        """Take into memory the slots the renewal found this node holding that memory does not.

        Only a claim of this node's can put them there: one whose COMMIT succeeded but whose
        reply was lost (the connection dropped during COMMIT) raised ``StoreFault``, so the step
        was abandoned. Left alone they would never move: every renewal extends their leases,
        ``lost`` looks only at memory, a claim needs them free or expired, and rendezvous gives
        them to this node, so no other node claims them either: their destinations go unsent for
        as long as this node lives (and if slot 0 is among them, nobody runs the housekeeping).

        Adopting rather than releasing them: the renewal that returned them committed in this
        step, so the database says this node holds them at these epochs with fresh leases,
        which is exactly what the claim would have left, and every write is fenced by the
        database against (slot, epoch, node): adopting cannot make two owners. It needs no
        write of its own (a release could fail in turn), moves no epoch, and the destinations
        are resumed in this very step. A slot rendezvous now gives to another node is handed
        over by the same step, the usual way. A slot memory holds at another epoch is first
        ``lost`` (its actors were writing under the old fence) and adopted here at the new one.
        """
        if not found:
            return
        self._slots.held.update(found)
        self._unresumed |= set(found)
        log.warning(
            "slots adopted node=%s count=%d held=%d (held in the database, unknown here: a claim's reply was lost)",
            self.node_id,
            len(found),
            len(self._slots.held),
        )

    async def _resume(self) -> None:
        """Schedule the destinations with work in the slots just claimed or adopted.

        A failed read (``Unavailable``: the readers met a store fault) is not the claim's
        failure: the slots stay held, and the read is tried again at the next step, which comes
        sooner while one is owed (``_next_step_in``); the dispatcher's catch-up every 30 s is
        too rare a backstop, and on a busy cluster it never comes.
        """
        self._unresumed &= set(self._slots.held)
        slots = set(self._unresumed)
        if not slots or self._leaving:  # leaving: ``owns`` is false for everything anyway
            return
        try:
            await self._dispatcher.resume(lambda url: slot_of(url) in slots)
        except STORE_FAULTS as error:
            self._failed("resume", error)
            return
        self._unresumed -= slots
        self._recovered("resume")

    def _lose(self, slots: set[int]) -> None:
        if not slots:
            return
        for slot in slots:
            self._slots.held.pop(slot, None)
            self._slots.leaving.discard(slot)
        self._dispatcher.stop(lambda url: slot_of(url) in slots)
        log.warning("slots lost node=%s count=%d (claimed by another node)", self.node_id, len(slots))

    async def _hand_over(self, slots: set[int]) -> None:
        """Let the slots' actors finish what they have in flight, then release the slots.

        A release that fails is tried again until it commits: it runs in the membership nursery,
        so an error escaping it would end the node. Meanwhile the slots stay held and leaving
        (renewed, owned by nobody's actors), and release is idempotent by epoch, so trying again
        after a release that committed but whose reply was lost changes nothing. The attempts
        end early if the slots go otherwise: lost to another node (the step drops them) or
        released by ``leave``. Only the epochs held when the hand-over began are released and
        forgotten: a slot lost meanwhile and taken again (a new epoch) is not this hand-over's.
        """
        epochs = {slot: self._slots.held[slot] for slot in slots if slot in self._slots.held}
        await self._dispatcher.drain(lambda url: slot_of(url) in slots)
        while True:
            still = {slot: epoch for slot, epoch in epochs.items() if self._slots.held.get(slot) == epoch}
            if not still:  # gone otherwise: whatever failed has nothing left to do
                self._failing.discard("hand-over")
                break
            try:
                await self._control(cluster_ops.release, node_id=self.node_id, held=still)
            except STORE_FAULTS as error:
                self._failed("hand-over", error)
                await trio.sleep(self._retry_s)
                continue
            self._recovered("hand-over")
            break
        for slot, epoch in epochs.items():
            if self._slots.held.get(slot) == epoch:
                self._slots.held.pop(slot)
                self._slots.leaving.discard(slot)
        log.info("slots handed over node=%s count=%d", self.node_id, len(still))

    async def leave(self, grace_s: float) -> None:
        """Stop cleanly: others take over at once, after what is in flight is recorded (at most
        ``grace_s``; requests still open then are abandoned and sent again by the new owner).

        The leases are renewed while the actors finish: the membership loop has stopped, and a
        lease shorter than the grace would otherwise run out mid-drain, another node would claim
        the slots and send again what is in flight here, and the outcomes recorded here would be
        refused. A store fault does not stop the leaving: the actors stop all the same, and slots
        whose release failed move when their leases run out, as if the node had died.
        """
        self._leaving = True
        self._wake.set()
        slots = set(self._slots.held)
        async with trio.open_nursery() as renewing:
            renewing.start_soon(self._renew_while_leaving)
            await self._leave_step("mark", cluster_ops.set_state, node_id=self.node_id, state="leaving")
            with trio.move_on_after(grace_s):
                await self._dispatcher.drain(lambda url: slot_of(url) in slots)
            renewing.cancel_scope.cancel()
        self._dispatcher.stop(lambda url: True)
        held = dict(self._slots.held)
        self._slots.held.clear()
        if held and not await self._leave_step("release", cluster_ops.release, node_id=self.node_id, held=held):
            log.warning(
                "node left without handing over id=%s slots=%d: the others take them when the leases run out",
                self.node_id,
                len(held),
            )
            return
        if await self._leave_step("forget", cluster_ops.forget, node_id=self.node_id):
            log.info("node left id=%s", self.node_id)

    async def _renew_while_leaving(self) -> None:
        """Renew this node's leases every fifth of the lease until cancelled (``leave``), dropping
        any slot the renewal no longer finds, as a step does."""
        while True:
            started = trio.current_time()
            try:
                held = await self._renew()
            except STORE_FAULTS as error:
                self._failed("renewal", error)
            else:
                self._recovered("renewal")
                self._renewed(held or {}, started)
            await trio.sleep(self._lease_s / 5)

    async def _leave_step(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> bool:
        """One write of ``leave``; a store fault is logged and reported as False, not raised."""
        try:
            await self._control(fn, **kwargs)
        except STORE_FAULTS as error:
            log.warning("leaving: %s failed node=%s reason=%s", what, self.node_id, error)
            return False
        return True

    # -- health --------------------------------------------------------------------------------------

    def _live_json(self) -> str:
        """This node's actors that hold anything (or whose breaker is not closed), for the others."""
        actors = [
            [a.url, a.queued, a.in_flight, a.breaker_state.value, a.breaker_since]
            for a in self._live_actors()
            if a.queued or a.in_flight or a.breaker_state is not BreakerState.CLOSED
        ]
        return json.dumps({"actors": actors, "count": len(self._live_actors()), "restarts": self._restarts()})

    def live_state(self) -> LiveState:
        """Every node's actors (this node's live, the others' as of their last heartbeat), each
        destination's owner, and the nodes."""
        view = self._view
        local = self._live_actors()
        if view is None:
            return LiveState(actors=local, actor_count=len(local), restarts=self._restarts())
        actors = list(local)
        count, restarts = len(local), self._restarts()
        nodes: list[NodeInfo] = []
        owned: dict[str, int] = {}
        for row in view.slots:
            if row.node_id is not None:
                owned[row.node_id] = owned.get(row.node_id, 0) + 1
        for node in view.nodes:
            live = json.loads(node.live or "{}")
            if node.id != self.node_id:
                if node.lease_expires_at > view.now:
                    actors.extend(
                        ActorStatistics(url, dict(q), dict(f), BreakerState(state), since)
                        for url, q, f, state, since in live.get("actors", [])
                    )
                    count += int(live.get("count", 0))
                restarts += int(live.get("restarts", 0))
            state = node.state if node.lease_expires_at > view.now else "dead"
            nodes.append(
                NodeInfo(
                    id=node.id,
                    address=node.address,
                    state=state,
                    last_heartbeat=node.heartbeat_at,
                    started=node.started_at,
                    destinations=len(local) if node.id == self.node_id else int(live.get("count", 0)),
                    slots=owned.get(node.id, 0),
                )
            )
        slot_owner = {row.slot: row.node_id or "" for row in view.slots}
        return LiveState(
            actors=actors,
            owner_of=lambda url: slot_owner.get(slot_of(url), ""),
            nodes=nodes,
            actor_count=count,
            restarts=restarts,
        )


#: Destinations with work, and the webhooks, are looked at this often even without notifications.
BACKSTOP_S = 30.0
RECONNECT_S = 1.0


class ClusterSync:
    """Keeps this node in step with the others through the database's notifications.

    - ``hookd_deliveries``: deliveries became due at these URLs: poke their actors (if owned here);
    - ``hookd_webhooks``: these webhooks changed: reload them, so URLs, secrets and statuses
      apply here too;
    - ``hookd_cluster``: a node joined, left or released slots: take another look now.

    A notification sent while this node was not listening is lost, so on every (re)connection,
    and every ``BACKSTOP_S`` anyway, the node catches up by reading the state itself.
    """

    CHANNELS = ("hookd_deliveries", "hookd_webhooks", cluster_ops.CLUSTER_CHANNEL)

    def __init__(
        self,
        backend: SharedBackend,
        *,
        node_id: str,
        deliveries: Callable[[list[str]], None],
        webhooks: Callable[[list[str]], Any],
        membership: Callable[[], None],
        catch_up: Callable[[], Any],
    ) -> None:
        self._backend = backend
        self._node_id = node_id
        self._deliveries = deliveries
        self._webhooks = webhooks
        self._membership = membership
        self._catch_up = catch_up

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            try:
                source = await trio.to_thread.run_sync(self._backend.listener, self.CHANNELS)
            except StoreFault as fault:
                log.warning("cannot listen for notifications reason=%s", fault.reason)
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep(RECONNECT_S)
                continue
            try:
                await self._catch_up()
                if not started:
                    task_status.started()
                    started = True
                await self._pump(source)
            except StoreFault as fault:
                log.warning("notifications interrupted reason=%s; catching up after reconnecting", fault.reason)
            except Unavailable as error:  # a read for a catch-up or a reload failed: the store is down
                log.warning("cannot read what changed reason=%s; catching up after reconnecting", error)
                if not started:  # as when it cannot listen: start, and catch up once it can read
                    task_status.started()
                    started = True
            finally:
                source.close()
            await trio.sleep(RECONNECT_S)

    async def _pump(self, source: Any) -> None:
        while True:
            with trio.move_on_after(BACKSTOP_S) as waited:
                await trio.lowlevel.wait_readable(source.fileno())
            if waited.cancelled_caught:
                await self._catch_up()
                continue
            changed: list[str] = []
            for channel, origin, items in source.drain():
                if origin == self._node_id:
                    continue
                if channel == "hookd_deliveries":
                    self._deliveries(items)
                elif channel == "hookd_webhooks":
                    changed.extend(items)
                else:
                    self._membership()
            if changed:
                await self._webhooks(changed)
