"""The token bucket, and the in-process buckets (a bounded LRU) used without Redis.

    buckets = MemoryBuckets(max_buckets=10_000)
    decision = buckets.take("users\\x00checkout", Rate(rate=50, burst=100))
    decision.allowed, decision.retry_after      # False, 0.02: a token comes back in 20 ms

Hand-written on purpose. The libraries kept for rate limiting do not fit: ``aiolimiter``
makes a caller *wait* for capacity (we must refuse at once with a 429) and lives in one
process; ``limits`` offers fixed and moving windows, not a rate-and-burst bucket, and its
Redis strategies are not one script per check; ``pyrate-limiter`` keeps one Redis entry per
request. The bucket is a dozen lines and the same arithmetic as the Lua script in
``proxy.ratelimit.redis_buckets``, which tests hold against a reference model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from proxy.ratelimit.config import Rate


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the next token, when refused


ALLOWED = Decision(True)


def refill(tokens: float, elapsed: float, rate: Rate) -> float:
    """Tokens after ``elapsed`` seconds (a clock that went back adds nothing)."""
    return min(float(rate.burst), tokens + max(elapsed, 0.0) * rate.rate)


class Bucket:
    """One requester's bucket: starts full, ``rate.rate`` tokens a second up to ``burst``."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.burst)
        self.stamp = now

    def take(self, rate: Rate, now: float) -> Decision:
        tokens = refill(self.tokens, now - self.stamp, rate)
        self.stamp = max(now, self.stamp)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return ALLOWED
        self.tokens = tokens
        return Decision(False, (1.0 - tokens) / rate.rate)


class MemoryBuckets:
    """This process's buckets, at most ``max_buckets``: past it the least recently used one
    is dropped, which only refills it. A flood of distinct requester ids costs bounded
    memory; size it above the number of requesters active at once."""

    def __init__(self, *, max_buckets: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, rate: Rate) -> Decision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(rate, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(rate, now)
