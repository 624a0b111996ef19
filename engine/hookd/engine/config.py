"""Engine settings, with the documented defaults."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from hookd.engine.breaker import BreakerPolicy
from hookd.engine.destinations import DestinationPolicy
from hookd.engine.retry import RetryPolicy


def default_node_id() -> str:
    """The host name and a random suffix: unique per process, readable in health."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to know; the server builds it from flags and environment."""

    #: A SQLite file path, or a ``postgresql://`` URL (cluster mode).
    database: str = "var/hookd.db"
    #: ``NORMAL`` survives a process crash (kill -9); ``FULL`` also a power cut, at a cost.
    synchronous: str = "NORMAL"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    destinations: DestinationPolicy = field(default_factory=DestinationPolicy)
    #: Requests per second per destination URL when its webhooks set none.
    default_rate_limit: float = 1000.0
    #: Requests in flight per destination URL.
    max_in_flight: int = 16
    #: Deliveries an actor holds in memory; the rest wait on disk.
    queue_size: int = 256
    #: An actor with nothing to do for this long stops; the next delivery starts it again.
    actor_idle_s: float = 30.0
    #: How long the previous secret keeps signing after RotateSecret, by default.
    secret_grace_s: float = 24 * 3600.0
    #: Most bytes of JSON in one event's data and related data together.
    max_event_bytes: int = 256 * 1024
    #: Most events in one PublishEvents call.
    max_batch_events: int = 1000
    #: Read connections for queries.
    readers: int = 4
    #: Most webhooks one event type may have (each publish of it fans out to all of them).
    max_webhooks_per_type: int = 1000
    #: Most deliveries one publish call may create (events x subscribed webhooks).
    max_deliveries_per_call: int = 100_000
    #: Most deliveries written in one commit; a larger fan-out is staged over several.
    publish_chunk: int = 5000
    #: This node's id in a cluster (a shared PostgreSQL store); unique among live nodes.
    node_id: str = field(default_factory=default_node_id)
    #: Seconds a node's leases last without renewal: how soon a dead node's destinations move.
    lease_s: float = 10.0
    #: Settled deliveries, their attempts and unneeded events are removed once this old; 0 keeps
    #: everything.
    retention_s: float = 30 * 86400.0
    #: An active webhook whose every attempt failed for this long is disabled; 0 never.
    auto_disable_after_s: float = 5 * 86400.0
    #: Rows per commit for retention and RecoverDeliveries: short commits, so other work
    #: commits in between.
    maintenance_batch: int = 1000
