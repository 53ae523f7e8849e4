"""Counters from a real exposition (a fresh registry with the proxy's own metrics), and
quantiles estimated from cumulative buckets as Prometheus' ``histogram_quantile`` does."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from proxy.metrics import Metrics
from proxy.report.counters import from_exposition, quantile, samples

INF = math.inf


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ({0.1: 0, 0.2: 10, INF: 10}, 0.5, 0.15),  # linear within (0.1, 0.2]
        ({0.5: 10, INF: 10}, 0.5, 0.25),  # the first bucket starts at 0
        ({0.1: 5, INF: 10}, 0.99, 0.1),  # in +Inf: the highest finite bound
        ({0.1: 4, 0.2: 4, 0.4: 8, INF: 8}, 0.5, 0.1),  # rank on a bucket's edge
        ({0.1: 6, 0.2: 5.9, INF: 10}, 0.5, 0.1 * 5 / 6),  # increase() jitter is flattened
        ({0.1: 0, INF: 0}, 0.5, None),
        ({}, 0.5, None),
        ({INF: 3}, 0.5, None),  # nothing finite to report
        # increase() extrapolates: the rank is of 29.616, not of the 30 it rounds to
        (
            {0.01: 26.914, 0.025: 29.616, INF: 29.616},
            0.99,
            0.01 + 0.015 * (0.99 * 29.616 - 26.914) / 2.702,
        ),
    ],
)
def test_quantile_as_histogram_quantile(
    buckets: dict[float, float], q: float, expected: float | None
) -> None:
    got = quantile(buckets, q)
    assert got == (None if expected is None else pytest.approx(expected))


def test_counters_from_the_proxys_own_exposition() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    for _ in range(3):
        metrics.comparisons.labels("users", "get", "match").inc()
    metrics.comparisons.labels("users", "lookup", "mismatch").inc()
    metrics.comparisons.labels("orders-get", "GET", "match").inc(2)
    metrics.mismatch_fields.labels("users", "email").inc()
    for seconds in (0.003,) * 99 + (0.2,):
        metrics.backend_latency.labels("dynamodb", "shadow", "users", "get").observe(seconds)
    metrics.backend_latency.labels("postgres", "primary", "users", "get").observe(0.001)
    metrics.backend_latency.labels("postgres", "primary", "users", "lookup").observe(0.002)

    counters = from_exposition(generate_latest(registry).decode())
    assert counters.outcomes_of("users") == {"get": {"match": 3}, "lookup": {"mismatch": 1}}
    assert counters.outcomes_of("orders-get") == {"GET": {"match": 2}}
    assert counters.fields_of("users") == {"email": 1}
    assert sorted(counters.sides_of("users")) == ["primary", "shadow"]
    assert counters.backends[("users", "primary")] == {"postgres"}
    shadow = counters.latency[("users", "shadow")]
    assert samples(shadow) == 100 and samples(counters.latency[("users", "primary")]) == 2
    p50, p99 = quantile(shadow, 0.5), quantile(shadow, 0.99)
    assert p50 is not None and p99 is not None
    assert 0.0025 < p50 <= 0.005 and p99 <= 0.005  # 99 of 100 samples are 3 ms
    assert counters.targets() == {"users", "orders-get"}
