"""When to try a failed delivery again: exponential backoff with full jitter, capped.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of many
deliveries that failed together, so a destination coming back is not hit by a synchronised wave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults: 8 attempts; ceilings 30 s, 1 min, 2 min ... capped at 1 h (about 2 h worst case,
    in the range Shopify (8 tries over 4 h) and Stripe (days) publish)."""

    max_attempts: int = 8
    base_s: float = 30.0
    cap_s: float = 3600.0

    def delay(self, attempts_made: int, rng: random.Random, retry_after_s: float | None = None) -> float | None:
        """Seconds until the next attempt, or None when ``attempts_made`` exhausts the policy.

        A destination's ``Retry-After`` is honoured as given, up to the cap.
        """
        if attempts_made >= self.max_attempts:
            return None
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.cap_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempts_made - 1))
        return rng.uniform(0.0, ceiling)
