"""Readiness metrics, created against an injected registry like ``proxy.metrics``."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.readiness.verdict import FLIP_READS, Verdict


@dataclass(frozen=True)
class ReadinessMetrics:
    ready: Gauge
    flush_failures: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReadinessMetrics:
        return cls(
            ready=Gauge(
                "shadowproxy_readiness_ready",
                "1 when the last read-flip readiness verdict computed for the target was "
                "ready, 0 when not.",
                ("target",),
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
            flush_failures=Counter(
                "shadowproxy_readiness_flush_failures",
                "Readiness counter flushes to the window store that failed (kept and retried).",
                registry=registry,
            ),
        )

    def observe(self, verdict: Verdict) -> None:
        """Export a read-flip verdict (write verdicts are not exported)."""
        if verdict.decision == FLIP_READS:
            self.ready.labels(verdict.target).set(1 if verdict.ready else 0)
