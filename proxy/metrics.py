"""Every metric shadowproxy exports, created against an injected registry, and the registry
``/metrics`` serves (``exposition_registry``)."""

from __future__ import annotations

import glob
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from proxy import __version__
from proxy.process_metrics import WorkerProcessCollector

# No ``*_created`` series: one more series per counter and histogram child that no
# dashboard or rule reads. A process-wide switch in prometheus-client, read when metrics are
# exposed; thrown here because every process that exposes any (``serve``, each worker, the
# CLI's jobs) imports this module.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _pid_kept_in_memory() -> bool:
    """In multiprocess mode (``serve --workers N``) prometheus-client checks ``os.getpid()``
    on every value write to notice a fork, and that is a system call: ~0.2 µs here, ~3% of an
    HTTP worker's samples with py-spy at 100% shadow. Its value class takes the function
    that names the process, so the same class with the pid kept in memory, renewed in a
    forked child by ``os.register_at_fork``, behaves the same (a child still writes files of
    its own). Swapped only while this process has written no value yet (no file of its pid
    in the directory): a value made by the library's class would map the same file again."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return False
    pid = [os.getpid()]
    if glob.glob(os.path.join(glob.escape(directory), f"*_{pid[0]}.db")):
        return False
    os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue(lambda: pid[0])  # type: ignore[no-untyped-call]
    return True


PID_KEPT_IN_MEMORY = _pid_kept_in_memory()

# From 100 µs: the proxy's own p50 at 1,000 rps is 0.3-0.5 ms, and a store read on the same
# host is a few hundred µs, so the sub-millisecond buckets carry the quantiles that matter.
LATENCY_BUCKETS = (
    0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
MAX_FIELDS_PER_ROUTE = 200
OTHER = "other"
# Values of shadowproxy_compare_skipped_total's ``reason`` (the report reads the first).
SKIP_CPU_BUDGET, SKIP_BODY_OVER_CAP = "cpu_budget", "body_over_cap"


class Children:
    """Memoised labelled children. prometheus-client's ``labels()`` takes a lock and builds a
    key on every call, and the proxy calls it several times per request; label values here
    are bounded (routes, methods, statuses, known requesters), so the memo is too."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Any] = {}

    def get(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = metric.labels(*labels)
        return child


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    backend_latency: Histogram
    backend_errors: Counter
    comparisons: Counter
    mismatch_fields: Counter
    diff_summarised: Counter
    compare_skipped: Counter
    parsed_matches: Counter
    shadow_queue_depth: Gauge
    loop_tasks: Gauge
    shadow_dropped: Counter
    sink_records: Counter
    internal_errors: Counter
    dual_write_failures: Counter
    repair_log_errors: Counter
    client_timeouts: Counter
    build_info: Gauge
    # One memo of labelled children for every hot path that shares these metrics.
    children: Children = field(default_factory=Children)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"shadowproxy_{name}", doc, labels, registry=registry)

        build_info = Gauge(
            "shadowproxy_build_info",
            "Always 1; the labels say which shadowproxy and which Python this process runs.",
            ("version", "python"),
            registry=registry,
            multiprocess_mode="max",
        )
        build_info.labels(__version__, platform.python_version()).set(1)
        return cls(
            build_info=build_info,
            requests=counter(
                "requests",
                "Client requests answered, by route, method, status and requester.",
                ("route", "method", "status", "requester"),
            ),
            backend_latency=Histogram(
                "shadowproxy_backend_request_duration_seconds",
                "Backend call latency until the response body was read, by role.",
                ("backend", "role", "route", "operation"),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            client_timeouts=counter(
                "client_timeouts",
                "Client connections cut for taking too long, by port (proxy/admin) and phase "
                "(new, head, body, idle).",
                ("port", "phase"),
            ),
            backend_errors=counter(
                "backend_errors",
                "Backend calls that failed (connect, timeout, protocol), by role and kind.",
                ("backend", "role", "kind"),
            ),
            comparisons=counter(
                "comparisons",
                "Shadow comparison outcomes by route and operation.",
                ("route", "operation", "outcome"),
            ),
            mismatch_fields=counter(
                "mismatch_fields",
                "Mismatching fields (list indexes collapsed) by route.",
                ("route", "field"),
            ),
            diff_summarised=counter(
                "diff_summarised",
                "Mismatches only summarised (structured diff over its CPU budget or size cap).",
                ("route",),
            ),
            compare_skipped=counter(
                "compare_skipped",
                "Comparisons not judged (outcome skipped), by route and reason: cpu_budget "
                "(shadow.compare_cpu_share spent) or body_over_cap.",
                ("route", "reason"),
            ),
            parsed_matches=counter(
                "compare_parsed_matches",
                "Matches whose bodies differed in bytes and were equal once parsed (key order, "
                "spacing), by route: with the mismatches, the differences that were judged.",
                ("route",),
            ),
            shadow_queue_depth=Gauge(
                "shadowproxy_shadow_queue_depth",
                "Shadow jobs waiting or running.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            loop_tasks=Gauge(
                "shadowproxy_event_loop_tasks",
                "Tasks alive on the event loop, sampled every few seconds (summed over "
                "workers): flat under steady load, rising when something leaks.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            shadow_dropped=counter(
                "shadow_dropped",
                "Shadow requests dropped instead of waited for, by route and reason.",
                ("route", "reason"),
            ),
            sink_records=counter(
                "sink_records", "Mismatch records written, by result.", ("sink", "result")
            ),
            internal_errors=counter(
                "internal_errors",
                "Failures on the secondary path (shadow, compare, publish) by operation.",
                ("operation",),
            ),
            dual_write_failures=counter(
                "dual_write_failures",
                "Writes to a secondary store that failed or were skipped; each key went to "
                "the repair log.",
                ("resource", "store", "operation"),
            ),
            repair_log_errors=counter(
                "repair_append_failures",
                "Keys that could not be appended to the repair log (logged loudly).",
                ("resource",),
            ),
        )


class FieldLabels:
    """Caps the distinct ``field`` label values per route so a broken candidate cannot
    explode the series count; the overflow is counted under ``other``."""

    def __init__(self, limit: int = MAX_FIELDS_PER_ROUTE) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}

    def label(self, route: str, field: str) -> str:
        seen = self._seen.setdefault(route, set())
        if field in seen:
            return field
        if len(seen) >= self._limit:
            return OTHER
        seen.add(field)
        return field


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry /metrics serves: the process's own metrics, or with ``serve --workers N``
    their sum over every worker; process metrics (CPU, memory, file descriptors: this
    process's, or the workers' summed); and ``python_info``."""
    served = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(served, path=directory)  # type: ignore[no-untyped-call]
        WorkerProcessCollector(directory, registry=served)
    else:
        served.register(registry)  # a registry is a collector of its metrics
        ProcessCollector(registry=served)
    PlatformCollector(registry=served)
    return served
