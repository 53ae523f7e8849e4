"""The report as JSON, in the shape docs/report.schema.json publishes (``format_version``
changes with any incompatible change). Numbers in examples stay exact (``exactjson``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from proxy.report.model import Report, Source, TargetReport
from proxy.report.window import iso
from proxy.store import exactjson

FORMAT = "shadowproxy-report"
FORMAT_VERSION = 1


def to_dict(report: Report) -> dict[str, Any]:
    win = report.window
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generated_at": iso(report.generated_at),
        "shadowproxy_version": report.version,
        "config": report.config,
        "window": {
            "since": win.since,
            "seconds": win.seconds,
            "start": iso(win.start),
            "end": iso(win.end),
        },
        "sources": {
            "sink": _source(report.sink),
            "counters": _source(report.counters),
            "readiness": _source(report.readiness),
        },
        "malformed_records": report.malformed_records,
        "warnings": list(report.warnings),
        "targets": [_target(t) for t in report.targets],
    }


def _source(source: Source) -> dict[str, Any]:
    return {
        "kind": source.kind,
        "location": source.location,
        "available": source.available,
        "error": source.error,
        "span": source.span,
    }


def _target(t: TargetReport) -> dict[str, Any]:
    return {
        "name": t.name,
        "kind": t.kind,
        "comparisons": None if t.rate is None else t.rate.comparisons,
        "outcomes": None if t.outcomes is None else dict(t.outcomes),
        "operations": {op: dict(counts) for op, counts in t.operations.items()},
        "mismatch_rate": None if t.rate is None else asdict(t.rate),
        "records": t.records,
        "noise": {
            "records": t.noise_records,
            "learned": None
            if t.noise is None
            else {**asdict(t.noise), "fields": [asdict(f) for f in t.noise.fields]},
        },
        "fields": [asdict(f) for f in t.fields],
        "timeline": {
            "bucket_seconds": t.bucket_seconds,
            "buckets": [{"start": iso(b.start), "mismatches": b.mismatches} for b in t.timeline],
        },
        "latency": [{**asdict(lat), "backends": list(lat.backends)} for lat in t.latency],
        "examples": [
            {
                "time": e.time,
                "request_id": e.request_id,
                "operation": e.operation,
                "method": e.method,
                "path": e.path,
                "primary_status": e.primary_status,
                "shadow_status": e.shadow_status,
                "primary_ms": e.primary_ms,
                "shadow_ms": e.shadow_ms,
                "primary_store": e.stores[0],
                "shadow_store": e.stores[1],
                "summarised": e.summarised,
                "detail": e.detail,
                "differences": [asdict(c) for c in e.changes],
            }
            for e in t.examples
        ],
        "readiness": None
        if t.verdicts is None
        else [
            {
                "decision": v.decision,
                "ready": v.ready,
                "window_seconds": v.window_seconds,
                "computed_at": v.computed_at,
                "criteria": [asdict(c) for c in v.criteria],
            }
            for v in t.verdicts
        ],
    }


def render(report: Report) -> str:
    return exactjson.dumps(to_dict(report), default=str).decode() + "\n"
