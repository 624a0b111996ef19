"""Ownership in the database: nodes, hash slots, leases and the epochs that fence old owners.

Only a shared (PostgreSQL) store has these tables; a single node owns everything and passes no
fence.
"""

from __future__ import annotations

from dataclasses import dataclass

from hookd.engine.store.sql import Tx, marks


class LeaseLost(Exception):
    """This node no longer owns the destination's slot: its write was refused, and it must stop."""


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of ownership a write carries: it commits only while ``node_id`` still holds ``slot``
    at ``epoch``. Every claim bumps the epoch, so a former owner that was paused or cut off and
    comes back can never write for a destination it lost."""

    slot: int
    epoch: int
    node_id: str


def check_fence(tx: Tx, fence: Fence | None) -> None:
    """Raise ``LeaseLost`` unless ``fence`` still holds.

    The writing node's own row in ``nodes`` is read ``FOR SHARE`` (once per transaction) before
    the slot's epoch is read. Whoever claims a slot from a node locks that node's row first
    (``claim``), so a claim waits for the old owner's writes in progress to commit, and a write
    that starts after a claim sees the new epoch: an old owner's write and a new owner's first
    read never interleave. One row per node, not per slot, so writers and the node's own lease
    renewal queue on a single lock and can never deadlock over slots.
    """
    if fence is None:
        return
    node_key = ("fence-node", fence.node_id)
    if node_key not in tx.memo:
        tx.memo[node_key] = tx.one("SELECT id FROM nodes WHERE id = ? FOR SHARE", [fence.node_id]) is not None
    slot_key = ("fence-slot", fence.slot)
    if slot_key not in tx.memo:
        tx.memo[slot_key] = tx.one("SELECT node_id, epoch FROM slots WHERE slot = ?", [fence.slot])
    current = tx.memo[slot_key]
    if not tx.memo[node_key] or current is None or current[0] != fence.node_id or int(current[1]) != fence.epoch:
        raise LeaseLost(f"slot {fence.slot} is no longer held by {fence.node_id} at epoch {fence.epoch}")


#: Hash slots destinations are spread over; each is leased to one node at a time. Enough for an
#: even spread over many nodes, few enough that one statement renews or claims a node's share.
SLOT_COUNT = 256
#: Notification channel for membership news (a node joined, left, or released slots).
CLUSTER_CHANNEL = "hookd_cluster"


class NodeIdInUse(Exception):
    """Another live node already uses this node id."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    id: str
    address: str
    state: str
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    live: str


@dataclass(frozen=True, slots=True)
class SlotRow:
    slot: int
    node_id: str | None
    epoch: int
    expires_at: float


@dataclass(frozen=True)
class ClusterView:
    """The database's view of the cluster, read in one go, with the database's clock."""

    now: float
    nodes: list[NodeRow]
    slots: list[SlotRow]


def db_now(tx: Tx) -> float:
    """The database's clock: every lease is judged by it, never by a node's own."""
    return float(tx.scalar("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"))


def register(tx: Tx, node_id: str, address: str, lease_s: float) -> float:
    """Join: refuse an id a live node holds, forget what an earlier run with this id held."""
    now = db_now(tx)
    row = tx.one("SELECT lease_expires_at, state FROM nodes WHERE id = ?", [node_id])
    if row is not None and row[0] > now and row[1] == "active":
        raise NodeIdInUse(f"node id {node_id!r} is used by a live node (its lease runs {row[0] - now:.1f} s more)")
    tx.execute(
        "INSERT INTO nodes (id, address, state, started_at, heartbeat_at, lease_expires_at) "
        "VALUES (?, ?, 'active', ?, ?, ?) ON CONFLICT (id) DO UPDATE SET address = excluded.address, "
        "state = 'active', started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
        "lease_expires_at = excluded.lease_expires_at, live = '{}'",
        [node_id, address, now, now, now + lease_s],
    )
    tx.execute("UPDATE slots SET node_id = NULL, expires_at = 0 WHERE node_id = ?", [node_id])
    tx.notify(CLUSTER_CHANNEL, "joined")
    return now


def renew(tx: Tx, node_id: str, address: str, lease_s: float, live: str) -> dict[int, int] | None:
    """Heartbeat and renew the leases on this node's slots; return the slots it still holds
    (slot -> epoch), or None when the node's row is gone (it was pruned as dead).

    Every slot the database says this node holds is renewed and returned, not only those the
    node believes it holds: a claim whose COMMIT succeeded but whose reply was lost shows up
    here, for the node to adopt (``Membership._adopt``) rather than renew it forever unused."""
    now = db_now(tx)
    updated = tx.execute(
        "UPDATE nodes SET heartbeat_at = ?, lease_expires_at = ?, address = ?, live = ? WHERE id = ?",
        [now, now + lease_s, address, live, node_id],
    ).rowcount
    if updated == 0:
        return None
    rows = tx.all("UPDATE slots SET expires_at = ? WHERE node_id = ? RETURNING slot, epoch", [now + lease_s, node_id])
    return {int(slot): int(epoch) for slot, epoch in rows}


def view(tx: Tx) -> ClusterView:
    now = db_now(tx)
    nodes = [
        NodeRow(*row)
        for row in tx.all(
            "SELECT id, address, state, started_at, heartbeat_at, lease_expires_at, live FROM nodes ORDER BY id"
        )
    ]
    slots = [
        SlotRow(int(r[0]), r[1], int(r[2]), float(r[3]))
        for r in tx.all("SELECT slot, node_id, epoch, expires_at FROM slots ORDER BY slot")
    ]
    return ClusterView(now, nodes, slots)


def claim(tx: Tx, node_id: str, slots: list[int], lease_s: float) -> dict[int, int]:
    """Take the slots among ``slots`` that are free or whose lease expired; each claim bumps the
    slot's epoch. The condition is on the slot's own row, so a renewal and a claim of one slot are
    ordered by its row lock: exactly one of them wins."""
    if not slots:
        return {}
    # Lock the current holders' rows first (see check_fence), in a fixed order.
    tx.all(
        f"SELECT id FROM nodes WHERE id IN (SELECT node_id FROM slots WHERE slot IN ({marks(len(slots))})) "
        "ORDER BY id FOR UPDATE",
        slots,
    )
    now = db_now(tx)
    rows = tx.all(
        f"UPDATE slots SET node_id = ?, epoch = epoch + 1, expires_at = ?, claimed_at = ? "
        f"WHERE slot IN ({marks(len(slots))}) AND (node_id IS NULL OR expires_at < ?) RETURNING slot, epoch",
        [node_id, now + lease_s, now, *slots, now],
    )
    return {int(slot): int(epoch) for slot, epoch in rows}


def release(tx: Tx, node_id: str, held: dict[int, int]) -> None:
    """Give slots up at once (a clean hand-over), only where this node still holds them.

    Conditioned on the epoch, so running it again changes nothing: a release whose reply was
    lost can be retried, and it never frees a slot claimed again since (by anyone)."""
    for slot, epoch in held.items():
        tx.execute(
            "UPDATE slots SET node_id = NULL, expires_at = 0 WHERE slot = ? AND node_id = ? AND epoch = ?",
            [slot, node_id, epoch],
        )
    tx.notify(CLUSTER_CHANNEL, "released")


def set_state(tx: Tx, node_id: str, state: str) -> None:
    tx.execute("UPDATE nodes SET state = ? WHERE id = ?", [state, node_id])
    tx.notify(CLUSTER_CHANNEL, state)


def forget(tx: Tx, node_id: str) -> None:
    tx.execute("DELETE FROM nodes WHERE id = ?", [node_id])
    tx.notify(CLUSTER_CHANNEL, "left")


def prune_nodes(tx: Tx, dead_for_s: float) -> int:
    """Forget nodes whose lease ran out ``dead_for_s`` ago (their slots were claimed long since)."""
    return tx.execute("DELETE FROM nodes WHERE lease_expires_at < ?", [db_now(tx) - dead_for_s]).rowcount
