"""Attempt outcomes as the writer stores them: successes next to each other in a batch are
written together, each with its own figures. In-process against each backend's real store,
fast; the acceptance tests deliver through the server (test_delivery.py)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
import trio

from hookd.engine.jobs import AttemptResult, Job
from hookd.engine.model import DeliveryState, Outcome
from hookd.engine.store import delivery_ops
from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Tx
from hookd.engine.store.writer import Writer

pytestmark = pytest.mark.backends

NOW = time.time()
URL = "https://example.com/hooks"


def _pending_deliveries(store: Backend, count: int) -> list[int]:
    def insert(tx: Tx) -> list[int]:
        return [
            int(
                tx.scalar(
                    "INSERT INTO deliveries (event_id, webhook_id, destination, event_type, state, "
                    "next_attempt_at, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    ["evt_1", "wh_1", URL, "order.created", DeliveryState.PENDING.value, NOW, NOW, NOW],
                )
            )
            for _ in range(count)
        ]

    return store.write(insert)


def _success(delivery_id: int) -> delivery_ops.Success:
    """A success whose every figure is told apart by its delivery id."""
    attempt = AttemptResult(
        url=URL,
        start_time=NOW + delivery_id,
        duration_ms=float(delivery_id),
        status_code=200,
        outcome=Outcome.SUCCESS,
        error="",
        response_excerpt=f"ok {delivery_id}",
    )
    return delivery_ops.Success(Job(delivery_id, "wh_1", "evt_1", "{}", 0), attempt, NOW + 2 * delivery_id)


async def test_successes_next_to_each_other_are_written_together_each_with_its_own_figures(store: Backend) -> None:
    ids = _pending_deliveries(store, 2 * delivery_ops.MAX_MERGED + 6)
    writer = Writer(store)
    merged_calls: list[int] = []
    one_by_one: list[int] = []
    committed: list[bool] = []

    def write_many(tx: Tx, items: list[Any]) -> None:
        merged_calls.append(len(items))
        delivery_ops.record_successes(tx, items)

    def write_one(tx: Tx, item: delivery_ops.Success) -> None:
        one_by_one.append(item.job.delivery_id)  # only if the merged pass failed
        delivery_ops.record_successes(tx, [item])

    def other_write(tx: Tx) -> None:
        tx.execute("INSERT INTO meta (key, value) VALUES ('other', 'x')")

    middle = len(ids) // 2
    async with trio.open_nursery() as nursery:
        # All queued before the writer runs, so they share one transaction; the write in the
        # middle is not an outcome, so it splits the successes in two runs.
        for index, delivery_id in enumerate(ids):
            if index == middle:
                await writer.submit(other_write, committed.append)
            success = _success(delivery_id)
            await writer.submit(partial(write_one, item=success), committed.append, merge=(write_many, success))
        await nursery.start(writer.run)
        while len(committed) < len(ids) + 1:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    assert committed == [True] * (len(ids) + 1)
    assert writer.commits == 1
    assert merged_calls == [middle, len(ids) - middle]
    assert one_by_one == []
    deliveries = store.read(
        lambda tx: tx.all("SELECT id, state, attempt_count, last_error, update_time FROM deliveries ORDER BY id")
    )
    assert [tuple(row) for row in deliveries] == [
        (delivery_id, DeliveryState.SUCCEEDED.value, 1, "", NOW + 2 * delivery_id) for delivery_id in ids
    ]
    attempts = store.read(
        lambda tx: tx.all(
            "SELECT delivery_id, start_time, duration_ms, status_code, outcome, response_excerpt FROM attempts "
            "ORDER BY id"
        )
    )
    assert [tuple(row) for row in attempts] == [
        (delivery_id, NOW + delivery_id, float(delivery_id), 200, Outcome.SUCCESS.value, f"ok {delivery_id}")
        for delivery_id in ids
    ]
    assert store.read(lambda tx: tx.scalar("SELECT value FROM meta WHERE key = 'other'")) == "x"


def test_a_delivery_twice_in_one_merged_write_counts_both_and_keeps_the_later(store: Backend) -> None:
    """One ``UPDATE ... WHERE id IN`` changes a row once however often it is listed: a delivery
    that comes twice starts a new statement."""
    (delivery_id,) = _pending_deliveries(store, 1)
    first = _success(delivery_id)
    second = delivery_ops.Success(first.job, first.attempt, first.now + 100.0)
    store.write(lambda tx: delivery_ops.record_successes(tx, [first, second]))
    row = store.read(lambda tx: tx.one("SELECT attempt_count, update_time FROM deliveries WHERE id = ?", [delivery_id]))
    assert tuple(row) == (2, second.now)
    assert store.read(lambda tx: tx.scalar("SELECT count(*) FROM attempts WHERE delivery_id = ?", [delivery_id])) == 2
