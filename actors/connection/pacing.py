"""How fast a connection may call its exchange: the rate limiter, and the back-off of calls
that failed. Plain classes, no clock of their own: time is an argument.

Every retry of a failed call waits ``Backoff.delay(failures)``: doubling from ``first``,
capped at ``cap`` (the exponent is capped too, so no failure count overflows), with
+/- ``jitter`` of random spread so that many clients do not retry in step. The random
generator is seeded: a run can be replayed.
"""

from __future__ import annotations

import random

#: 2 ** 30 times any first delay is past every cap: counting further changes nothing.
MAX_EXPONENT = 30


class RateLimiter:
    """A token bucket plus the pause a rate-limited venue must honour."""

    def __init__(self, per_second: float, now: float) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second * 2)
        self.tokens = self.capacity
        self.updated = now
        self.paused_until = 0.0

    def take(self, now: float) -> bool:
        if now < self.paused_until:
            return False
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def pause(self, now: float, seconds: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)


class Backoff:
    def __init__(self, first: float, cap: float, jitter: float = 0.2, seed: int = 0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"back-off needs 0 < first <= cap, got {first} and {cap}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._random = random.Random(seed)

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 or more)."""
        exponent = min(max(failures - 1, 0), MAX_EXPONENT)
        base = min(self.first * 2.0**exponent, self.cap)
        spread = 1 + self.jitter * (2 * self._random.random() - 1)
        return min(base * spread, self.cap)
