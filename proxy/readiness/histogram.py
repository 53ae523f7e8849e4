"""A fixed, log-spaced latency bucket layout shared by every instance (Redis sums it).

Bucket ``i`` holds samples ``s`` with ``BOUNDS[i-1] < s <= BOUNDS[i]`` (upper bound
inclusive, like Prometheus' ``le``); bucket 0 holds everything ``<= BOUNDS[0]`` (100 µs, zero
included) and bucket ``len(BOUNDS)`` (the overflow) everything above ``BOUNDS[-1]`` (100 s) —
and timeouts, which count as slower than any bucket. There are 20 buckets per decade, so a
bucket's upper bound is at most ~12.2 % above any sample in it.

A quantile is reported as the upper bound of the bucket holding the nearest-rank sample
(rank ``ceil(q * n)``), i.e. never below the true quantile of the recorded samples: a p99
reported ``<= limit`` means the true p99 is ``<= limit`` too.

The layout is part of the Redis key format: changing it needs a new ``prefix``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping

PER_DECADE = 20
LOW_EXPONENT = -4  # 100 µs
HIGH_EXPONENT = 2  # 100 s
BOUNDS: tuple[float, ...] = tuple(
    10.0 ** (LOW_EXPONENT + i / PER_DECADE)
    for i in range((HIGH_EXPONENT - LOW_EXPONENT) * PER_DECADE + 1)
)
OVERFLOW = len(BOUNDS)


def bucket_index(seconds: float) -> int:
    """The bucket of one sample; NaN and +inf go to the overflow bucket."""
    if seconds != seconds:  # NaN
        return OVERFLOW
    return bisect_left(BOUNDS, seconds)


def upper_bound(index: int) -> float:
    """Largest value bucket ``index`` can hold (``inf`` for the overflow bucket)."""
    if not 0 <= index <= OVERFLOW:
        raise ValueError(f"no latency bucket {index}")
    return BOUNDS[index] if index < OVERFLOW else math.inf


def count(histogram: Mapping[int, int]) -> int:
    return sum(histogram.values())


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """Nearest-rank quantile as a bucket upper bound; ``None`` without samples."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    total = count(histogram)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))  # 1e-9: q * total is inexact (0.99 * 100)
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return upper_bound(index)
    return upper_bound(max(histogram))  # pragma: no cover - unreachable: seen == total


def of(samples: Iterable[float]) -> dict[int, int]:
    """A histogram of ``samples`` (tests and tools; the recorder counts incrementally)."""
    out: dict[int, int] = {}
    for sample in samples:
        index = bucket_index(sample)
        out[index] = out.get(index, 0) + 1
    return out
