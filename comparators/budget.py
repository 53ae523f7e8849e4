"""The diff budget: how many structured diffs per second the event loop can afford.

A token bucket: ``burst`` diffs at once, refilled at ``per_second``. ``compare`` takes a token
before walking; without one it summarises instead (see ``comparators.compare``) and counts it.
Pure and meant for one event loop: no locks, the clock is injectable.

>>> clock = iter([0.0, 0.0, 0.0, 1.0]).__next__
>>> budget = DiffBudget(per_second=1, burst=1, clock=clock)
>>> budget.try_acquire(), budget.try_acquire(), budget.try_acquire()
(True, False, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

DEFAULT_TOLERANCE_WALK_BYTES = 16 * 1024


class DiffBudget:
    """Token bucket for structured diffs, plus the counters a metrics exporter reads.

    ``tolerance_walk_bytes``: when tolerances are configured a summarised mismatch may be a
    false one (the bytes differ, the values are equal within tolerance), so values whose
    canonical size is at most this are walked even without a token. Our differ costs about
    10-20 µs per KB (measured by ``tests/benchmarks/bench_compare.py``), which is the price of
    not reporting false mismatches.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_last",
        "_per_second",
        "_tokens",
        "summarised_total",
        "tolerance_walk_bytes",
        "walked_total",
    )

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        tolerance_walk_bytes: int = DEFAULT_TOLERANCE_WALK_BYTES,
    ) -> None:
        if isinstance(per_second, bool) or not math.isfinite(per_second) or per_second < 0:
            raise ValueError(f"per_second must be a finite number >= 0, got {per_second!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise ValueError(f"burst must be an integer >= 0, got {burst!r}")
        if isinstance(tolerance_walk_bytes, bool) or not isinstance(tolerance_walk_bytes, int):
            raise ValueError(
                f"tolerance_walk_bytes must be an integer, got {tolerance_walk_bytes!r}"
            )
        self._per_second = float(per_second)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.tolerance_walk_bytes = tolerance_walk_bytes
        self.walked_total = 0
        self.summarised_total = 0

    @property
    def tokens(self) -> float:
        return self._tokens

    def try_acquire(self) -> bool:
        """Take one token if there is one (after refilling for the time elapsed)."""
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._per_second)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def record_walked(self) -> None:
        self.walked_total += 1

    def record_summarised(self) -> None:
        self.summarised_total += 1
