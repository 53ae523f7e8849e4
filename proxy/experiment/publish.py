"""Where every finished comparison goes: outcome metrics, field metrics, redacted records."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from comparators import DiffBudget, Redactor
from comparators.comparison import UNJUDGED
from comparators.http import EQUAL_ONCE_PARSED, OVER_CAP
from comparators.model import Comparison, Outcome
from proxy.experiment.sinks import BufferedSink
from proxy.metrics import SKIP_BODY_OVER_CAP, SKIP_CPU_BUDGET, FieldLabels, Metrics

log = logging.getLogger("shadowproxy.compare")
SKIP_REASONS = {UNJUDGED.detail: SKIP_CPU_BUDGET, OVER_CAP.detail: SKIP_BODY_OVER_CAP}
_CHARGED = frozenset((Outcome.MISMATCH, Outcome.NOISE))


@dataclass(frozen=True, slots=True)
class Experiment:
    """One request's two sides, as much as a record needs."""

    route: str
    operation: str
    method: str
    path: str
    request_id: str
    requester: str | None
    primary_status: int | None
    shadow_status: int | None
    primary_seconds: float
    shadow_seconds: float | None
    comparison: Comparison
    extra: dict[str, Any] = field(default_factory=dict)
    new_side: str = "shadow"  # which side is the new store/backend (readiness, guardrail)


def redact_query(path: str, redactor: Redactor) -> str:
    """Query values of sensitive names (``?email=...``) are replaced like any field value."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    return base + "?" + urlencode([(k, redactor.tree({k: v})[k]) for k, v in pairs])


Observer = Callable[[Experiment], None]


class Publisher:
    def __init__(
        self,
        *,
        metrics: Metrics,
        sink: BufferedSink,
        redactor: Redactor,
        observers: Sequence[Observer] = (),
        records: DiffBudget | None = None,
        budget: DiffBudget | None = None,
    ) -> None:
        """``records``: how many records per second are built and written (None: all); the
        counts, observers and field metrics see every comparison either way. ``budget``: the
        comparison CPU budget, charged with the time a mismatch takes to publish (its field
        counters and record are part of what a mismatching candidate costs)."""
        self._metrics = metrics
        self._budget = budget
        self._sink = sink
        self._redactor = redactor
        self._records = records
        self._fields = FieldLabels()
        self.observers = list(observers)

    def publish(self, exp: Experiment) -> None:
        """Count and record; never raises (a publish failure is counted and logged)."""
        try:
            if self._budget is None or exp.comparison.outcome not in _CHARGED:
                self._publish(exp)
            else:
                self._budget.spend(lambda: self._publish(exp))
        except Exception:
            self._metrics.internal_errors.labels("publish").inc()
            log.exception("publishing a comparison failed", extra={"request_id": exp.request_id})

    def _publish(self, exp: Experiment) -> None:
        comparison = exp.comparison
        self._metrics.children.get(
            self._metrics.comparisons, exp.route, exp.operation, comparison.outcome.value
        ).inc()
        for observe in self.observers:
            observe(exp)
        if comparison.outcome is Outcome.NOISE:
            # Recorded (with its noise_fields) so /mismatches and the report show it, but
            # not counted as mismatching fields: they are the learned noise.
            if self._may_record():
                self._sink.submit(self.record(exp))
            return
        if comparison.outcome is not Outcome.MISMATCH:
            if comparison.outcome is Outcome.SKIPPED:
                reason = SKIP_REASONS.get(comparison.detail, "other")
                self._metrics.children.get(self._metrics.compare_skipped, exp.route, reason).inc()
            elif comparison is EQUAL_ONCE_PARSED:
                self._metrics.children.get(self._metrics.parsed_matches, exp.route).inc()
            return
        children = self._metrics.children  # field labels are capped per route: memo bounded
        for name in comparison.fields:
            label = self._fields.label(exp.route, name)
            children.get(self._metrics.mismatch_fields, exp.route, label).inc()
        if comparison.summarised:
            children.get(self._metrics.diff_summarised, exp.route).inc()
        if not self._may_record():
            return
        record = self.record(exp)
        self._sink.submit(record)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "mismatch",
            extra={
                "request_id": exp.request_id,
                "route": exp.route,
                "fields": list(comparison.fields)[:20],
            },
        )

    def _may_record(self) -> bool:
        """Within the record budget; past it the record is skipped and counted."""
        if self._records is None or self._records.try_acquire():
            return True
        sink = self._sink.writer.name
        self._metrics.children.get(self._metrics.sink_records, sink, "skipped").inc()
        return False

    def record(self, exp: Experiment) -> dict[str, Any]:
        redact = self._redactor
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "route": exp.route,
            "operation": exp.operation,
            "method": exp.method,
            "path": redact_query(exp.path, redact),
            "request_id": exp.request_id,
            "requester": exp.requester,
            "outcome": exp.comparison.outcome.value,
            "primary_status": exp.primary_status,
            "shadow_status": exp.shadow_status,
            "primary_ms": round(exp.primary_seconds * 1000, 3),
            "shadow_ms": None
            if exp.shadow_seconds is None
            else round(exp.shadow_seconds * 1000, 3),
            "summarised": exp.comparison.summarised,
            "detail": exp.comparison.detail,
            "differences": [
                {"path": d.path, "kind": d.kind, "primary": d.primary, "shadow": d.shadow}
                for d in map(redact.difference, exp.comparison.differences)
            ],
            **redact.tree(exp.extra),
        }
