"""Token buckets: one per client where the client is a connection, a bounded table of them per key (IP, pubkey).

Both the built-in relay endpoint and the Mostro API limit with the same refill rule, so it lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_RATE_KEYS = 100_000


class TokenBucket:
    """`per_minute` tokens refilled continuously up to `burst`; starts full."""

    __slots__ = ("_burst", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, per_minute: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()

    def _refill(self, now: float) -> float:
        return min(self._burst, self._tokens + (now - self._last) * self._rate)

    def wait(self) -> float:
        """Take one token: 0 when allowed, else the seconds until one is available (nothing taken)."""
        now = self._clock()
        self._tokens = self._refill(now)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def take(self) -> bool:
        """Take one token when there is one."""
        return self.wait() == 0.0

    def is_full(self, now: float) -> bool:
        """Refilled completely: the client has been idle, and forgetting it loses nothing."""
        return self._refill(now) >= self._burst


class KeyedRateLimiter:
    """A `TokenBucket` per key, bounded to `max_keys` buckets.

    When the table is full, buckets that have refilled completely (idle clients) are dropped first, then the
    least recently used; a flood of fresh keys can only make the limiter forget, never grow.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_keys: int = MAX_RATE_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_minute = per_minute
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, key: str) -> float:
        """Take one token for `key`: 0 when allowed, else the seconds until one is available."""
        bucket = self._buckets.pop(key, None)
        if len(self._buckets) >= self._max_keys:
            self._evict(self._clock())
        if bucket is None:
            bucket = TokenBucket(self._per_minute, self._burst, self._clock)
        self._buckets[key] = bucket  # re-inserted last: the dict's order is least recently used first
        return bucket.wait()

    def _evict(self, now: float) -> None:
        for key in [key for key, bucket in self._buckets.items() if bucket.is_full(now)]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]
