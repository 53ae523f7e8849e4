"""The short mismatch summary the demo prints, read back from the metrics and the sink."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client.metrics_core import Metric


def outcome_counts(families: Iterable[Metric]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for metric in families:
        if metric.name != "shadowproxy_comparisons":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                route = f"{sample.labels['route']} {sample.labels['operation']}"
                outcomes = counts[route]
                outcome = sample.labels["outcome"]
                outcomes[outcome] = outcomes.get(outcome, 0) + int(sample.value)
    return dict(counts)


def field_counts(families: Iterable[Metric]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for metric in families:
        if metric.name != "shadowproxy_mismatch_fields":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[(sample.labels["route"], sample.labels["field"])] = int(sample.value)
    return out


def render(families: list[Metric], examples: list[dict[str, Any]], urls: dict[str, str]) -> str:
    lines = ["", "shadowproxy demo: mismatch summary", "=" * 34]
    for route, outcomes in sorted(outcome_counts(families).items()):
        total = sum(outcomes.values())
        parts = ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
        lines.append(f"  {route:<22} comparisons={total:<5} {parts}")
    fields = field_counts(families).most_common(8)
    if fields:
        lines.append("  top differing fields:")
        lines += [f"    {route}: {field} x{n}" for (route, field), n in fields]
    shown: set[str] = set()
    for ex in examples:
        if ex["route"] in shown:
            continue
        shown.add(ex["route"])
        lines.append(f"  example ({ex['method']} {ex['path']}, request {ex['request_id']}):")
        for diff in ex["differences"][:4]:
            lines.append("    " + orjson.dumps(diff).decode()[:300])
    lines.append("")
    lines += [f"  {name:<11}{url}" for name, url in urls.items()]
    return "\n".join(lines)
