"""Retry budget for throttled or partially processed DynamoDB batch calls."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


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
