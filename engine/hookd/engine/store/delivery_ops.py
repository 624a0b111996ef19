"""Publishing and delivery bookkeeping, run inside the writer's transaction.

Deliveries that become due are announced on ``DELIVERIES_CHANNEL`` with the commit (payload: the
destination URL), so the node that owns the destination loads them without waiting for a poll.

A publish whose fan-out is too large for one short commit is *staged*: its deliveries are
written in chunks first, each chunk its own commit, and the events last. Actors only ever load
deliveries whose event exists (every query here joins ``events``), so a staged delivery cannot
be sent before the publish has stored all of it; an abandoned staging (a crash, a caller that
gave up) is found in ``publishing`` and removed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from hookd.engine.catalogue import PING_TYPE
from hookd.engine.errors import FailedPrecondition, NotFound
from hookd.engine.jobs import AttemptResult, Job, PreparedEvent, PublishResult, internal_failure
from hookd.engine.model import DeliveryState, InactivePolicy, Status
from hookd.engine.store import health_ops
from hookd.engine.store.cluster_ops import Fence, check_fence
from hookd.engine.store.sql import Tx, UniqueViolation, marks

#: How long an idempotency key is remembered.
IDEMPOTENCY_WINDOW_S = 24 * 3600.0
#: Notification channel: payload ``<destination URL>`` whose deliveries became due.
DELIVERIES_CHANNEL = "hookd_deliveries"

_STATE_FOR = {
    (Status.ACTIVE.value, InactivePolicy.QUEUE.value): DeliveryState.PENDING,
    (Status.ACTIVE.value, InactivePolicy.DISCARD.value): DeliveryState.PENDING,
    (Status.INACTIVE.value, InactivePolicy.QUEUE.value): DeliveryState.HELD,
    (Status.INACTIVE.value, InactivePolicy.DISCARD.value): DeliveryState.DISCARDED,
}

_INSERT_DELIVERY = (
    "INSERT INTO deliveries (event_id, webhook_id, destination, event_type, state, "
    "next_attempt_at, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


_INSERT_EVENT = (
    "INSERT INTO events (id, type, create_time, envelope, idempotency_key, delivery_count) VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Subscriber:
    webhook_id: str
    url: str
    status: str
    inactive_policy: str


#: The first key of the advisory locks on event types' subscribers (``lock_subscribers``); the
#: second is the type's hash. Two-key locks never meet hookd's one-key ones.
_SUBSCRIBERS_LOCK = 0x686F6F6B
_SUBSCRIBERS_LOCKED = "delivery_ops.subscribers_locked"


def _type_key(resource: str, event: str) -> list[int]:
    return [_SUBSCRIBERS_LOCK, zlib.crc32(f"{resource}.{event}".encode()) - 2**31]  # into int4's range


def lock_subscribers(tx: Tx, resource: str, event: str) -> None:
    """Declare, till the transaction ends, that it writes deliveries from the event type's
    subscribers as it read them (PostgreSQL; SQLite writes one transaction at a time).

    A change of a webhook's URL, status or policy, or its deletion, updates the webhook's
    waiting deliveries, and a publish on another node that read the webhook before the change
    committed writes its delivery after: the change misses it, and it keeps the old URL (no
    actor sends there: PENDING for ever) or state (HELD while active, say). So a publish takes
    its type's lock shared before it reads, and after such a change ``wait_for_subscriber_reads``
    waits for the publishes under way; then ``catch_up_waiting`` sets right what they wrote.

    A shared lock in memory: publishes do not wait for one another (only behind a catch-up's
    wait, see there), and, unlike ``FOR SHARE`` on each subscriber, it writes nothing (a row
    lock writes its row, and a multixact once several nodes share it). The change itself takes
    no lock: holding one exclusive through the update of a long backlog would stall every
    node's writer publishing the type, and taken while the transaction holds row locks it can
    close a deadlock with a publish's batch.
    """
    if tx.backend != "postgresql" or (resource, event, _SUBSCRIBERS_LOCKED) in tx.memo:
        return
    tx.execute("SELECT pg_advisory_xact_lock_shared(?, ?)", _type_key(resource, event))
    tx.memo[(resource, event, _SUBSCRIBERS_LOCKED)] = True


def wait_for_subscriber_reads(tx: Tx, resource: str, event: str) -> None:
    """Return once every publish of the type that had read its subscribers when this began has
    ended (PostgreSQL): the type's lock taken exclusive and let go at once, as a barrier.

    Run as a write's ``first`` (a ``FollowUp``), before the transaction holds any row lock: a
    publish holding the lock shared may be waiting for a row lock, and this must not hold it.
    While it waits, new publishes of the type queue behind it (PostgreSQL grants a lock in
    order), for as long as the longest one under way takes.
    """
    if tx.backend != "postgresql":
        return
    tx.execute("SELECT pg_advisory_lock(?, ?)", _type_key(resource, event))
    tx.execute("SELECT pg_advisory_unlock(?, ?)", _type_key(resource, event))


def subscribers(tx: Tx, resource: str, event: str) -> list[Subscriber]:
    rows = tx.all(
        "SELECT id, url, status, inactive_policy FROM webhooks WHERE resource = ? AND event = ? ORDER BY seq",
        [resource, event],
    )
    return [Subscriber(*row) for row in rows]


def _seen_key(tx: Tx, event: PreparedEvent) -> PublishResult | None:
    """The event already published under this idempotency key in the last day, if any; an older
    holder of the key gives it up."""
    if not event.idempotency_key:
        return None
    seen = tx.one(
        "SELECT id, create_time, delivery_count FROM events WHERE idempotency_key = ?", [event.idempotency_key]
    )
    if seen is None:
        return None
    if seen[1] > event.create_time - IDEMPOTENCY_WINDOW_S:
        return PublishResult(seen[0], seen[2], duplicate=True)
    tx.execute("UPDATE events SET idempotency_key = NULL WHERE id = ?", [seen[0]])
    return None


def _insert_event(tx: Tx, event: PreparedEvent, delivery_count: int) -> PublishResult | None:
    """Insert the event row; None when another publish took its idempotency key meanwhile."""
    row = [event.id, event.type, event.create_time, event.envelope, event.idempotency_key or None, delivery_count]
    if not event.idempotency_key:  # nothing another publish could hold: no savepoint to pay for
        tx.execute(_INSERT_EVENT, row)
        return None
    try:
        tx.execute("SAVEPOINT event_key")
        tx.execute(_INSERT_EVENT, row)
        tx.execute("RELEASE event_key")
    except UniqueViolation:
        # A concurrent publish (another node's) committed the same key first: it wins.
        tx.execute("ROLLBACK TO event_key")
        tx.execute("RELEASE event_key")
        return _seen_key(tx, event)
    return None


def _insert_deliveries(tx: Tx, event: PreparedEvent, hooks: Sequence[Subscriber], result: PublishResult | None) -> None:
    """One delivery per subscriber; the pending ones are announced and, given ``result``,
    handed back as jobs for the local actors."""
    for hook in hooks:
        state = _STATE_FOR[(hook.status, hook.inactive_policy)]
        delivery_id = tx.scalar(
            _INSERT_DELIVERY,
            [
                event.id,
                hook.webhook_id,
                hook.url,
                event.type,
                state.value,
                event.create_time,
                event.create_time,
                event.create_time,
            ],
        )
        if state is DeliveryState.PENDING and result is not None:
            tx.notify(DELIVERIES_CHANNEL, hook.url)
            result.jobs.append((hook.url, Job(int(delivery_id), hook.webhook_id, event.id, event.envelope, 0)))


def publish(tx: Tx, events: Sequence[PreparedEvent]) -> list[PublishResult]:
    """Store events and one delivery per matching webhook; all or nothing (one savepoint)."""
    cache: dict[tuple[str, str], list[Subscriber]] = {}
    results: list[PublishResult] = []
    for event in events:
        seen = _seen_key(tx, event)
        if seen is not None:
            results.append(seen)
            continue
        pair = (event.resource, event.event)
        if pair not in cache:
            lock_subscribers(tx, *pair)
            cache[pair] = subscribers(tx, *pair)
        hooks = cache[pair]
        seen = _insert_event(tx, event, len(hooks))
        if seen is not None:
            results.append(seen)
            continue
        result = PublishResult(event.id, len(hooks), duplicate=False)
        _insert_deliveries(tx, event, hooks, result)
        results.append(result)
    return results


# -- staged publishing: a fan-out too large for one short commit ---------------------------------


def _still_subscribed(tx: Tx, event: PreparedEvent, hooks: Sequence[Subscriber]) -> list[Subscriber]:
    """``hooks`` as they are stored now: a webhook deleted or moved to another event type since
    they were read is left out, and one whose URL, status or policy changed is taken as it is.

    The subscribers of a staged publish are read before each chunk is written, outside its
    transaction; a delivery written from a stale copy would go to the old URL, or stay PENDING
    for a webhook that is gone or inactive, where no change of the webhook would ever reach it.
    """
    lock_subscribers(tx, event.resource, event.event)
    current: dict[str, Subscriber] = {}
    ids = [hook.webhook_id for hook in hooks]
    for index in range(0, len(ids), 500):
        chunk = ids[index : index + 500]
        for row in tx.all(
            f"SELECT id, url, status, inactive_policy FROM webhooks WHERE id IN ({marks(len(chunk))}) "
            "AND resource = ? AND event = ?",
            [*chunk, event.resource, event.event],
        ):
            current[row[0]] = Subscriber(*row)
    return [current[hook_id] for hook_id in ids if hook_id in current]


def stage_deliveries(tx: Tx, parts: Sequence[tuple[PreparedEvent, Sequence[Subscriber]]]) -> None:
    """Write one chunk of deliveries ahead of their events (invisible to actors until then),
    each from its webhook as stored when the chunk commits; a later change of the webhook
    reaches these rows as it reaches any of its deliveries."""
    for event, hooks in parts:
        tx.execute(
            "INSERT INTO publishing (event_id, create_time) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING",
            [event.id, event.create_time],
        )
        _insert_deliveries(tx, event, _still_subscribed(tx, event, hooks), None)


def finish_staged(
    tx: Tx, events: Sequence[PreparedEvent], counts: Sequence[int]
) -> tuple[list[PublishResult], list[str]]:
    """Write the events whose deliveries are staged, which makes those deliveries visible; an
    event whose idempotency key was taken meanwhile drops its staged deliveries instead.
    Returns the results and the destinations that now have deliveries due (all announced)."""
    results: list[PublishResult] = []
    published: list[str] = []
    for event, read in zip(events, counts, strict=True):
        # Webhooks deleted while the chunks were written have no row: count what was written.
        count = int(tx.scalar("SELECT COUNT(*) FROM deliveries WHERE event_id = ?", [event.id])) if read else 0
        seen = _seen_key(tx, event) or _insert_event(tx, event, count)
        tx.execute("DELETE FROM publishing WHERE event_id = ?", [event.id])
        if seen is not None:
            tx.execute("DELETE FROM deliveries WHERE event_id = ?", [event.id])
            results.append(seen)
        else:
            results.append(PublishResult(event.id, count, duplicate=False))
            published.append(event.id)
    urls: list[str] = []
    for index in range(0, len(published), 500):
        chunk = published[index : index + 500]
        urls.extend(
            row[0]
            for row in tx.all(
                f"SELECT DISTINCT destination FROM deliveries WHERE event_id IN ({marks(len(chunk))}) "
                "AND state = 'PENDING'",
                chunk,
            )
        )
    for url in urls:
        tx.notify(DELIVERIES_CHANNEL, url)
    return results, sorted(set(urls))


def drop_staged(tx: Tx, older_than: float | None = None, event_ids: Sequence[str] = ()) -> int:
    """Remove stagings that will never finish: the named ones, or all older than ``older_than``."""
    if older_than is not None:
        event_ids = [row[0] for row in tx.all("SELECT event_id FROM publishing WHERE create_time < ?", [older_than])]
    dropped = 0
    for event_id in event_ids:
        if tx.one("SELECT 1 FROM events WHERE id = ?", [event_id]) is None:
            dropped += tx.execute("DELETE FROM deliveries WHERE event_id = ?", [event_id]).rowcount
        tx.execute("DELETE FROM publishing WHERE event_id = ?", [event_id])
    return dropped


# -- attempts ------------------------------------------------------------------------------------


def _insert_attempts(tx: Tx, attempts: Sequence[tuple[int, str, AttemptResult]]) -> None:
    """Attempts as one multi-row ``INSERT``; callers keep ``attempts`` to ``MAX_MERGED``."""
    params: list[object] = []
    for delivery_id, webhook_id, attempt in attempts:
        error = attempt.error
        if attempt.location:
            error = f"{error} (location: {attempt.location})"
        params += (
            delivery_id,
            webhook_id,
            attempt.url,
            attempt.start_time,
            attempt.duration_ms,
            attempt.status_code,
            attempt.outcome.value,
            error,
            attempt.response_excerpt,
        )
        health_ops.counts(tx).add(
            webhook_id, attempt.url, attempt.start_time, attempt.duration_ms, attempt.outcome, attempt.error
        )
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(attempts))
    tx.execute(
        "INSERT INTO attempts (delivery_id, webhook_id, url, start_time, duration_ms, status_code, "
        f"outcome, error, response_excerpt) VALUES {rows}",
        params,
    )


#: Successes written by one pair of statements at most (``record_successes``): a bound on the
#: statements' size, and on how many different texts the drivers prepare and cache.
MAX_MERGED = 32


@dataclass(frozen=True, slots=True)
class Success:
    """An attempt the destination took, to record (``record_successes``)."""

    job: Job
    attempt: AttemptResult
    now: float
    fence: Fence | None = None


def record_successes(tx: Tx, items: Sequence[Success]) -> None:
    """The destinations took them. A delivery held or cancelled meanwhile was still delivered.

    The outcomes a batch of the writer gathers are mostly successes, each from its own actor:
    written together, they take two statements rather than two each."""
    for chunk in _chunks_of_distinct_deliveries(items):
        for item in chunk:
            check_fence(tx, item.fence)
        _insert_attempts(tx, [(item.job.delivery_id, item.job.webhook_id, item.attempt) for item in chunk])
        times = [value for item in chunk for value in (item.job.delivery_id, item.now)]
        tx.execute(
            "UPDATE deliveries SET state = ?, attempt_count = attempt_count + 1, last_error = '', "
            f"update_time = CASE id {' '.join(['WHEN ? THEN ?'] * len(chunk))} END "
            f"WHERE id IN ({marks(len(chunk))})",
            [DeliveryState.SUCCEEDED.value, *times, *(item.job.delivery_id for item in chunk)],
        )


def _chunks_of_distinct_deliveries(items: Sequence[Success]) -> list[list[Success]]:
    """``items`` in order, cut into chunks of at most ``MAX_MERGED`` in which no delivery comes
    twice: one ``UPDATE ... WHERE id IN`` changes a row once, however often it is listed."""
    chunks: list[list[Success]] = []
    chunk: list[Success] = []
    ids: set[int] = set()
    for item in items:
        if len(chunk) == MAX_MERGED or item.job.delivery_id in ids:
            chunks.append(chunk)
            chunk, ids = [], set()
        chunk.append(item)
        ids.add(item.job.delivery_id)
    if chunk:
        chunks.append(chunk)
    return chunks


def record_failure(
    tx: Tx, job: Job, attempt: AttemptResult, now: float, retry_at: float | None, fence: Fence | None = None
) -> None:
    """Record a failed attempt; schedule the retry at ``retry_at``, or mark the delivery FAILED."""
    check_fence(tx, fence)
    _insert_attempts(tx, [(job.delivery_id, job.webhook_id, attempt)])
    if retry_at is None:
        tx.execute(
            "UPDATE deliveries SET state = ?, attempt_count = attempt_count + 1, last_error = ?, "
            "update_time = ? WHERE id = ? AND state = ?",
            [DeliveryState.FAILED.value, attempt.error, now, job.delivery_id, DeliveryState.PENDING.value],
        )
    # Still counted, but a delivery held or cancelled meanwhile keeps that state.
    tx.execute(
        "UPDATE deliveries SET attempt_count = attempt_count + 1, last_error = ?, "
        "next_attempt_at = ?, update_time = ? WHERE id = ? AND state IN (?, ?)",
        [
            attempt.error,
            retry_at if retry_at is not None else now,
            now,
            job.delivery_id,
            DeliveryState.PENDING.value,
            DeliveryState.HELD.value,
        ],
    )


def existing_events(tx: Tx, event_ids: Sequence[str]) -> set[str]:
    """The events among ``event_ids`` still stored, locked against retention until this
    transaction ends (on PostgreSQL; see retention_ops), so a delivery made due again never
    loses the event it sends."""
    unique = sorted(set(event_ids))
    if not unique:
        return set()
    rows = tx.all(f"SELECT id FROM events WHERE id IN ({marks(len(unique))}){tx.dialect.for_share}", unique)
    return {row[0] for row in rows}


def retry_delivery(tx: Tx, webhook_id: str, delivery_id: int, now: float) -> str:
    """Make a finished delivery PENDING again, due now; return its destination URL."""
    row = tx.one(
        "SELECT state, event_type, event_id FROM deliveries WHERE id = ? AND webhook_id = ?", [delivery_id, webhook_id]
    )
    if row is None:
        raise NotFound(f"webhooks/{webhook_id}/deliveries/{delivery_id} not found")
    if row[0] in (DeliveryState.PENDING.value, DeliveryState.HELD.value):
        raise FailedPrecondition(f"delivery is {row[0]}; only a finished delivery can be retried")
    if row[1] == PING_TYPE:
        raise FailedPrecondition("a test ping is not retried; send a new one with TestWebhook")
    if not existing_events(tx, [row[2]]):
        raise FailedPrecondition(
            f"its event events/{row[2]} was removed after the retention period (--retention); "
            "there is nothing left to send"
        )
    # Shared: a change of the URL or status committed meanwhile by another node would miss
    # this row, which it sees as finished.
    hook = tx.one(f"SELECT url, status FROM webhooks WHERE id = ?{tx.dialect.for_share}", [webhook_id])
    if hook is None:
        raise FailedPrecondition(f"webhooks/{webhook_id} was deleted; its deliveries cannot be retried")
    if hook[1] != Status.ACTIVE.value:
        raise FailedPrecondition(f"webhooks/{webhook_id} is inactive; activate it before retrying")
    tx.execute(
        "UPDATE deliveries SET state = ?, next_attempt_at = ?, destination = ?, update_time = ? WHERE id = ?",
        [DeliveryState.PENDING.value, now, hook[0], now, delivery_id],
    )
    tx.notify(DELIVERIES_CHANNEL, hook[0])
    return str(hook[0])


# -- bulk recovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryFilter:
    """Which finished deliveries RecoverDeliveries sends again: of one webhook (or all), made
    in [start, end), in one of ``states``; never test pings, and only up to ``up_to_id``, the
    newest delivery when the call came, so the work has an end."""

    webhook_id: str | None
    start: float | None
    end: float | None
    states: tuple[DeliveryState, ...]
    up_to_id: int

    def where(self, after_id: int) -> tuple[str, list[object]]:
        clauses = [f"d.state IN ({marks(len(self.states))})", "d.id > ?", "d.id <= ?", "d.event_type != ?"]
        params: list[object] = [*(state.value for state in self.states), after_id, self.up_to_id, PING_TYPE]
        if self.webhook_id is not None:
            clauses.append("d.webhook_id = ?")
            params.append(self.webhook_id)
        if self.start is not None:
            clauses.append("d.create_time >= ?")
            params.append(self.start)
        if self.end is not None:
            clauses.append("d.create_time < ?")
            params.append(self.end)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class RecoveredBatch:
    """One batch of a recovery: how far it looked, how many it made due, where they go."""

    last_id: int
    recovered: int
    urls: list[str]
    done: bool


def newest_delivery_id(tx: Tx) -> int:
    return int(tx.scalar("SELECT COALESCE(MAX(id), 0) FROM deliveries"))


def count_recoverable(tx: Tx, selection: RecoveryFilter, after_id: int) -> int:
    """How many deliveries past ``after_id`` a recovery would send again now."""
    clause, params = selection.where(after_id)
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id AND w.status = 'ACTIVE' "
            f"WHERE {clause} AND EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)",
            params,
        )
    )


def recover_batch(tx: Tx, selection: RecoveryFilter, after_id: int, limit: int, now: float) -> RecoveredBatch:
    """Make up to ``limit`` matching deliveries past ``after_id`` PENDING again, due now, at their
    webhook's current URL (one more attempt each, as RetryDelivery does); those of inactive or
    deleted webhooks, or whose event is gone, are left as they are."""
    clause, params = selection.where(after_id)
    rows = tx.all(
        f"SELECT d.id, d.webhook_id, d.event_id FROM deliveries d WHERE {clause} ORDER BY d.id LIMIT ?",
        [
            *params,
            limit,
        ],
    )
    if not rows:
        return RecoveredBatch(selection.up_to_id, 0, [], done=True)
    hook_ids = sorted({row[1] for row in rows})
    urls = dict(
        tx.all(
            f"SELECT id, url FROM webhooks WHERE id IN ({marks(len(hook_ids))}) AND status = 'ACTIVE'"
            f"{tx.dialect.for_share}",
            hook_ids,
        )
    )
    events = existing_events(tx, [row[2] for row in rows if row[1] in urls])
    by_hook: dict[str, list[int]] = {}
    for delivery_id, webhook_id, event_id in rows:
        if webhook_id in urls and event_id in events:
            by_hook.setdefault(webhook_id, []).append(int(delivery_id))
    recovered = 0
    for webhook_id, ids in by_hook.items():
        # The state is checked again on the row: one that changed meanwhile is left alone.
        recovered += tx.execute(
            f"UPDATE deliveries SET state = ?, next_attempt_at = ?, destination = ?, update_time = ? "
            f"WHERE id IN ({marks(len(ids))}) AND state IN ({marks(len(selection.states))})",
            [
                DeliveryState.PENDING.value,
                now,
                urls[webhook_id],
                now,
                *ids,
                *(state.value for state in selection.states),
            ],
        ).rowcount
        tx.notify(DELIVERIES_CHANNEL, urls[webhook_id])
    touched = sorted({urls[webhook_id] for webhook_id in by_hook})
    return RecoveredBatch(int(rows[-1][0]), recovered, touched, done=len(rows) < limit)


def insert_test_ping(tx: Tx, event: PreparedEvent, webhook_id: str, url: str) -> Job:
    """Store a TestWebhook ping as a delivery due now, for the destination's actor to send once
    through its limits like any other; the request carries the delivery's own message id."""
    tx.execute(
        "INSERT INTO events (id, type, create_time, envelope, idempotency_key, delivery_count) "
        "VALUES (?, ?, ?, ?, NULL, 1)",
        [event.id, event.type, event.create_time, event.envelope],
    )
    now = event.create_time
    delivery_id = tx.scalar(
        _INSERT_DELIVERY, [event.id, webhook_id, url, event.type, DeliveryState.PENDING.value, now, now, now]
    )
    tx.notify(DELIVERIES_CHANNEL, url)
    return Job(int(delivery_id), webhook_id, event.id, event.envelope, 0, single_attempt=True)


def abandon_ping(tx: Tx, delivery_id: int, now: float) -> None:
    """The caller stopped waiting for its ping: if it was not sent yet, it never will be."""
    tx.execute(
        "UPDATE deliveries SET state = ?, last_error = 'test abandoned before it was sent', update_time = ? "
        "WHERE id = ? AND state = ? AND attempt_count = 0",
        [DeliveryState.CANCELLED.value, now, delivery_id, DeliveryState.PENDING.value],
    )


def settled_state(tx: Tx, delivery_id: int) -> tuple[DeliveryState, int]:
    """A delivery's state and attempt count (to wait for a ping's outcome)."""
    row = tx.one("SELECT state, attempt_count FROM deliveries WHERE id = ?", [delivery_id])
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return DeliveryState(row[0]), int(row[1])


def record_crash(tx: Tx, job: Job, now: float, max_attempts: int, fence: Fence | None = None) -> bool:
    """The actor crashed while this delivery was in flight: count it as a failed attempt, so a
    delivery whose sending keeps crashing ends FAILED instead of looping. True when it did."""
    row = tx.one("SELECT destination, attempt_count FROM deliveries WHERE id = ?", [job.delivery_id])
    if row is None:
        return False
    final = job.single_attempt or int(row[1]) + 1 >= max_attempts
    record_failure(tx, job, internal_failure(row[0], now), now, None if final else now, fence)
    return final
