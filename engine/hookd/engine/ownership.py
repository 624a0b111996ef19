"""Which destinations this node runs actors for, and the fence its writes for them carry.

A single node (the embedded SQLite store) owns every destination and needs no fence. In a
cluster (``cluster.Membership``) each destination URL belongs to one hash slot, each slot to one
node at a time under a lease in the database; the dispatcher asks ``owns`` before it starts an
actor, and the actor asks ``may_send`` right before every request.
"""

from __future__ import annotations

from typing import Protocol

from hookd.engine.store.cluster_ops import Fence


class Ownership(Protocol):
    def owns(self, url: str) -> bool:
        """Whether this node runs ``url``'s actor now."""

    def may_send(self, url: str) -> bool:
        """Whether a request to ``url`` may start now: the lease is held and not about to lapse."""

    def fence(self, url: str) -> Fence | None:
        """What writes for ``url`` must carry (None: nothing to check)."""


class SingleNode:
    """The only node: it owns everything, always."""

    def owns(self, url: str) -> bool:
        return True

    def may_send(self, url: str) -> bool:
        return True

    def fence(self, url: str) -> Fence | None:
        return None
