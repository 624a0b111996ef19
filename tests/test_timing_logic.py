"""Retry schedule, circuit breaker, rate limiter and the engine's wall clock, driven by trio's MockClock
(no real sleeps)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from hookd.engine.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from hookd.engine.clock import Clock
from hookd.engine.model import Status
from hookd.engine.ratelimit import TokenBucket
from hookd.engine.registry import WebhookRegistry
from hookd.engine.retry import RetryPolicy
from hookd.engine.validation import WebhookInput
from tests.support.engine import local_engine
from tests.support.webhooks import stored_webhook


def test_retry_schedule_is_capped_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=8, base_s=30, cap_s=3600)
    rng = random.Random(7)
    for attempt in range(1, 8):
        ceiling = min(3600, 30 * 2 ** (attempt - 1))
        draws = [policy.delay(attempt, rng) for _ in range(400)]
        assert all(d is not None and 0 <= d <= ceiling for d in draws)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(d for d in draws if d is not None) < ceiling * 0.1
        assert max(d for d in draws if d is not None) > ceiling * 0.9
    assert policy.delay(8, rng) is None
    assert policy.delay(2, rng, retry_after_s=120) == 120
    assert policy.delay(2, rng, retry_after_s=10**6) == 3600


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read through a call, so mypy does not narrow the attribute across transitions."""
    return breaker.state


async def test_breaker_opens_probes_once_and_closes(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown_s=30, max_cooldown_s=100))
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    await trio.sleep(29.9)
    assert not breaker.allow()
    await trio.sleep(0.2)
    assert breaker.allow()  # the single probe
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()
    breaker.record_failure()  # failed probe: open again, cool-down doubled
    assert state(breaker) is BreakerState.OPEN
    await trio.sleep(59)
    assert not breaker.allow()
    await trio.sleep(1.1)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()


async def test_breaker_cooldown_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown_s=30, max_cooldown_s=100))
    breaker.record_failure()
    for expected in (30, 60, 100, 100):
        assert breaker.reopen_at() == trio.current_time() + expected
        await trio.sleep(expected)
        assert breaker.allow()
        breaker.record_failure()


async def test_token_bucket_paces_requests(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=10)
    start = trio.current_time()
    for _ in range(10):  # the burst
        await bucket.acquire()
    assert trio.current_time() == start
    for _ in range(20):
        await bucket.acquire()
    assert abs(trio.current_time() - start - 2.0) < 1e-6
    bucket.set_rate(1)
    before = trio.current_time()
    await bucket.acquire()
    await bucket.acquire()
    assert trio.current_time() - before >= 1.0


async def test_released_probe_lets_the_next_request_probe(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown_s=10))
    breaker.record_failure()
    await trio.sleep(10)
    assert breaker.allow() and not breaker.allow()
    breaker.release_probe()  # the probe was never sent
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_wall_time_follows_a_stepped_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system clock stepped ten minutes after start-up (NTP correcting a clock that booted
    wrong): signed timestamps and stored times follow it, and a wall time still maps to the trio
    time at which the wall clock will read it. The step is the one stand-in: this machine's clock
    cannot be stepped by a test."""

    async def main() -> None:
        clock = Clock()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 600.0)
        assert abs(clock.now() - (real() + 600.0)) < 1.0
        assert abs(clock.to_trio(clock.now() + 5.0) - (trio.current_time() + 5.0)) < 1.0

    trio.run(main)


async def test_under_the_mock_clock_wall_time_is_the_mock_clocks(autojump_clock: trio.testing.MockClock) -> None:
    clock = Clock()
    start = clock.now()
    await trio.sleep(3600)
    assert clock.now() - start == pytest.approx(3600)
    assert clock.to_trio(start + 7200) == pytest.approx(trio.current_time() + 3600)


def test_a_shared_url_takes_the_lowest_rate_a_webhook_without_one_counting_as_the_default() -> None:
    registry = WebhookRegistry(default_rate=1000.0)
    url = "https://example.com/hooks"
    registry.put(stored_webhook("wh_default", url=url))
    assert registry.rate_for(url) == 1000.0
    registry.put(stored_webhook("wh_fast", url=url, event="updated", rate_limit=50_000.0))
    assert registry.rate_for(url) == 1000.0  # the webhook without a rate asks for the default
    registry.put(stored_webhook("wh_slow", url=url, event="deleted", rate_limit=5.0))
    assert registry.rate_for(url) == 5.0
    registry.put(stored_webhook("wh_slow", url=url, event="deleted", rate_limit=5.0, status=Status.INACTIVE))
    registry.remove("wh_default")
    assert registry.rate_for(url) == 50_000.0  # alone, a webhook sets its own rate, above the default too
    registry.remove("wh_fast")
    assert registry.rate_for(url) == 1000.0  # no active webhook: the default


async def test_snapshots_stay_fresh_after_the_wall_clock_steps_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watchers asking within 0.1 s share a snapshot. That window is timed on trio's clock: timed
    on the wall clock, a step back of an hour served the same snapshot, frozen, for an hour."""
    engine = local_engine(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        first = await engine.health_snapshot()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600.0)
        await engine.create_webhook(WebhookInput(resource="order", event="created", url="http://127.0.0.1:9/h"))
        await trio.sleep(0.2)
        later = await engine.health_snapshot()
        assert later is not first and len(later.webhooks) == 1
        nursery.cancel_scope.cancel()
