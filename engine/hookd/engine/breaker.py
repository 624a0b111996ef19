"""A circuit breaker per destination: stop hammering a destination that is down.

CLOSED lets requests through and counts consecutive failures; ``failure_threshold`` of them opens
it. OPEN holds every request for a cool-down, which doubles on each failed probe up to
``max_cooldown_s``. Then HALF_OPEN lets exactly one probe through: success closes the breaker,
failure opens it again.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import trio


class BreakerState(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerPolicy:
    """Defaults: open after 5 consecutive failures, first cool-down 30 s, at most 10 min."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0


class CircuitBreaker:
    __slots__ = ("_cooldown", "_failures", "_opened_at", "_policy", "_probe_out", "since_wall", "state")

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self.state = BreakerState.CLOSED
        self.since_wall = time.time()
        self._failures = 0
        self._cooldown = policy.cooldown_s
        self._opened_at = 0.0
        self._probe_out = False

    def _enter(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.since_wall = time.time()

    def reopen_at(self) -> float | None:
        """trio time at which an OPEN breaker lets a probe through, else None."""
        if self.state is BreakerState.OPEN:
            return self._opened_at + self._cooldown
        return None

    def allow(self) -> bool:
        """Whether a request may start now. In HALF_OPEN, only the single probe may."""
        if self.state is BreakerState.OPEN:
            if trio.current_time() < self._opened_at + self._cooldown:
                return False
            self._enter(BreakerState.HALF_OPEN)
            self._probe_out = False
        if self.state is BreakerState.HALF_OPEN:
            if self._probe_out:
                return False
            self._probe_out = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._cooldown = self._policy.cooldown_s
        self._probe_out = False
        self._enter(BreakerState.CLOSED)

    def record_failure(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._policy.max_cooldown_s)
            self._open()
            return
        self._failures += 1
        if self.state is BreakerState.CLOSED and self._failures >= self._policy.failure_threshold:
            self._open()

    def release_probe(self) -> None:
        """The probe told nothing about the destination's health (it was never sent, or the
        answer was a 4xx): the next request may probe instead. Counts are left as they are."""
        self._probe_out = False

    def _open(self) -> None:
        self._opened_at = trio.current_time()
        self._probe_out = False
        self._enter(BreakerState.OPEN)
