"""Health counts as stored: merged across commits, folded into hours, loaded the same way twice.

In-process against each backend's real store, fast; the acceptance tests in test_health.py go
through the server.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
import trio

from hookd.engine.clock import Clock
from hookd.engine.config import EngineConfig
from hookd.engine.health import DESTINATION, WEBHOOK, WINDOWS_S, HealthAggregates
from hookd.engine.maintenance import Maintenance
from hookd.engine.model import Outcome
from hookd.engine.store import health_ops, webhook_ops
from hookd.engine.store.backend import Backend
from hookd.engine.store.postgres import PostgresBackend
from hookd.engine.store.sql import Tx
from hookd.engine.store.writer import Writer
from tests.support.plans import write_planned
from tests.support.stores import reopened, wait_for_a_lock_wait
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
        store.write(partial(health_ops.forget, now=now))
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


def attempts_of(
    webhooks: Sequence[str], urls: Sequence[str], start: float, outcome: Outcome
) -> list[tuple[str, str, float, float, Outcome]]:
    """One attempt per webhook, the webhooks taking the URLs in turn, a second apart from ``start``."""
    return [(webhook, urls[n % len(urls)], start + n, 5.0, outcome) for n, webhook in enumerate(webhooks)]


def test_counts_of_many_keys_merge_into_the_stored_rows(store: Backend) -> None:
    """A commit lists many keys at once (webhooks, destinations, minutes), some stored already
    and some new: each stored row gains exactly that commit's attempts."""
    minute = (int(NOW // 60) - 5) * 60
    webhooks = [f"wh_{n}" for n in range(9)]
    m0, m1, m2 = (f"https://m{n}.example/" for n in range(3))
    commits = [
        attempts_of(webhooks[:6], [m0, m1], minute, Outcome.SUCCESS),
        attempts_of(webhooks[3:], [m1], minute + 10, Outcome.SERVER_ERROR),
        attempts_of(webhooks[::2], [m0], minute + 60, Outcome.TIMEOUT),
        attempts_of(webhooks, [m0, m2], minute + 61, Outcome.SUCCESS),
    ]
    expected: Counter[tuple[str, str, int, str]] = Counter()
    for attempts in commits:
        record(store, *attempts)
        for webhook, url, start, _, outcome in attempts:
            for kind, key in ((WEBHOOK, webhook), (DESTINATION, url)):
                expected[(kind, key, int(start // 60), outcome.value)] += 1
    stored: Counter[tuple[str, str, int, str]] = Counter()
    for kind, key, at, cells in store.read(lambda tx: health_ops.load(tx, NOW)).minutes:
        for (outcome_name, _), count in cells.items():
            stored[(kind, key, at, outcome_name)] += count
    assert stored == expected


def test_stored_counts_are_the_rows_of_exactly_the_keys_asked_for(store: Backend) -> None:
    """The primary-key lookups return what the list of rows read (``(kind, key, minute) IN
    (VALUES ...)``, a scan on SQLite) returned: the rows of the keys asked for, on minute rows
    and on hour rows alike, and nothing for a key, minute or kind without a row."""
    old, recent = NOW - 5 * 3600, NOW - 120
    record(store, *attempts_of(["wh_x", "wh_y"], ["https://x.example/"], old, Outcome.SUCCESS))
    record(store, *attempts_of(["wh_x", "wh_z"], ["https://x.example/"], recent, Outcome.TIMEOUT))
    while store.write(partial(health_ops.compact, now=NOW)):
        pass

    def asked(unit_s: int, at: float) -> list[health_ops.RowKey]:
        when = int(at // unit_s)
        return [
            (WEBHOOK, "wh_x", when),
            (WEBHOOK, "wh_y", when),
            (DESTINATION, "https://x.example/", when),
            (WEBHOOK, "wh_x", when - 1),  # no row: another minute or hour
            (DESTINATION, "wh_x", when),  # no row: the other kind
            (WEBHOOK, "wh_unknown", when),
        ]

    def both(tx: Tx, table: str, unit: str, keys: list[health_ops.RowKey]) -> tuple[dict[Any, str], dict[Any, str]]:
        by_key = health_ops.stored_counts(tx, table, unit, keys)
        listed = tx.all(
            f"SELECT kind, key, {unit}, counts FROM {table} WHERE (kind, key, {unit}) IN "
            f"(VALUES {', '.join(['(?, ?, ?)'] * len(keys))})",
            [value for row_key in keys for value in row_key],
        )
        return by_key, {(kind, key, int(when)): counts for kind, key, when, counts in listed}

    for table, unit, keys, present in (
        ("health_minutes", "minute", asked(60, recent), 2),  # wh_x and the URL (wh_y: none recent)
        ("health_hours", "hour", asked(3600, old), 3),
    ):
        by_key, listed = store.write(partial(both, table=table, unit=unit, keys=keys))
        assert by_key == listed, table
        assert len(by_key) == present and all(health_ops.decode(counts) for counts in by_key.values()), table


@pytest.mark.sqlite_only
def test_merging_and_folding_read_each_key_by_its_primary_key(store: Backend) -> None:
    """SQLite's plans (the same on an empty file as on a full one: hookd keeps no statistics).
    Every commit of attempt outcomes reads the stored minute rows of its keys: by primary key,
    not by a scan of ``health_minutes``, which holds two hours of minutes for every key in use
    (the scan cost 6 ms per commit at 100,000 rows, in the writer). Compaction deletes and reads
    by key too, and finds the keys with old minutes through the minute index."""
    record(store, *attempts_of(["wh_p", "wh_q"], ["https://p.example/"], NOW - 5 * 3600, Outcome.SUCCESS))

    def commit(tx: Tx) -> None:
        counts = health_ops.counts(tx)
        for webhook, url, start, duration, outcome in attempts_of(
            ["wh_p", "wh_q", "wh_r"], ["https://p.example/", "https://q.example/"], NOW - 30, Outcome.SUCCESS
        ):
            counts.add(webhook, url, start, duration, outcome, "")
        counts.flush(tx)

    _, flushed = write_planned(store, commit)
    folded, compacted = write_planned(store, partial(health_ops.compact, now=NOW))
    assert folded == 3
    (read,) = [planned for planned in flushed if "health_minutes" in planned.sql]
    assert not read.scans(), read.plan
    assert "SEARCH h USING PRIMARY KEY (kind=? AND key=? AND minute=?)" in read.plan
    assert {planned.sql.split()[0] for planned in compacted} == {"SELECT", "DELETE"}
    for planned in compacted:
        assert not planned.scans(), (planned.sql, planned.plan)
        if "DISTINCT" in planned.sql:  # the keys with old minutes: the old rows only
            assert any("INDEX health_minutes_minute (minute<?)" in line for line in planned.plan), planned.plan
        else:
            assert any("USING PRIMARY KEY (kind=? AND key=?" in line for line in planned.plan), planned.plan


@pytest.mark.sqlite_only
def test_forgetting_reads_the_webhooks_once_not_once_per_key(store: Backend) -> None:
    """SQLite's plans of ``forget``: the keys in use come from one read of ``webhooks`` per
    statement. Looked up key by key (``NOT EXISTS``), each destination's URL would be a scan of
    every webhook, there being no index on ``url``: a second for 10,000 keys and 5,000
    webhooks."""
    _, planned = write_planned(store, partial(health_ops.forget, now=NOW))
    forgetting = [statement for statement in planned if "health_last" in statement.sql]
    assert len(forgetting) == 2
    for statement in forgetting:
        assert not any("CORRELATED" in line for line in statement.plan), statement.plan
        assert sum("webhooks" in line for line in statement.plan) == 1, statement.plan


def test_two_compactions_of_the_same_minutes_at_once_count_them_once(store: Backend) -> None:
    """Housekeeping handed over between nodes, or a node resuming from a pause, can compact the
    same minute rows twice at once. On PostgreSQL the second transaction begins while the first,
    which has folded the rows, is yet to commit: it sees the rows too, and its delete waits for
    the first. Only what its own delete removed may go into its hours, so the ten attempts stay
    ten (they were twenty). SQLite has one writer at a time: there the second begins after the
    first commits."""
    url = "https://overlap.example/"
    record(store, *attempts_of([f"wh_{n}" for n in range(10)], [url], NOW - 5 * 3600, Outcome.SUCCESS))
    other = reopened(store)
    folded, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first(tx: Tx) -> int:
        keys = health_ops.compact(tx, NOW)
        folded.set()
        release.wait(30)
        return keys

    def run(name: str, write: Callable[[], int]) -> None:
        try:
            results[name] = write()
        except BaseException as error:  # reported by the test's thread below
            results[name] = error

    threads = [
        threading.Thread(target=run, args=("first", lambda: store.write(first))),
        threading.Thread(target=run, args=("second", lambda: other.write(partial(health_ops.compact, now=NOW)))),
    ]
    try:
        threads[0].start()
        assert folded.wait(30)
        threads[1].start()
        if isinstance(store, PostgresBackend):
            wait_for_a_lock_wait(store)  # the second compaction waits for the first
    finally:
        release.set()
        for thread in threads:
            if thread.is_alive():  # one never started, should the first not fold, has nothing to join
                thread.join(60)
        other.close()
    assert results["first"] == 11 and not isinstance(results["second"], BaseException), results
    rows = store.read(lambda tx: health_ops.load(tx, NOW))
    assert not rows.minutes
    hours = Counter({(kind, key): sum(cells.values()) for kind, key, _, cells in rows.hours})
    assert hours[(DESTINATION, url)] == 10
    assert all(hours[(WEBHOOK, f"wh_{n}")] == 1 for n in range(10))


async def test_a_housekeeping_pass_forgets_old_counts_once_however_many_batches_it_folds(
    store: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``forget`` reads every hour row and every last-seen fact a day old, whatever is folded:
    a pass runs it once, not once per batch of keys that ``compact`` folds (one key a batch
    here)."""
    monkeypatch.setattr(health_ops, "compact", partial(health_ops.compact, keys=1))
    statements: list[str] = []
    execute = Tx.execute

    def noted(tx: Tx, sql: str, params: Sequence[Any] = ()) -> Any:
        statements.append(sql)
        return execute(tx, sql, params)

    monkeypatch.setattr(Tx, "execute", noted)
    record(store, *attempts_of(["wh_s", "wh_t", "wh_u"], ["https://s.example/"], NOW - 5 * 3600, Outcome.SUCCESS))
    writer = Writer(store)
    maintenance = Maintenance(
        EngineConfig(retention_s=0, auto_disable_after_s=0),
        Clock(),
        writer,
        leads=lambda: True,
        shared=False,
        disabled=lambda _: None,
    )
    passes = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for _ in range(2):  # four keys to fold, then none
            statements.clear()
            report = await maintenance.run_once(NOW)
            forgetting = [sql for sql in statements if sql.lstrip().startswith("DELETE FROM health_last")]
            passes.append((report.health_keys_folded, len(forgetting)))
        nursery.cancel_scope.cancel()
    (folded, busy), (nothing, idle) = passes
    assert (folded, nothing) == (4, 0)
    assert busy == idle > 0
