"""What /metrics serves in one process: the latency buckets, build info, process and
platform metrics, and no ``*_created`` series."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

import proxy
from proxy.metrics import LATENCY_BUCKETS, Metrics, exposition_registry


def served() -> tuple[CollectorRegistry, Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    return registry, metrics, exposition_registry(registry)


def test_latency_buckets_resolve_sub_millisecond_calls() -> None:
    assert tuple(sorted(LATENCY_BUCKETS)) == LATENCY_BUCKETS
    assert LATENCY_BUCKETS[0] == 0.0001 and LATENCY_BUCKETS[-1] == 10.0
    assert sum(b < 0.001 for b in LATENCY_BUCKETS) == 5  # 100, 200, 300, 500 and 750 µs
    assert len(LATENCY_BUCKETS) <= 20
    registry, metrics, _ = served()
    metrics.backend_latency.labels("a", "primary", "r", "GET").observe(0.00025)
    labels = {"backend": "a", "role": "primary", "route": "r", "operation": "GET"}
    bucket = "shadowproxy_backend_request_duration_seconds_bucket"
    assert registry.get_sample_value(bucket, {**labels, "le": "0.0002"}) == 0
    assert registry.get_sample_value(bucket, {**labels, "le": "0.0003"}) == 1


def test_build_info_names_the_version_and_python() -> None:
    registry, _, _ = served()
    labels = {"version": proxy.__version__, "python": platform.python_version()}
    assert registry.get_sample_value("shadowproxy_build_info", labels) == 1


def test_metrics_has_process_and_platform_metrics_and_the_proxys_own() -> None:
    _, metrics, exposed = served()
    metrics.requests.labels("r", "GET", "200", "none").inc()
    labels = {"route": "r", "method": "GET", "status": "200", "requester": "none"}
    assert exposed.get_sample_value("shadowproxy_requests_total", labels) == 1
    assert (exposed.get_sample_value("process_resident_memory_bytes") or 0) > 0
    assert exposed.get_sample_value("process_cpu_seconds_total") is not None
    assert exposed.get_sample_value("process_open_fds") is not None
    version = {"implementation": platform.python_implementation()}
    assert any(
        s.labels.items() >= version.items()
        for family in exposed.collect()
        if family.name == "python_info"
        for s in family.samples
    )


def test_no_created_series_in_either_format() -> None:
    _, metrics, exposed = served()
    metrics.requests.labels("r", "GET", "200", "none").inc()
    metrics.backend_latency.labels("a", "primary", "r", "GET").observe(0.001)
    for text in (generate_latest(exposed), generate_openmetrics(exposed)):
        assert b"shadowproxy_requests_total" in text
        assert b"_created" not in text
