"""The diff budget: how much comparing the event loop can afford.

Two buckets in one object, both per process:

- **Structured diffs**: a token bucket, ``burst`` diffs at once, refilled at ``per_second``.
  ``compare`` takes a token before walking; without one it summarises instead (see
  ``comparators.compare``) and counts it.
- **Comparison CPU** (``cpu_share``, optional): seconds of comparing per second of time, for
  the comparisons whose bytes differ (parsing, canonical bytes, the diff or summary, and
  publishing a mismatch; an equal-bytes match costs nothing and is never refused). Past it a
  comparison is not judged at all: ``compare`` and ``compare_http`` return
  :data:`comparators.UNJUDGED` (outcome ``skipped``), so a candidate that differs on every
  request costs the primary at most that share of a core, the rest of the traffic is still
  counted, and no unjudged one is counted as a match or a mismatch: the judged ones are a
  sample of the differences, and readiness estimates the mismatch rate from it. The bucket
  holds ``cpu_burst_seconds``; a comparison may start while it holds anything and its time
  is charged when it ends.

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
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TOLERANCE_WALK_BYTES = 16 * 1024
DEFAULT_CPU_BURST_SECONDS = 0.1


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
        "_cpu_burst",
        "_cpu_last",
        "_cpu_seconds",
        "_cpu_share",
        "_last",
        "_per_second",
        "_tokens",
        "summarised_total",
        "tolerance_walk_bytes",
        "unjudged_total",
        "walked_total",
    )

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        tolerance_walk_bytes: int = DEFAULT_TOLERANCE_WALK_BYTES,
        cpu_share: float | None = None,
        cpu_burst_seconds: float = DEFAULT_CPU_BURST_SECONDS,
    ) -> None:
        if isinstance(per_second, bool) or not math.isfinite(per_second) or per_second < 0:
            raise ValueError(f"per_second must be a finite number >= 0, got {per_second!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise ValueError(f"burst must be an integer >= 0, got {burst!r}")
        if isinstance(tolerance_walk_bytes, bool) or not isinstance(tolerance_walk_bytes, int):
            raise ValueError(
                f"tolerance_walk_bytes must be an integer, got {tolerance_walk_bytes!r}"
            )
        if cpu_share is not None and (
            isinstance(cpu_share, bool) or not 0 <= cpu_share <= 1  # NaN fails this too
        ):
            raise ValueError(f"cpu_share must be a number from 0 to 1 or None, got {cpu_share!r}")
        if (
            isinstance(cpu_burst_seconds, bool)
            or not math.isfinite(cpu_burst_seconds)
            or cpu_burst_seconds < 0
        ):
            raise ValueError(
                f"cpu_burst_seconds must be a finite number >= 0, got {cpu_burst_seconds!r}"
            )
        self._per_second = float(per_second)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.tolerance_walk_bytes = tolerance_walk_bytes
        self.walked_total = 0
        self.summarised_total = 0
        self.unjudged_total = 0
        self._cpu_share = None if cpu_share is None else float(cpu_share)
        self._cpu_burst = float(cpu_burst_seconds)
        self._cpu_seconds = self._cpu_burst
        self._cpu_last = self._last

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

    @property
    def cpu_seconds(self) -> float:
        """Comparison CPU seconds left in the bucket (negative after an overdraft)."""
        return self._cpu_seconds

    def may_compare(self) -> bool:
        """Whether a comparison whose bytes differ may be judged now; counts a refusal."""
        share = self._cpu_share
        if share is None:
            return True
        now = self._clock()
        elapsed = now - self._cpu_last
        self._cpu_last = now
        if elapsed > 0:
            self._cpu_seconds = min(self._cpu_burst, self._cpu_seconds + elapsed * share)
        if self._cpu_seconds > 0:
            return True
        self.unjudged_total += 1
        return False

    def charge(self, seconds: float) -> None:
        """A judged comparison took ``seconds``: the bucket may go below zero (one
        comparison's worth), and refills from there."""
        if self._cpu_share is not None and seconds > 0:
            self._cpu_seconds -= seconds

    def spend(self, work: Callable[[], T]) -> T:
        """Run a judged comparison's ``work`` and charge the time it took."""
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.charge(time.perf_counter() - started)

    def record_walked(self) -> None:
        self.walked_total += 1

    def record_summarised(self) -> None:
        self.summarised_total += 1
