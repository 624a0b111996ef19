"""A token bucket: at most ``rate`` requests per second on average, bursts up to ``burst``."""

from __future__ import annotations

import trio


class TokenBucket:
    """Timing comes from trio's clock, so tests can drive it with ``MockClock``."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self._burst
        self._stamp = trio.current_time()

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the rate; tokens already earned are kept, up to the new burst."""
        if rate == self._rate:
            return
        self._refill()
        self._rate = rate
        self._burst = max(1.0, rate)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self) -> None:
        now = trio.current_time()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait until a token is available and take it."""
        while True:
            self._refill()
            # The tolerance keeps float rounding from turning into endless zero-length sleeps.
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return
            await trio.sleep((1.0 - self._tokens) / self._rate)
