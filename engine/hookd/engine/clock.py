"""Wall-clock time for the engine, kept consistent with trio's clock.

The engine stores wall-clock times (epoch seconds) but waits with trio. On a real clock the wall
time is read from the system each time: a wall clock stepped after start-up (NTP correcting a
clock that booted wrong, a host resumed from suspend, when trio's monotonic clock stood still)
must not leave every signed ``webhook-timestamp`` off by the step for the life of the process,
since receivers refuse timestamps more than a few minutes off. Under ``trio.testing.MockClock``
the wall time is derived from trio's, so that tests drive the whole engine, retries and
breakers included, through the mock clock alone.
"""

from __future__ import annotations

import time

import trio
from trio.testing import MockClock


class Clock:
    """Create inside ``trio.run``: it looks once at which clock trio runs on."""

    def __init__(self) -> None:
        self._mocked = isinstance(trio.lowlevel.current_clock(), MockClock)
        #: Under the mock clock: wall time minus trio time, taken once.
        self._offset = time.time() - trio.current_time()

    def _wall_minus_trio(self) -> float:
        return self._offset if self._mocked else time.time() - trio.current_time()

    def now(self) -> float:
        """Epoch seconds."""
        return trio.current_time() + self._offset if self._mocked else time.time()

    def to_trio(self, wall: float) -> float:
        """The trio time at which the wall clock reads ``wall`` (as far as can be told now: a
        later step of the wall clock moves it by the step)."""
        return wall - self._wall_minus_trio()
