"""The record budget: every comparison is counted, only so many records per second are
built and written; the rest are counted as skipped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prometheus_client import CollectorRegistry

from comparators import UNJUDGED, DiffBudget, Redactor
from comparators.http import OVER_CAP
from comparators.model import Comparison, Difference, Outcome
from proxy.experiment.publish import Experiment, Publisher
from proxy.experiment.sinks import BufferedSink, JsonlWriter
from proxy.metrics import Metrics
from proxy.settings import JsonlSink


def mismatch(i: int, outcome: Outcome = Outcome.MISMATCH) -> Experiment:
    difference = Difference(path="body.name", kind="changed", primary="a", shadow="b")
    return Experiment(
        route="users", operation="GET", method="GET", path=f"/users/{i}", request_id=f"r{i}",
        requester=None, primary_status=200, shadow_status=200, primary_seconds=0.001,
        shadow_seconds=0.001, comparison=Comparison(outcome, (difference,)),
    )  # fmt: skip


async def publish_all(tmp_path: Path, records: DiffBudget | None, outcome: Outcome) -> tuple[
    CollectorRegistry, list[str]
]:  # fmt: skip
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    path = tmp_path / "m.jsonl"
    sink = BufferedSink(JsonlWriter(JsonlSink(path=str(path))), metrics)
    seen: list[Experiment] = []
    publisher = Publisher(
        metrics=metrics, sink=sink, redactor=Redactor(frozenset(), b"k" * 32),
        observers=[seen.append], records=records,
    )  # fmt: skip
    for i in range(10):
        publisher.publish(mismatch(i, outcome))
    await sink.flush()
    assert len(seen) == 10  # readiness and the guardrail see every comparison
    lines = path.read_text().splitlines() if path.exists() else []
    return registry, lines


async def test_past_the_record_budget_mismatches_are_counted_not_recorded(tmp_path: Path) -> None:
    registry, lines = await publish_all(
        tmp_path, DiffBudget(per_second=0, burst=3), Outcome.MISMATCH
    )
    assert len(lines) == 3 and '"request_id":"r0"' in lines[0]
    value = registry.get_sample_value
    assert (
        value(
            "shadowproxy_comparisons_total",
            {"route": "users", "operation": "GET", "outcome": "mismatch"},
        )
        == 10
    )
    assert (
        value("shadowproxy_mismatch_fields_total", {"route": "users", "field": "body.name"}) == 10
    )
    assert value("shadowproxy_sink_records_total", {"sink": "jsonl", "result": "skipped"}) == 7
    assert value("shadowproxy_sink_records_total", {"sink": "jsonl", "result": "written"}) == 3


async def test_noise_records_share_the_budget(tmp_path: Path) -> None:
    registry, lines = await publish_all(tmp_path, DiffBudget(per_second=0, burst=4), Outcome.NOISE)
    assert len(lines) == 4
    assert (
        registry.get_sample_value(
            "shadowproxy_sink_records_total", {"sink": "jsonl", "result": "skipped"}
        )
        == 6
    )


async def test_without_a_budget_every_mismatch_is_recorded(tmp_path: Path) -> None:
    registry, lines = await publish_all(tmp_path, None, Outcome.MISMATCH)
    assert len(lines) == 10
    assert (
        registry.get_sample_value(
            "shadowproxy_sink_records_total", {"sink": "jsonl", "result": "skipped"}
        )
        is None
    )


async def test_skipped_comparisons_are_counted_by_reason(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    sink = BufferedSink(JsonlWriter(JsonlSink(path=str(tmp_path / "m.jsonl"))), metrics)
    publisher = Publisher(metrics=metrics, sink=sink, redactor=Redactor(frozenset(), b"k" * 32))
    for comparison in (UNJUDGED, UNJUDGED, OVER_CAP, Comparison(Outcome.SKIPPED, detail="?")):
        publisher.publish(dataclasses.replace(mismatch(0), comparison=comparison))
    await sink.flush()
    value = registry.get_sample_value
    skipped = "shadowproxy_compare_skipped_total"
    assert value(skipped, {"route": "users", "reason": "cpu_budget"}) == 2
    assert value(skipped, {"route": "users", "reason": "body_over_cap"}) == 1
    assert value(skipped, {"route": "users", "reason": "other"}) == 1
    assert not (tmp_path / "m.jsonl").exists()  # a skipped comparison leaves no record


async def test_publishing_a_mismatch_is_charged_to_the_cpu_budget(tmp_path: Path) -> None:
    metrics = Metrics.create(CollectorRegistry())
    sink = BufferedSink(JsonlWriter(JsonlSink(path=str(tmp_path / "m.jsonl"))), metrics)
    budget = DiffBudget(per_second=1, burst=1, cpu_share=0.5, cpu_burst_seconds=10)
    publisher = Publisher(
        metrics=metrics, sink=sink, redactor=Redactor(frozenset(), b"k" * 32), budget=budget
    )
    publisher.publish(mismatch(0, Outcome.MATCH))
    assert budget.cpu_seconds == 10  # a match costs what it costs anyway: not charged
    publisher.publish(mismatch(1))
    assert budget.cpu_seconds < 10
    await sink.flush()
