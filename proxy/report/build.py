"""One report from its parts: the targets the config declares (or the one asked for), the
window's mismatch records, the counters and the readiness verdicts."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comparators import Redactor
from proxy import __version__
from proxy.readiness.config import (
    DROPPED,
    MATCH,
    MISMATCH,
    NOISE,
    PARSED_MATCH,
    PRIMARY_ERROR,
    SHADOW_ERROR,
    SKIPPED,
    TIMEOUT,
    TRANSIENT,
    UNJUDGED,
)
from proxy.readiness.verdict import mismatch_estimate
from proxy.report import sources, views
from proxy.report.counters import Counters, quantile, samples
from proxy.report.model import (
    FieldCount,
    Latency,
    LearnedNoise,
    NoiseField,
    Rate,
    Report,
    ReportError,
    Source,
    TargetKind,
    TargetReport,
    TimeBucket,
)
from proxy.report.records import SinkScan, open_sink, records
from proxy.report.tally import Tally
from proxy.report.window import window
from proxy.settings import Settings

# In the order ``shadowproxy readiness`` prints them.
OUTCOMES = (
    MATCH, MISMATCH, TRANSIENT, NOISE, SHADOW_ERROR, TIMEOUT, PRIMARY_ERROR, DROPPED, SKIPPED,
    UNJUDGED,
)  # fmt: skip
SIDES = ("primary", "shadow", "secondary")


@dataclass(frozen=True)
class Options:
    config: str
    since: str = "24h"
    #: ("resource" | "route", name), or None for every target
    only: tuple[TargetKind, str] | None = None
    admin_url: str | None = None
    prometheus: str | None = None
    examples: int = 3
    top_fields: int = 10
    now: float | None = None


def select_targets(
    settings: Settings, only: tuple[TargetKind, str] | None
) -> list[tuple[str, TargetKind]]:
    resources: list[tuple[str, TargetKind]] = [(n, "resource") for n in settings.resources]
    routes: list[tuple[str, TargetKind]] = [(r.name, "route") for r in settings.routes]
    if only is None:
        return resources + routes
    kind, name = only
    known = [n for n, _ in (resources if kind == "resource" else routes)]
    if name not in known:
        raise ReportError(
            f"--{kind} {name!r}: no such {kind} in the config (known: {', '.join(known) or 'none'})"
        )
    return [(name, kind)]


def _redactor(settings: Settings) -> Redactor:
    """The config's sensitive names, keyed as the proxy's are when the key is set (so a
    value the guard has to hash matches the sink's tokens), else with a key of this run."""
    from proxy.shared import redactor

    env = dict(os.environ)
    if not env.get(settings.redaction.key_env):
        env[settings.redaction.key_env] = secrets.token_hex(32)
    return redactor(settings, env)


def build(settings: Settings, options: Options) -> Report:
    targets = select_targets(settings, options.only)
    win = window(options.since, options.now)
    scan = open_sink(settings.sink)
    tally = Tally(win, options.examples)
    tally.add_all(records(settings.sink, win, scan))
    only = None if options.only is None else options.only[1]
    if options.prometheus:
        counters, counted = sources.prometheus_counters(options.prometheus, win, only)
    else:
        counters, counted = sources.instance_counters(settings, options.admin_url)
    ready, asked = sources.readiness(settings, options.admin_url)
    learned = sources.noise(settings, options.admin_url)
    redactor = _redactor(settings)
    shown = [
        _target(name, kind, tally, counters, counted, ready if asked.available else None,
                redactor, options, learned.get(name))
        for name, kind in targets
        if options.only is not None or _has_data(name, kind, settings, tally, counters)
    ]  # fmt: skip
    return Report(
        config=options.config,
        version=__version__,
        generated_at=time.time() if options.now is None else options.now,
        window=win,
        sink=scan.source,
        counters=counted,
        readiness=asked,
        targets=tuple(shown),
        malformed_records=scan.malformed,
        warnings=tuple(_warnings(scan, tally, targets, only)),
    )


def _has_data(
    name: str, kind: TargetKind, settings: Settings, tally: Tally, counters: Counters
) -> bool:
    """Every resource, every route with a shadow, and whatever has records or counts."""
    if kind == "resource" or name in tally.targets or name in counters.targets():
        return True
    return any(r.name == name and r.shadow is not None for r in settings.routes)


def _warnings(
    scan: SinkScan, tally: Tally, targets: list[tuple[str, TargetKind]], only: str | None
) -> list[str]:
    out = list(scan.warnings)
    if scan.malformed:
        out.append(
            f"{_records(scan.malformed)} malformed, skipped (the first: {scan.first_malformed})"
        )
    if only is None:
        declared = {name for name, _ in targets}
        strays = sorted(set(tally.targets) - declared)
        if strays:
            out.append(
                f"records of routes or resources the config does not declare were left out: "
                f"{', '.join(strays)}"
            )
    return out


def _records(n: int) -> str:
    return f"{n:,} mismatch record" + ("" if n == 1 else "s")


def _target(
    name: str,
    kind: TargetKind,
    tally: Tally,
    counters: Counters,
    counted: Source,
    ready: Mapping[str, Any] | None,
    redactor: Redactor,
    options: Options,
    learned: Mapping[str, Any] | None = None,
) -> TargetReport:
    operations = counters.outcomes_of(name)
    outcomes = None
    if counted.available:
        outcomes = {o: sum(ops.get(o, 0) for ops in operations.values()) for o in OUTCOMES}
        # An unjudged difference is counted as ``skipped`` too: shown on its own.
        unjudged = min(counters.unjudged_of(name), outcomes[SKIPPED])
        outcomes[UNJUDGED], outcomes[SKIPPED] = unjudged, outcomes[SKIPPED] - unjudged
        outcomes[PARSED_MATCH] = min(counters.parsed_of(name), outcomes[MATCH])
    mine = tally.targets.get(name)
    return TargetReport(
        name=name,
        kind=kind,
        outcomes=outcomes,
        operations=operations,
        rate=None if outcomes is None else rate(outcomes),
        records=mine.records if mine else 0,
        fields=_fields(name, tally, counters if counted.available else None, options.top_fields),
        timeline=tuple(TimeBucket(start, n) for start, n in tally.timeline(name)),
        bucket_seconds=tally.step,
        latency=_latency(name, counters),
        examples=tuple(views.example(r, redactor) for r in (mine.recent if mine else ())),
        verdicts=None if ready is None else views.verdicts(name, ready),
        noise_records=mine.noise_records if mine else 0,
        noise=_noise(learned),
    )


def _noise(learned: Mapping[str, Any] | None) -> LearnedNoise | None:
    """A route of ``GET /noise``'s answer; None when missing or not in its shape."""
    if not isinstance(learned, Mapping):
        return None
    try:
        fields = tuple(
            NoiseField(str(f["field"]), bool(f["noisy"]), float(f["noise_rate"]),
                       float(f["shadow_rate"]))
            for f in learned["fields"]
        )  # fmt: skip
        return LearnedNoise(
            backend=str(learned["backend"]),
            learning=bool(learned["learning"]),
            noise_comparisons=int(learned["noise_comparisons"]),
            shadow_comparisons=int(learned["shadow_comparisons"]),
            fields_dropped=int(learned["fields_dropped"]),
            fields=fields,
        )
    except (KeyError, TypeError, ValueError):
        return None


def rate(outcomes: Mapping[str, int]) -> Rate:
    """As readiness counts (``proxy.readiness.verdict.mismatch_estimate``): comparisons are
    match + mismatch + transient + noise (a difference only in learned noise is compared,
    not a mismatch); with unjudged differences the rate is estimated from the judged ones."""
    n = sum(outcomes.get(o, 0) for o in (MATCH, MISMATCH, TRANSIENT, NOISE))
    estimate = mismatch_estimate(outcomes)
    return Rate(
        outcomes.get(MISMATCH, 0),
        n,
        estimate.point,
        estimate.lower,
        estimate.upper,
        unjudged=outcomes.get(UNJUDGED, 0),
    )


def _fields(name: str, tally: Tally, counters: Counters | None, top: int) -> tuple[FieldCount, ...]:
    mine = tally.targets.get(name)
    seen = dict(mine.fields) if mine else {}
    counted = counters.fields_of(name) if counters else {}
    rows = [
        FieldCount(f, seen.get(f, 0), counted.get(f) if counters else None)
        for f in set(seen) | set(counted)
    ]
    rows.sort(key=lambda r: (-r.records, -(r.counter or 0), r.field))
    return tuple(rows[:top])


def _latency(name: str, counters: Counters) -> tuple[Latency, ...]:
    out = []
    for side in sorted(counters.sides_of(name), key=lambda s: (*SIDES, s).index(s)):
        buckets = counters.latency[(name, side)]
        out.append(
            Latency(
                side=side,
                backends=tuple(sorted(counters.backends.get((name, side), ()))),
                samples=samples(buckets),
                p50_seconds=quantile(buckets, 0.5),
                p99_seconds=quantile(buckets, 0.99),
            )
        )
    return tuple(out)
