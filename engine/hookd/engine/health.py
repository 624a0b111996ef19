"""Rolling delivery figures, kept in memory from counts the store persists per minute.

An attempt is counted in a *cell*: its webhook (or destination URL), the minute it started, its
outcome and its latency slot (a histogram with geometric bounds, each 25 % above the last). The
store keeps these counts in the same commits that record the attempts (``store/health_ops.py``),
so the figures survive a restart without re-reading a single attempt, and every node of a cluster
reads the same counts and so shows the same figures.

In memory each key has minute buckets (for an hour) and hour buckets (for a day). A bucket is a
dict from an encoded cell (outcome, slot) to a count. Figures arrive as absolute counts read from
the store (``set_cell``), so applying the same rows twice changes nothing; the difference to what
memory held is applied to the minute, the hour and, for destinations, the service as a whole.
The 5-minute and 1-hour windows sum minute buckets; the 1-day window sums the 24 hour buckets (so
it is aligned to the hour).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hookd.engine.model import Outcome

#: Upper bounds of the latency histogram, in milliseconds: 0.5 ms ... ~70 s, 25 % apart.
BOUNDS_MS: list[float] = [0.5 * 1.25**i for i in range(54)]
WINDOWS_S = (300, 3600, 86400)
SLOTS = len(BOUNDS_MS) + 1
OUTCOMES = list(Outcome)
_OUTCOME_INDEX = {outcome: index for index, outcome in enumerate(OUTCOMES)}
_SUCCESS = _OUTCOME_INDEX[Outcome.SUCCESS]

SERVICE_KEY = "service"
WEBHOOK = "w"
DESTINATION = "d"


def latency_slot(duration_ms: float) -> int:
    return bisect.bisect_left(BOUNDS_MS, duration_ms)


def cell(outcome: Outcome, slot: int) -> int:
    """One int per (outcome, latency slot): small dict keys for ten thousand destinations."""
    return _OUTCOME_INDEX[outcome] * SLOTS + slot


def cell_parts(code: int) -> tuple[Outcome, int]:
    index, slot = divmod(code, SLOTS)
    return OUTCOMES[index], slot


@dataclass(frozen=True, slots=True)
class WindowFigures:
    window_s: int
    attempts: int
    successes: int
    success_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: Mapping[str, int]


#: Shared by every window without errors (most of them): one empty mapping, not ten thousand.
_NO_ERRORS: Mapping[str, int] = MappingProxyType({})


def percentiles(histogram: dict[int, int], total: int, fractions: tuple[float, ...]) -> list[float]:
    """The quantiles at ``fractions`` (ascending) of ``total`` counts, each interpolated linearly
    inside the bucket it falls in, in one walk up the histogram."""
    if total == 0:
        return [0.0] * len(fractions)
    result: list[float] = []
    ranks = iter(fraction * total for fraction in fractions)
    rank = next(ranks)
    seen = 0
    for index, count in sorted(histogram.items()):
        while count and seen + count >= rank:
            low = BOUNDS_MS[index - 1] if index > 0 else 0.0
            high = BOUNDS_MS[index] if index < len(BOUNDS_MS) else BOUNDS_MS[-1] * 1.25
            result.append(low + (high - low) * max(0.0, rank - seen) / count)
            next_rank = next(ranks, None)
            if next_rank is None:
                return result
            rank = next_rank
        seen += count
    return result + [BOUNDS_MS[-1]] * (len(fractions) - len(result))


_REPORTED = (0.50, 0.95, 0.99)


def figures(seconds: int, cells: Mapping[int, int]) -> WindowFigures:
    attempts = successes = 0
    errors: dict[str, int] = {}
    histogram: dict[int, int] = {}
    for code, count in cells.items():
        if count <= 0:
            continue
        index, slot = divmod(code, SLOTS)
        attempts += count
        if index == _SUCCESS:
            successes += count
        else:
            name = OUTCOMES[index].value
            errors[name] = errors.get(name, 0) + count
        histogram[slot] = histogram.get(slot, 0) + count
    p50, p95, p99 = percentiles(histogram, attempts, _REPORTED)
    return WindowFigures(
        window_s=seconds,
        attempts=attempts,
        successes=successes,
        success_rate=successes / attempts if attempts else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        errors=errors or _NO_ERRORS,
    )


def no_figures(seconds: int) -> WindowFigures:
    return WindowFigures(seconds, 0, 0, 0.0, 0.0, 0.0, 0.0, _NO_ERRORS)


#: A series keeps (time unit, cell) -> count in one flat dict: ``unit << _SHIFT | cell``. Ten
#: thousand destinations each have two series, and a dict of dicts costs twice as much.
_SHIFT = 16
_CELLS = (1 << _SHIFT) - 1
assert SLOTS * len(OUTCOMES) <= _CELLS


class Series:
    """One key's counts and last-seen facts.

    Minutes of the last hour are kept by minute; older minutes are folded into their hour (so no
    attempt is counted in both), which is all a day's window needs. Each is one flat dict, the
    hours' made on first use, and one figure per window is cached.
    """

    __slots__ = ("_cache", "hours", "last_error", "last_failure", "last_success", "minutes", "version")

    def __init__(self) -> None:
        self.minutes: dict[int, int] = {}
        self.hours: dict[int, int] | None = None
        self.last_success = 0.0
        self.last_failure = 0.0
        self.last_error = ""
        self.version = 0
        self._cache: list[tuple[int, int, WindowFigures] | None] | None = None

    def get(self, minute: int, code: int) -> int:
        return self.minutes.get(minute << _SHIFT | code, 0)

    def add(self, minute: int, code: int, delta: int, *, keep_minute: bool = True) -> None:
        """Add ``delta`` to a cell of ``minute``; ``keep_minute`` False counts it in its hour
        straight away (a minute older than an hour, loaded at start)."""
        if delta == 0:
            return
        if keep_minute:
            key = minute << _SHIFT | code
            self.minutes[key] = self.minutes.get(key, 0) + delta
        else:
            self.add_hour(minute // 60, code, delta)
        self.version += 1

    def add_hour(self, hour: int, code: int, count: int) -> None:
        if self.hours is None:
            self.hours = {}
        key = hour << _SHIFT | code
        self.hours[key] = self.hours.get(key, 0) + count
        self.version += 1

    def note_last(self, last_success: float, last_failure: float, last_error: str) -> None:
        if last_success > self.last_success:
            self.last_success = last_success
        if last_failure >= self.last_failure and last_failure > 0:
            self.last_failure = last_failure
            self.last_error = last_error
        self.version += 1

    def prune(self, now: float) -> None:
        """Fold minutes older than an hour into their hours; drop hours older than a day.

        No window's figures change (a folded minute was already outside the hour's window and
        its hour is inside the day's; a dropped hour was outside the day's), so the cached
        figures stay valid: ``version`` is left alone."""
        oldest_minute = (int(now // 60) - 59) << _SHIFT
        folded = [k for k in self.minutes if k < oldest_minute]
        if folded:
            if self.hours is None:
                self.hours = {}
            hours = self.hours
            for key in folded:
                hour_key = ((key >> _SHIFT) // 60) << _SHIFT | (key & _CELLS)
                hours[hour_key] = hours.get(hour_key, 0) + self.minutes.pop(key)
        if self.hours:
            oldest_hour = (int(now // 3600) - 23) << _SHIFT
            for key in [k for k in self.hours if k < oldest_hour]:
                del self.hours[key]

    def empty(self) -> bool:
        return not self.minutes and not self.hours

    def by_minute(self) -> dict[int, Counter[int]]:
        """The kept minutes' cells: minute -> (cell -> count)."""
        result: dict[int, Counter[int]] = {}
        for key, count in self.minutes.items():
            result.setdefault(key >> _SHIFT, Counter())[key & _CELLS] += count
        return result

    def window(self, seconds: int, now: float) -> WindowFigures:
        """Figures over the last ``seconds`` (one of ``WINDOWS_S``); recomputed only when a count
        changed or time moved on far enough to change them: a minute for the 5-minute and 1-hour
        windows, an hour for the day's.

        Up to an hour: the minutes in range. A day: the hours of the last 24 hours (so it is
        aligned to the hour) and every kept minute (the last hour's)."""
        position = WINDOWS_S.index(seconds)
        period = int(now // 3600) if seconds > 3600 else int(now // 60)
        if self._cache is not None:
            cached = self._cache[position]
            if cached is not None and cached[0] == self.version and cached[1] == period:
                return cached[2]
        else:
            self._cache = [None] * len(WINDOWS_S)
        if seconds > 3600:
            first_hour = (period - seconds // 3600 + 1) << _SHIFT
            total: dict[int, int] = {}
            add = total.get
            for key, count in (self.hours or {}).items():
                if key >= first_hour:
                    code = key & _CELLS
                    total[code] = add(code, 0) + count
            for key, count in self.minutes.items():
                code = key & _CELLS
                total[code] = add(code, 0) + count
            self._cache[position] = (self.version, period, figures(seconds, total))
        else:
            self._minute_windows(period)
        cached = self._cache[position]
        assert cached is not None
        return cached[2]

    def _minute_windows(self, minute: int) -> None:
        """Both windows made of minutes, in one pass over them (a snapshot asks for each)."""
        short_s, long_s = WINDOWS_S[0], WINDOWS_S[1]
        first_short = (minute - short_s // 60 + 1) << _SHIFT
        first_long = (minute - long_s // 60 + 1) << _SHIFT
        short: dict[int, int] = {}
        long: dict[int, int] = {}
        add_short, add_long = short.get, long.get
        for key, count in self.minutes.items():
            if key >= first_long:
                code = key & _CELLS
                long[code] = add_long(code, 0) + count
                if key >= first_short:
                    short[code] = add_short(code, 0) + count
        assert self._cache is not None
        self._cache[0] = (self.version, minute, figures(short_s, short))
        self._cache[1] = (self.version, minute, figures(long_s, long))


@dataclass(frozen=True)
class MinuteFigures:
    start_s: int
    attempts: int
    successes: int
    p50_ms: float
    p95_ms: float


def by_minute(series: Series, now: float) -> list[MinuteFigures]:
    """The last hour minute by minute, oldest first, minutes without attempts left out (charts)."""
    first = int(now // 60) - 59
    result = []
    for minute, bucket in sorted(series.by_minute().items()):
        if minute >= first:
            totals = figures(60, bucket)
            if totals.attempts:
                result.append(
                    MinuteFigures(minute * 60, totals.attempts, totals.successes, totals.p50_ms, totals.p95_ms)
                )
    return result


class HealthAggregates:
    """Series per webhook, per destination and for the service, plus counts since start.

    The service's series is the sum of the destinations' (every attempt has exactly one).
    """

    def __init__(self) -> None:
        self.webhooks: dict[str, Series] = {}
        self.destinations: dict[str, Series] = {}
        self.service = Series()
        #: (destination, outcome) -> attempts seen since this process started (Prometheus counters).
        self.totals: Counter[tuple[str, str]] = Counter()
        self._counting = False

    def start_counting(self) -> None:
        """From now on, counts that grow are added to ``totals`` (the history loaded at start is not)."""
        self._counting = True

    def _series(self, kind: str, key: str) -> Series:
        group = self.webhooks if kind == WEBHOOK else self.destinations
        series = group.get(key)
        if series is None:
            series = group[key] = Series()
        return series

    def set_minute(
        self,
        kind: str,
        key: str,
        minute: int,
        cells: Mapping[tuple[str, int], int],
        now: float,
        *,
        loading: bool = False,
    ) -> None:
        """The store says ``minute`` of this key holds ``cells`` ((outcome, slot) -> count);
        bring memory to it (counts only ever grow, so only what grew is added).

        Minutes older than an hour live on only in their hour bucket, so only a load (which
        starts from nothing) counts them; seen again later they are left as they are.
        """
        recent = minute > int(now // 60) - 60
        if not recent and not loading:
            return
        series = self._series(kind, key)
        for (outcome, slot), count in cells.items():
            code = cell(Outcome(outcome), slot)
            delta = count - series.get(minute, code) if recent else count
            if delta <= 0:
                continue
            series.add(minute, code, delta, keep_minute=recent)
            if kind == DESTINATION:
                self.service.add(minute, code, delta, keep_minute=recent)
                if self._counting:
                    self.totals[(key, outcome)] += delta

    def add_hour(self, kind: str, key: str, hour: int, cells: Mapping[tuple[str, int], int]) -> None:
        """A folded hour from the store, loaded at start."""
        series = self._series(kind, key)
        for (outcome, slot), count in cells.items():
            code = cell(Outcome(outcome), slot)
            series.add_hour(hour, code, count)
            if kind == DESTINATION:
                self.service.add_hour(hour, code, count)

    def note_last(self, kind: str, key: str, last_success: float, last_failure: float, last_error: str) -> None:
        self._series(kind, key).note_last(last_success, last_failure, last_error)
        if kind == DESTINATION:
            self.service.note_last(last_success, last_failure, last_error)

    def prune(self, now: float) -> None:
        for group in (self.webhooks, self.destinations):
            for key in list(group):
                group[key].prune(now)
                if group[key].empty():
                    del group[key]
        self.service.prune(now)
        # A destination without an attempt for a day has no series left; its counters go with it,
        # so the metrics do not name every URL ever used (Prometheus takes a series that ends).
        for total in [total for total in self.totals if total[0] not in self.destinations]:
            del self.totals[total]
