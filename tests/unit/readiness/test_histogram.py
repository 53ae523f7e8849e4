from __future__ import annotations

import itertools
import math

import pytest

from proxy.readiness import histogram
from proxy.readiness.histogram import BOUNDS, OVERFLOW, bucket_index, quantile, upper_bound


def test_layout() -> None:
    assert len(BOUNDS) == 121
    assert BOUNDS[0] == pytest.approx(1e-4)
    assert BOUNDS[-1] == pytest.approx(100.0)
    assert all(b / a == pytest.approx(10 ** (1 / 20)) for a, b in itertools.pairwise(BOUNDS))


def test_upper_bounds_are_inclusive() -> None:
    assert bucket_index(0.0) == 0
    assert bucket_index(-1.0) == 0
    assert bucket_index(BOUNDS[0]) == 0
    assert bucket_index(BOUNDS[40]) == 40
    assert bucket_index(math.nextafter(BOUNDS[40], 1)) == 41
    assert bucket_index(BOUNDS[-1]) == OVERFLOW - 1
    assert bucket_index(1000.0) == OVERFLOW
    assert bucket_index(math.inf) == OVERFLOW
    assert bucket_index(math.nan) == OVERFLOW
    for seconds in (0.00037, 0.0123, 0.049, 0.05, 1.7, 42.0):
        bound = upper_bound(bucket_index(seconds))
        assert seconds <= bound < seconds * 1.123


def test_quantile_nearest_rank_is_never_below_the_truth() -> None:
    assert quantile({}, 0.99) is None
    samples = [0.001 * i for i in range(1, 101)]
    h = histogram.of(samples)
    assert histogram.count(h) == 100
    p99 = quantile(h, 0.99)
    assert p99 is not None and 0.099 <= p99 < 0.099 * 1.123
    p50 = quantile(h, 0.5)
    assert p50 is not None and 0.050 <= p50 < 0.050 * 1.123
    assert quantile(h, 1.0) == upper_bound(bucket_index(0.1))
    assert quantile({OVERFLOW: 1}, 0.5) == math.inf
    with pytest.raises(ValueError):
        quantile(h, 0)
    with pytest.raises(ValueError):
        upper_bound(OVERFLOW + 1)


def test_one_slow_sample_in_a_hundred_is_not_the_p99() -> None:
    h = histogram.of([0.01] * 99 + [5.0])
    assert quantile(h, 0.99) == BOUNDS[40]
    h = histogram.of([0.01] * 98 + [5.0] * 2)
    assert quantile(h, 0.99) == upper_bound(bucket_index(5.0))
