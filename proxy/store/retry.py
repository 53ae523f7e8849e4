"""Whether and when to try a DynamoDB call again: the backoff between attempts, and the retry
quota that stops a failing endpoint from being sent ever more attempts.

The quota is botocore's standard-mode ``RetryQuotaChecker``, numbers included, so that our
lean client puts no more load on a struggling DynamoDB than boto3 would: a client starts with
``INITIAL_RETRY_TOKENS``; each retry spends ``RETRY_COST`` (``TIMEOUT_RETRY_COST`` after a
timeout); a call that succeeds first time refunds ``NO_RETRY_INCREMENT``, one that succeeds
after retries refunds what its last retry spent, and a failure refunds nothing. With the quota
spent, failures surface at once until successes refill it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

INITIAL_RETRY_TOKENS = 500  # botocore.retries.quota.RetryQuota.INITIAL_CAPACITY
RETRY_COST = 5  # RetryQuotaChecker._RETRY_COST
TIMEOUT_RETRY_COST = 10  # RetryQuotaChecker._TIMEOUT_RETRY_REQUEST (connect/read timeouts)
NO_RETRY_INCREMENT = 1  # RetryQuotaChecker._NO_RETRY_INCREMENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry ``n`` (1-based), sleep a uniform
    random time in ``[0, min(max_delay, base_delay * 2**n))``.

    ``max_attempts`` counts calls, the first included: items still unprocessed (or a call
    still throttled) after that many calls are reported failed.
    """

    max_attempts: int = 8
    base_delay: float = 0.025
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max_delay, self.base_delay * 2.0**retry)


class RetryQuota:
    """Retry tokens shared by every call of one client (one event loop: no lock needed)."""

    __slots__ = ("available", "capacity")

    def __init__(self, capacity: int = INITIAL_RETRY_TOKENS) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity!r}")
        self.capacity = capacity
        self.available = capacity

    def acquire(self, amount: int) -> bool:
        """Spend ``amount`` for one retry; False (nothing spent) when too few are left."""
        if amount > self.available:
            return False
        self.available -= amount
        return True

    def release(self, amount: int) -> None:
        """Refund after a success, never above the capacity."""
        if self.available < self.capacity:
            self.available = min(self.capacity, self.available + amount)
