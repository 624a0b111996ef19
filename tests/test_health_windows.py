"""Rolling windows against a brute-force count of the same attempts, as time moves on.

The windows are cached and recomputed only when a count changes or time moves far enough to
change them, and minutes are folded into hours as they age: none of that may change a figure.
In-process and fast."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.engine.health import BOUNDS_MS, OUTCOMES, WINDOWS_S, Series, cell, figures, percentiles

START_MINUTE = 29_000_000  # about 2025: any minute will do


def _expected(attempts: list[tuple[int, int, int]], seconds: int, now: float) -> Counter[int]:
    """The cells of ``attempts`` (minute, cell, count) that fall in the window, counted one by one."""
    minute, hour = int(now // 60), int(now // 3600)
    total: Counter[int] = Counter()
    for at, code, count in attempts:
        inside = at // 60 > hour - 24 if seconds > 3600 else at > minute - seconds // 60
        if inside:
            total[code] += count
    return total


steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=200),  # minutes that pass before this step
        st.lists(  # attempts recorded in this step: (minutes ago, outcome, latency slot, count)
            st.tuples(
                st.integers(min_value=0, max_value=3),
                st.sampled_from(OUTCOMES),
                st.integers(min_value=0, max_value=len(BOUNDS_MS)),
                st.integers(min_value=1, max_value=5),
            ),
            max_size=6,
        ),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, loaded=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10)), max_size=10))
def test_windows_equal_a_count_of_their_attempts_as_time_passes(
    steps: list[tuple[int, list[tuple[int, object, int, int]]]], loaded: list[tuple[int, int]]
) -> None:
    series = Series()
    attempts: list[tuple[int, int, int]] = []
    minute = START_MINUTE
    # History loaded at start: hours before the last one go straight into their hour.
    for hours_ago, slot in loaded:
        at = minute - hours_ago * 60
        code = cell(OUTCOMES[slot % len(OUTCOMES)], slot)
        series.add(at, code, 1, keep_minute=False)
        attempts.append((at, code, 1))
    for passed, recorded in steps:
        minute += passed
        for ago, outcome, slot, count in recorded:
            code = cell(outcome, slot)  # type: ignore[arg-type]
            series.add(minute - ago, code, count)
            attempts.append((minute - ago, code, count))
        now = minute * 60 + 30.0
        series.prune(now)  # as every snapshot does first
        for seconds in WINDOWS_S:
            assert series.window(seconds, now) == figures(seconds, _expected(attempts, seconds, now))
            # Asked again, from the cache, within the same minute:
            assert series.window(seconds, now + 20) == figures(seconds, _expected(attempts, seconds, now + 20))


@settings(deadline=None)  # a loaded machine's pause is not a failure
@given(st.dictionaries(st.integers(0, len(BOUNDS_MS)), st.integers(0, 50), max_size=12))
def test_percentiles_fall_in_the_bucket_of_their_rank(histogram: dict[int, int]) -> None:
    total = sum(histogram.values())
    fractions = (0.5, 0.95, 0.99)
    values = percentiles(histogram, total, fractions)
    if total == 0:
        assert values == [0.0, 0.0, 0.0]
        return
    assert values == sorted(values)
    expanded = sorted(slot for slot, count in histogram.items() for _ in range(count))
    for fraction, value in zip(fractions, values, strict=True):
        slot = expanded[max(1, math.ceil(fraction * total)) - 1]  # the bucket of the rank's attempt
        low = BOUNDS_MS[slot - 1] if slot > 0 else 0.0
        high = BOUNDS_MS[slot] if slot < len(BOUNDS_MS) else BOUNDS_MS[-1] * 1.25
        assert low <= value <= high
