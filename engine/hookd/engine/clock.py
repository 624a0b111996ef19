"""Wall-clock time derived from trio's clock.

The engine stores wall-clock times (epoch seconds) but waits with trio. Deriving one from the
other keeps them consistent, and lets tests drive the whole engine, retries and breakers
included, with ``trio.testing.MockClock``.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Create inside ``trio.run``: it captures the offset between the two clocks once."""

    def __init__(self) -> None:
        self._offset = time.time() - trio.current_time()

    def now(self) -> float:
        """Epoch seconds."""
        return trio.current_time() + self._offset

    def to_trio(self, wall: float) -> float:
        """The trio time at which the wall clock reads ``wall``."""
        return wall - self._offset
