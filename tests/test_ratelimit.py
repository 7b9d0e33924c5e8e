from __future__ import annotations

from pushstr.ratelimit import KeyedRateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_bursts_then_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute=60, burst=2, clock=clock)
    assert bucket.take() and bucket.take()
    assert bucket.wait() == 1.0
    clock.now = 1.0
    assert bucket.take()
    assert not bucket.take()


def test_keyed_limiter_is_per_key_and_bounded() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(per_minute=60, burst=1, max_keys=3, clock=clock)
    assert limiter.wait("a") == 0.0
    assert limiter.wait("a") > 0.0
    assert limiter.wait("b") == 0.0
    for key in ("c", "d", "e"):
        limiter.wait(key)
    assert len(limiter._buckets) <= 3
    assert "a" not in limiter._buckets  # least recently used went first
