"""Health counts as stored: merged across commits, folded into hours, loaded the same way twice.

In-process against each backend's real store, fast; the acceptance tests in test_health.py go
through the server.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial

import pytest

from hookd.engine.health import DESTINATION, WEBHOOK, WINDOWS_S, HealthAggregates
from hookd.engine.model import Outcome
from hookd.engine.store import health_ops, webhook_ops
from hookd.engine.store.backend import Backend
from hookd.engine.store.sql import Tx
from tests.support.webhooks import stored_webhook

pytestmark = pytest.mark.backends

NOW = time.time()


def record(store: Backend, *attempts: tuple[str, str, float, float, Outcome]) -> None:
    """One commit recording ``attempts`` (webhook, url, start, duration ms, outcome)."""

    def body(tx: Tx) -> None:
        counts = health_ops.counts(tx)
        for webhook, url, start, duration, outcome in attempts:
            counts.add(webhook, url, start, duration, outcome, "" if outcome is Outcome.SUCCESS else "HTTP 500")
        counts.flush(tx)

    store.write(body)


def aggregates(rows: health_ops.HealthRows, *, loading: bool = True) -> HealthAggregates:
    result = HealthAggregates()
    for kind, key, minute, cells in rows.minutes:
        result.set_minute(kind, key, minute, cells, NOW, loading=loading)
    for kind, key, hour, cells in rows.hours:
        result.add_hour(kind, key, hour, cells)
    return result


def day(result: HealthAggregates, kind: str, key: str) -> tuple[int, int]:
    series = (result.webhooks if kind == WEBHOOK else result.destinations)[key]
    figures = series.window(WINDOWS_S[2], NOW)
    return figures.attempts, figures.successes


def test_encoding_round_trips() -> None:
    cells = Counter({("SUCCESS", 3): 10, ("SERVER_ERROR", 40): 2})
    assert health_ops.decode(health_ops.encode(cells)) == cells
    assert health_ops.encode(Counter()) == "{}"


def test_counts_of_several_commits_add_up(store: Backend) -> None:
    start = (int(NOW // 60) - 1) * 60 + 10.0  # three attempts within one minute
    record(store, ("wh_a", "https://a.example/", start, 5.0, Outcome.SUCCESS))
    record(store, ("wh_a", "https://a.example/", start + 1, 5.0, Outcome.SUCCESS))
    record(store, ("wh_a", "https://a.example/", start + 2, 900.0, Outcome.SERVER_ERROR))
    rows = store.read(lambda tx: health_ops.load(tx, NOW))
    (minute,) = [cells for kind, key, _, cells in rows.minutes if kind == WEBHOOK]
    assert sum(minute.values()) == 3
    assert sum(count for (outcome, _), count in minute.items() if outcome == "SUCCESS") == 2
    last = {(kind, key): (success, failure, error) for kind, key, success, failure, error in rows.last}
    assert last[(WEBHOOK, "wh_a")] == (start + 1, start + 2, "HTTP 500")


def test_old_minutes_fold_into_hours_and_the_day_is_unchanged(store: Backend) -> None:
    url = "https://b.example/"
    for minutes_ago in (600, 590, 300, 5, 1):  # two hours of history and recent minutes
        record(store, ("wh_b", url, NOW - minutes_ago * 60, 20.0, Outcome.SUCCESS))
        record(store, ("wh_b", url, NOW - minutes_ago * 60, 20.0, Outcome.TIMEOUT))
    before = aggregates(store.read(lambda tx: health_ops.load(tx, NOW)))
    while store.write(lambda tx: health_ops.compact(tx, NOW)):
        pass
    rows = store.read(lambda tx: health_ops.load(tx, NOW))
    assert all(minute >= int(NOW // 60) - health_ops.MINUTE_ROWS_KEPT - 60 for _, _, minute, _ in rows.minutes)
    assert rows.hours, "nothing was folded"
    after = aggregates(rows)
    for kind, key in ((WEBHOOK, "wh_b"), (DESTINATION, url)):
        assert day(after, kind, key) == day(before, kind, key) == (10, 5)
    assert day_service(after) == (10, 5)


def day_service(result: HealthAggregates) -> tuple[int, int]:
    figures = result.service.window(WINDOWS_S[2], NOW)
    return figures.attempts, figures.successes


def test_applying_the_same_rows_twice_counts_them_once(store: Backend) -> None:
    record(store, ("wh_c", "https://c.example/", NOW - 10, 3.0, Outcome.SUCCESS))
    rows = store.read(lambda tx: health_ops.changed_since(tx, NOW - 60))
    result = HealthAggregates()
    result.start_counting()
    for _ in range(2):
        for kind, key, minute, cells in rows.minutes:
            result.set_minute(kind, key, minute, cells, NOW)
    assert day(result, WEBHOOK, "wh_c") == (1, 1)
    assert result.totals == Counter({("https://c.example/", "SUCCESS"): 1})


def test_last_seen_facts_of_keys_gone_for_a_day_are_dropped(store: Backend) -> None:
    """Every start loads all of ``health_last``: the rows of a deleted webhook, or of a URL no
    webhook uses, go once a day old; those of webhooks and URLs in use stay however old."""
    kept = stored_webhook("wh_kept", url="https://kept.example/")
    store.write(partial(webhook_ops.insert_webhook, webhook=kept, limit=10))
    record(
        store,
        ("wh_kept", "https://kept.example/", NOW - 10, 3.0, Outcome.SUCCESS),
        ("wh_gone", "https://gone.example/", NOW - 10, 3.0, Outcome.SUCCESS),
    )

    def last_keys(now: float) -> set[tuple[str, str]]:
        while store.write(partial(health_ops.compact, now=now)):
            pass
        return {(kind, key) for kind, key, *_ in store.read(lambda tx: health_ops.load(tx, now)).last}

    everything = {
        (WEBHOOK, "wh_kept"),
        (DESTINATION, kept.url),
        (WEBHOOK, "wh_gone"),
        (DESTINATION, "https://gone.example/"),
    }
    assert last_keys(NOW) == everything
    assert last_keys(NOW + 2 * health_ops.DAY_S) == {(WEBHOOK, "wh_kept"), (DESTINATION, kept.url)}


def test_counters_of_a_destination_unused_for_a_day_are_forgotten() -> None:
    """The Prometheus counters name destinations: one without an attempt for a day leaves them,
    so their number does not grow with every URL ever used."""
    result = HealthAggregates()
    result.start_counting()
    minute = int(NOW // 60)
    result.set_minute(DESTINATION, "https://old.example/", minute - 1, {("SUCCESS", 3): 2}, NOW)
    later = NOW + health_ops.DAY_S + 3600
    result.set_minute(DESTINATION, "https://busy.example/", int(later // 60), {("SUCCESS", 3): 1}, later)
    assert set(result.totals) == {("https://old.example/", "SUCCESS"), ("https://busy.example/", "SUCCESS")}
    result.prune(later)
    assert result.totals == Counter({("https://busy.example/", "SUCCESS"): 1})
