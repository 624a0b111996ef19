"""Crashes lose nothing: SIGKILL the server under publishing load, restart it, count at the receivers.

The longer version of this (twenty kills and more) is ``python -m bench.crash_soak``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.crash import CrashHarness

pytestmark = pytest.mark.backends


def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    harness = CrashHarness(tmp_path, publishers=3, max_in_flight=4)
    try:
        report = harness.run(kills=3)
    finally:
        harness.close()
    print(report.summary())
    assert report.published > 100, report.summary()  # the load was real
    assert report.lost == 0, f"{report.summary()} lost: {report.lost_examples}"
    assert report.misrouted == 0, report.summary()
    assert report.duplicated <= report.duplicate_bound, report.summary()
