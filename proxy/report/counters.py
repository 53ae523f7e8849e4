"""The counters a report needs, from either source (``proxy.report.sources``): a running
instance's ``/metrics`` text (``from_exposition``: totals since the process started) or
Prometheus' answers (increases over the window). In store mode the ``route`` label is the
resource.

- ``shadowproxy_comparisons_total{route, operation, outcome}``
- ``shadowproxy_backend_request_duration_seconds_bucket{backend, role, route, operation, le}``
- ``shadowproxy_mismatch_fields_total{route, field}``
- ``shadowproxy_compare_skipped_total{route, reason}``: only ``reason="cpu_budget"``, the
  differences the comparison CPU budget did not judge (readiness's ``unjudged``)
- ``shadowproxy_compare_parsed_matches_total{route}``: matches whose bodies differed in bytes
  (readiness's ``parsed_match``)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.metrics import SKIP_CPU_BUDGET

COMPARISONS = "shadowproxy_comparisons_total"
LATENCY_BUCKETS = "shadowproxy_backend_request_duration_seconds_bucket"
FIELDS = "shadowproxy_mismatch_fields_total"
SKIPS = "shadowproxy_compare_skipped_total"
PARSED = "shadowproxy_compare_parsed_matches_total"

Labels = Mapping[str, str]


@dataclass
class Counters:
    #: (target, operation, outcome) -> count
    outcomes: dict[tuple[str, str, str], float] = field(default_factory=dict)
    #: (target, role) -> le -> cumulative count, summed over backends and operations
    latency: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    #: (target, role) -> backends seen
    backends: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: (target, field) -> count
    fields: dict[tuple[str, str], float] = field(default_factory=dict)
    #: target -> differences not judged (comparison CPU budget spent)
    unjudged: dict[str, float] = field(default_factory=dict)
    #: target -> matches whose bodies differed in bytes
    parsed: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, labels: Labels, value: float) -> None:
        """One sample; names and labels other than the five families' are ignored."""
        if not math.isfinite(value):
            return
        route = labels.get("route")
        if route is None:
            return
        if name == COMPARISONS and "operation" in labels and "outcome" in labels:
            counted = (route, labels["operation"], labels["outcome"])
            self.outcomes[counted] = self.outcomes.get(counted, 0.0) + value
        elif name == LATENCY_BUCKETS and "role" in labels and "le" in labels:
            side = (route, labels["role"])
            buckets = self.latency.setdefault(side, defaultdict(float))
            buckets[float(labels["le"])] += value
            if labels.get("backend"):
                self.backends.setdefault(side, set()).add(labels["backend"])
        elif name == FIELDS and "field" in labels:
            key = (route, labels["field"])
            self.fields[key] = self.fields.get(key, 0.0) + value
        elif name == SKIPS and labels.get("reason") == SKIP_CPU_BUDGET:
            self.unjudged[route] = self.unjudged.get(route, 0.0) + value
        elif name == PARSED:
            self.parsed[route] = self.parsed.get(route, 0.0) + value

    def outcomes_of(self, target: str) -> dict[str, dict[str, int]]:
        """operation -> outcome -> count."""
        out: dict[str, dict[str, int]] = {}
        for (route, operation, outcome), n in sorted(self.outcomes.items()):
            if route == target:
                out.setdefault(operation, {})[outcome] = round(n)
        return out

    def unjudged_of(self, target: str) -> int:
        return round(self.unjudged.get(target, 0.0))

    def parsed_of(self, target: str) -> int:
        return round(self.parsed.get(target, 0.0))

    def fields_of(self, target: str) -> dict[str, int]:
        return {f: round(n) for (route, f), n in self.fields.items() if route == target}

    def sides_of(self, target: str) -> list[str]:
        return [role for route, role in self.latency if route == target]

    def targets(self) -> set[str]:
        return {k[0] for k in self.outcomes} | {k[0] for k in self.latency}


def from_exposition(text: str) -> Counters:
    """Parse Prometheus' text format (what ``GET /metrics`` answers)."""
    from prometheus_client.parser import text_string_to_metric_families

    counters = Counters()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            counters.add(sample.name, sample.labels, float(sample.value))
    return counters


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """``q`` of a cumulative histogram (``le`` -> count), estimated as Prometheus'
    ``histogram_quantile`` does: linearly within the bucket holding the rank, the highest
    finite bound when the rank falls in ``+Inf``. So the report agrees with the dashboard.
    None without samples. The rank is taken of the ``+Inf`` count as it is: increase()
    extrapolates to fractions (29.6), and a rank of the rounded count (30) could lie above
    every bucket."""
    if samples(buckets) <= 0:
        return None
    rank = q * buckets[max(buckets)]
    lower, below = 0.0, 0.0
    for bound in sorted(buckets):
        seen = max(below, buckets[bound])  # increase() may break monotonicity a little
        if seen >= rank:
            if math.isinf(bound):
                return lower if lower > 0 else None
            if seen == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (seen - below)
        lower, below = bound, seen
    return lower


def samples(buckets: Mapping[float, float]) -> int:
    """The count of the highest bucket (``+Inf``: every sample)."""
    return round(buckets[max(buckets)]) if buckets else 0
