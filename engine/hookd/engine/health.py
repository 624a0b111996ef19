"""Rolling delivery figures, kept incrementally so a snapshot never scans the attempts table.

Every finished attempt is added to a per-minute bucket (kept for an hour) and a per-hour bucket
(kept for a day) of three series: its webhook, its destination URL, and the service. A bucket
holds counts by outcome and a latency histogram with geometric bounds (each 25 % above the
last), from which percentiles are interpolated to within a bucket's width. The 5-minute and
1-hour windows sum minute buckets; the 1-day window sums the 24 hour buckets (so it is aligned to
the hour). On start the buckets are rebuilt from the last day of stored attempts, once.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass

from hookd.engine.model import Outcome

#: Upper bounds of the latency histogram, in milliseconds: 0.5 ms ... ~70 s, 25 % apart.
BOUNDS_MS: list[float] = [0.5 * 1.25**i for i in range(54)]
WINDOWS_S = (300, 3600, 86400)


class Bucket:
    """Counts for one minute or hour. Sparse (histogram slot -> count), because most keys see
    few distinct latencies and ten thousand destinations must stay cheap to hold."""

    __slots__ = ("attempts", "errors", "histogram", "successes")

    def __init__(self) -> None:
        self.attempts = 0
        self.successes = 0
        self.errors: dict[str, int] = {}
        self.histogram: dict[int, int] = {}

    def add(self, duration_ms: float, outcome: Outcome) -> None:
        self.attempts += 1
        if outcome is Outcome.SUCCESS:
            self.successes += 1
        else:
            self.errors[outcome.value] = self.errors.get(outcome.value, 0) + 1
        slot = bisect.bisect_left(BOUNDS_MS, duration_ms)
        self.histogram[slot] = self.histogram.get(slot, 0) + 1

    def merge(self, other: Bucket) -> None:
        self.attempts += other.attempts
        self.successes += other.successes
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count
        for slot, count in other.histogram.items():
            self.histogram[slot] = self.histogram.get(slot, 0) + count


@dataclass(frozen=True)
class WindowFigures:
    window_s: int
    attempts: int
    successes: int
    success_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: dict[str, int]


def percentile(histogram: dict[int, int], fraction: float) -> float:
    """The ``fraction`` quantile, interpolated linearly inside the bucket it falls in."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for index, count in sorted(histogram.items()):
        if count and seen + count >= rank:
            low = BOUNDS_MS[index - 1] if index > 0 else 0.0
            high = BOUNDS_MS[index] if index < len(BOUNDS_MS) else BOUNDS_MS[-1] * 1.25
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS_MS[-1]


class Series:
    """One key's buckets and last-seen facts."""

    __slots__ = ("_cache", "hours", "last_error", "last_failure", "last_success", "minutes", "version")

    def __init__(self) -> None:
        self.minutes: dict[int, Bucket] = {}
        self.hours: dict[int, Bucket] = {}
        self.last_success = 0.0
        self.last_failure = 0.0
        self.last_error = ""
        self.version = 0
        self._cache: dict[int, tuple[int, int, WindowFigures]] = {}

    def add(self, when: float, duration_ms: float, outcome: Outcome, error: str) -> None:
        minute, hour = int(when // 60), int(when // 3600)
        self.minutes.setdefault(minute, Bucket()).add(duration_ms, outcome)
        self.hours.setdefault(hour, Bucket()).add(duration_ms, outcome)
        if outcome is Outcome.SUCCESS:
            self.last_success = max(self.last_success, when)
        elif when >= self.last_failure:
            self.last_failure = when
            self.last_error = error
        self.version += 1

    def prune(self, now: float) -> None:
        minute, hour = int(now // 60), int(now // 3600)
        for key in [k for k in self.minutes if k <= minute - 60]:
            del self.minutes[key]
        for key in [k for k in self.hours if k <= hour - 24]:
            del self.hours[key]

    def window(self, seconds: int, now: float) -> WindowFigures:
        """Figures over the last ``seconds``; recomputed only when an attempt arrived or time moved on."""
        slot = int(now // 60)
        cached = self._cache.get(seconds)
        if cached is not None and cached[0] == self.version and cached[1] == slot:
            return cached[2]
        total = Bucket()
        if seconds <= 3600:
            first = slot - seconds // 60 + 1
            for minute, bucket in self.minutes.items():
                if minute >= first:
                    total.merge(bucket)
        else:
            first = int(now // 3600) - seconds // 3600 + 1
            for hour, bucket in self.hours.items():
                if hour >= first:
                    total.merge(bucket)
        figures = WindowFigures(
            window_s=seconds,
            attempts=total.attempts,
            successes=total.successes,
            success_rate=total.successes / total.attempts if total.attempts else 0.0,
            p50_ms=percentile(total.histogram, 0.50),
            p95_ms=percentile(total.histogram, 0.95),
            p99_ms=percentile(total.histogram, 0.99),
            errors=dict(total.errors),
        )
        self._cache[seconds] = (self.version, slot, figures)
        return figures


SERVICE_KEY = "service"


class HealthAggregates:
    """Series per webhook, per destination and for the service, plus totals since start."""

    def __init__(self) -> None:
        self.webhooks: dict[str, Series] = {}
        self.destinations: dict[str, Series] = {}
        self.service = Series()
        #: (destination, outcome) -> attempts since the process started (Prometheus counters).
        self.totals: Counter[tuple[str, str]] = Counter()

    def add(self, webhook_id: str, url: str, when: float, duration_ms: float, outcome: Outcome, error: str) -> None:
        for series in (
            self.webhooks.setdefault(webhook_id, Series()),
            self.destinations.setdefault(url, Series()),
            self.service,
        ):
            series.add(when, duration_ms, outcome, error)
        self.totals[(url, outcome.value)] += 1

    def prune(self, now: float) -> None:
        for group in (self.webhooks, self.destinations):
            for key in list(group):
                group[key].prune(now)
                if not group[key].minutes and not group[key].hours:
                    del group[key]
        self.service.prune(now)


def no_figures(seconds: int) -> WindowFigures:
    return WindowFigures(seconds, 0, 0, 0.0, 0.0, 0.0, 0.0, {})
