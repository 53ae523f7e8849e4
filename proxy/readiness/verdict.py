"""Verdicts: pure functions from window totals and a config to "ready, and why (not)".

Read flip (``verdict``) — ready only when every criterion passed (``None``/unknown is not
ready):

================  =========================================================  ===============
criterion         measured                                                   passes when
================  =========================================================  ===============
comparisons       match + mismatch + transient + noise                       >= min
mismatch_rate     upper bound of the 95% Wilson interval of                  <= max
                  mismatch / comparisons (1.0 with no comparisons); with
                  unjudged differences, estimated from the judged sample
                  (``mismatch_estimate``)
shadow_error_     (shadow_error + timeout) / (comparisons + shadow_error +   <= max
rate              timeout); unknown with no attempts
new_p99_seconds   p99 of the new side's latency histogram (bucket upper      <= max
                  bound); unknown with no samples
missing_          required operations without a single comparison            empty
operations        (a shadow error, drop or skip does not count as exercised)
================  =========================================================  ===============

Stopping writes to the old store (``write_verdict``) judges the same read criteria over the
same window (after reads flipped, the new store is the primary and the old one the shadow;
a window that spans the flip counts both directions: a mismatch is a mismatch either way,
and latencies are filed by store, so ``new_p99_seconds`` stays the new store's) and adds:

==================  =======================================================  ==============
criterion           measured                                                 passes when
==================  =======================================================  ==============
reads_on_new_store  the live ``read_from``                                   == new store
verify              seconds since the last clean full-table verify STARTED   <= verify_max
                    (``proxy.readiness.verify_results``); unknown when none  _age_seconds
                    is complete, failed when the latest found differences
repair_log          entries waiting in the repair log, stuck ones included   <= 0
==================  =======================================================  ==============

A fact that could not be read (results file corrupt, Redis down) is unknown, with the reason
as the criterion's detail.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
    ReadinessConfig,
)
from proxy.readiness.totals import NEW, OLD, WindowTotals

Z95 = 1.96
FLIP_READS = "flip_reads"
STOP_OLD_WRITES = "stop_old_writes"

Measured = int | float | str | tuple[str, ...] | None


def wilson_upper(k: int, n: int, z: float = Z95) -> float:
    """Upper bound of the Wilson score interval for ``k`` successes in ``n`` trials
    (1.0 when ``n == 0``: nothing is known)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    p = k / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


@dataclass(frozen=True)
class MismatchEstimate:
    """The mismatch rate with its 95% interval, and in words how it was measured."""

    point: float | None
    lower: float
    upper: float
    detail: str


def mismatch_estimate(outcomes: Mapping[str, int]) -> MismatchEstimate:
    """The mismatch rate of outcome counts (``proxy.readiness.config`` defines it).

    Without ``unjudged`` answers it is ``mismatch / comparisons`` with its Wilson interval.
    With them, the differences were sampled by the comparison CPU budget: the share that
    differed is known exactly, the share of those that mismatch only from the judged ones,
    so the rate and both bounds scale the judged sample's by the share that differed. Every
    judged difference that was not a mismatch (``transient``, ``noise``, ``parsed_match``)
    keeps the estimate down; none judged at all counts every unjudged difference as a
    mismatch (bound 1.0). A status or header mismatch whose bodies were equal counts in the
    sample although it was not sampled: that can only raise the estimate.

    >>> e = mismatch_estimate({"match": 900, "mismatch": 10, "noise": 40, "unjudged": 50})
    >>> round(e.point, 4)
    0.02
    >>> e.detail.split(" (")[0]
    'estimated: 100 of 1000 answers differed, 50 judged'

    """
    count = outcomes.get
    k, transient, noise = count(MISMATCH, 0), count(TRANSIENT, 0), count(NOISE, 0)
    parsed = count(PARSED_MATCH, 0)
    n = count(MATCH, 0) + k + transient + noise
    unjudged = count(UNJUDGED, 0)
    if not unjudged:
        lower = 0.0 if n == 0 else max(0.0, 1.0 - wilson_upper(n - k, n))
        point = None if n == 0 else k / n
        detail = f"{k} mismatches / {n} comparisons, {transient} transient not counted" + (
            f", {noise} noise not counted" if noise else ""
        )
        return MismatchEstimate(point, lower, wilson_upper(k, n), detail)
    judged = k + transient + noise + parsed
    differed, answers = judged + unjudged, n + unjudged
    share = differed / answers
    lower = 0.0 if judged == 0 else share * max(0.0, 1.0 - wilson_upper(judged - k, judged))
    point = None if judged == 0 else share * k / judged
    detail = (
        f"estimated: {differed} of {answers} answers differed, {judged} judged "
        f"({k} mismatches, {transient} transient, {noise} noise, {parsed} equal once parsed)"
    )
    return MismatchEstimate(point, lower, share * wilson_upper(k, judged), detail)


@dataclass(frozen=True)
class Criterion:
    """``passed``: True, False, or None for unknown (which is never ready)."""

    name: str
    measured: Measured
    threshold: Measured
    passed: bool | None
    detail: str = ""
    operator: str = "<="

    @property
    def status(self) -> Literal["ok", "FAIL", "unknown"]:
        if self.passed is None:
            return "unknown"
        return "ok" if self.passed else "FAIL"


@dataclass(frozen=True)
class Verdict:
    target: str
    ready: bool
    criteria: tuple[Criterion, ...]
    window_seconds: float
    computed_at: float
    decision: str = FLIP_READS
    #: the numbers behind the criteria, and some only shown (``primary_error_rate``, p50s)
    stats: Mapping[str, int | float | None] = field(default_factory=dict)
    #: comparisons per operation
    operations: Mapping[str, int] = field(default_factory=dict)

    @property
    def failing(self) -> tuple[Criterion, ...]:
        """Criteria that did not pass (failed or unknown)."""
        return tuple(c for c in self.criteria if c.passed is not True)


def _ratio(k: int, n: int) -> float | None:
    return k / n if n > 0 else None


def stats(totals: WindowTotals) -> dict[str, int | float | None]:
    n = totals.comparisons
    estimate = mismatch_estimate(totals.by_outcome)
    attempts = totals.attempts
    return {
        "comparisons": n,
        MATCH: totals.outcome(MATCH),
        MISMATCH: totals.mismatches,
        TRANSIENT: totals.outcome(TRANSIENT),
        NOISE: totals.outcome(NOISE),
        SHADOW_ERROR: totals.outcome(SHADOW_ERROR),
        TIMEOUT: totals.outcome(TIMEOUT),
        PRIMARY_ERROR: totals.primary_errors,
        DROPPED: totals.outcome(DROPPED),
        SKIPPED: totals.outcome(SKIPPED),
        UNJUDGED: totals.outcome(UNJUDGED),
        PARSED_MATCH: totals.outcome(PARSED_MATCH),
        "attempts": attempts,
        "mismatch_rate": estimate.point,
        "mismatch_rate_upper95": estimate.upper,
        "shadow_error_rate": _ratio(totals.shadow_failures, attempts),
        "primary_error_rate": _ratio(totals.primary_errors, attempts + totals.primary_errors),
        "old_p50_seconds": totals.p(OLD, 0.5),
        "old_p99_seconds": totals.p(OLD, 0.99),
        "new_p50_seconds": totals.p(NEW, 0.5),
        "new_p99_seconds": totals.p(NEW, 0.99),
    }


def _g(value: float) -> str:
    return f"{value:.4g}"


def read_criteria(
    totals: WindowTotals, config: ReadinessConfig, *, required_operations: Iterable[str]
) -> tuple[Criterion, ...]:
    n = totals.comparisons
    estimate = mismatch_estimate(totals.by_outcome)
    point = "n/a" if estimate.point is None else _g(estimate.point)
    mismatch = Criterion(
        "mismatch_rate",
        estimate.upper,
        config.max_mismatch_rate,
        estimate.upper <= config.max_mismatch_rate,
        f"95% Wilson upper bound; point estimate {point} ({estimate.detail})",
    )

    attempts = totals.attempts
    failures = totals.shadow_failures
    if attempts == 0:
        errors = Criterion(
            "shadow_error_rate",
            None,
            config.max_shadow_error_rate,
            None,
            "unknown: no shadow attempts in the window",
        )
    else:
        rate = failures / attempts
        errors = Criterion(
            "shadow_error_rate",
            rate,
            config.max_shadow_error_rate,
            rate <= config.max_shadow_error_rate,
            f"({totals.outcome(SHADOW_ERROR)} shadow errors + {totals.outcome(TIMEOUT)} "
            f"timeouts) / {attempts} attempts",
        )

    samples = sum(totals.latency_of(NEW).values())
    p99 = totals.p(NEW, 0.99)
    if p99 is None:
        latency = Criterion(
            "new_p99_seconds",
            None,
            config.max_new_p99_seconds,
            None,
            "unknown: no latency samples for the new store",
        )
    else:
        latency = Criterion(
            "new_p99_seconds",
            p99,
            config.max_new_p99_seconds,
            p99 <= config.max_new_p99_seconds,
            f"new store, {samples} samples (bucket upper bound; timeouts count as infinite)",
        )

    required = tuple(dict.fromkeys(required_operations))
    seen = totals.operations_seen()
    missing = tuple(op for op in required if op not in seen)
    operations = Criterion(
        "missing_operations",
        missing,
        required,
        not missing,
        "every required operation has at least one comparison"
        if not missing
        else f"never compared: {', '.join(missing)}",
        operator="none of",
    )

    return (
        Criterion(
            "comparisons",
            n,
            config.min_comparisons,
            n >= config.min_comparisons,
            "match + mismatch + transient + noise",
            operator=">=",
        ),
        mismatch,
        errors,
        latency,
        operations,
    )


def verdict(
    totals: WindowTotals,
    config: ReadinessConfig,
    *,
    required_operations: Iterable[str],
    extra_criteria: Iterable[Criterion] = (),
    now: float | None = None,
    decision: str = FLIP_READS,
) -> Verdict:
    """Whether reads can be flipped to the new store. ``now`` (the verdict's ``computed_at``)
    defaults to the end of the totals' window."""
    criteria = (
        *read_criteria(totals, config, required_operations=required_operations),
        *extra_criteria,
    )
    return Verdict(
        target=totals.target,
        ready=all(c.passed is True for c in criteria),
        criteria=criteria,
        window_seconds=config.window_seconds,
        computed_at=totals.end if now is None else now,
        decision=decision,
        stats=stats(totals),
        operations=dict(totals.comparisons_by_operation()),
    )


@dataclass(frozen=True)
class WriteFacts:
    """What the stop-old-writes verdict needs besides the window. ``None`` is unknown; the
    matching ``*_detail`` says why (or what was found)."""

    read_from: str | None = None
    new_store: str | None = None
    verify_clean_at: float | None = None
    #: the latest verify found differences (``verify_clean_at`` is None): FAIL, not unknown
    verify_failed: bool = False
    verify_detail: str = ""
    repair_depth: int | None = None
    repair_detail: str = ""


def write_criteria(
    facts: WriteFacts, *, now: float, max_verify_age_seconds: float
) -> tuple[Criterion, Criterion, Criterion]:
    return (
        _reads_on_new_store(facts),
        _verify(facts, now, max_verify_age_seconds),
        _repair_log(facts),
    )


def _reads_on_new_store(facts: WriteFacts) -> Criterion:
    name, op = "reads_on_new_store", "=="
    if facts.new_store is None:
        detail = "unknown: the resource has no new store (set resources.<name>.new_store)"
        return Criterion(name, facts.read_from, None, None, detail, operator=op)
    if facts.read_from is None:
        detail = "unknown: the live flags could not be read"
        return Criterion(name, None, facts.new_store, None, detail, operator=op)
    on_new = facts.read_from == facts.new_store
    detail = (
        "reads are served by the new store"
        if on_new
        else f"flip read_from to {facts.new_store} first (gated by the read verdict)"
    )
    return Criterion(name, facts.read_from, facts.new_store, on_new, detail, operator=op)


def _verify(facts: WriteFacts, now: float, max_age: float) -> Criterion:
    if facts.verify_clean_at is None:
        if facts.verify_failed:
            return Criterion("verify", None, max_age, False, facts.verify_detail)
        detail = facts.verify_detail or "no full-table verify has been saved"
        return Criterion("verify", None, max_age, None, f"unknown: {detail}")
    age = now - facts.verify_clean_at
    return Criterion(
        "verify",
        age,
        max_age,
        age <= max_age,
        f"seconds since the last clean full-table verify started ({_iso(facts.verify_clean_at)})",
    )


def _repair_log(facts: WriteFacts) -> Criterion:
    if facts.repair_depth is None:
        detail = facts.repair_detail or "repair log depth not known"
        return Criterion("repair_log", None, 0, None, f"unknown: {detail}")
    return Criterion(
        "repair_log",
        facts.repair_depth,
        0,
        facts.repair_depth <= 0,
        "entries waiting in the repair log, stuck ones included"
        + ("" if facts.repair_depth <= 0 else ": run shadowproxy reconcile"),
    )


def write_verdict(
    totals: WindowTotals,
    config: ReadinessConfig,
    *,
    required_operations: Iterable[str],
    facts: WriteFacts,
    extra_criteria: Iterable[Criterion] = (),
    now: float | None = None,
) -> Verdict:
    """Whether writes to the old store can stop: the read criteria plus reads on the new
    store, a clean verify at most ``verify_max_age_seconds`` old and an empty repair log."""
    at = totals.end if now is None else now
    extra = write_criteria(facts, now=at, max_verify_age_seconds=config.verify_max_age_seconds)
    return verdict(
        totals,
        config,
        required_operations=required_operations,
        extra_criteria=(*extra, *extra_criteria),
        now=at,
        decision=STOP_OLD_WRITES,
    )


def refusal(result: Verdict) -> str:
    """Every criterion that did not pass, with its measured value, threshold and detail."""
    return "; ".join(
        f"{c.name} {_fmt(c.measured)} (needs {c.operator} {_fmt(c.threshold)}"
        f"{'; ' + c.detail if c.detail else ''})"
        for c in result.failing
    )


# --- output -------------------------------------------------------------------------------


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _fmt(value: Measured) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.0f}" if abs(value) >= 1e4 else _g(value)  # seconds, not 8.64e+04
    return str(value)


_OUTCOMES = (
    MATCH, MISMATCH, TRANSIENT, NOISE, SHADOW_ERROR, TIMEOUT, PRIMARY_ERROR, DROPPED, SKIPPED,
    UNJUDGED, PARSED_MATCH,
)  # fmt: skip
_TITLES = {FLIP_READS: "flip reads to the new store", STOP_OLD_WRITES: "stop old-store writes"}


def render_text(result: Verdict) -> str:
    """A table: criterion, measured, threshold, ok/FAIL/unknown, detail."""
    state = "READY" if result.ready else "NOT READY"
    title = _TITLES.get(result.decision, result.decision)
    head = (
        f"{result.target}: {state} to {title} "
        f"(window {_fmt(result.window_seconds)} s, computed {_iso(result.computed_at)})"
    )
    rows = [("criterion", "measured", "threshold", "result", "detail")]
    rows += [
        (c.name, _fmt(c.measured), f"{c.operator} {_fmt(c.threshold)}", c.status, c.detail)
        for c in result.criteria
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [head, ""]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    s = result.stats
    if s:
        lines.append("")
        counted = ", ".join(f"{name} {s[name]}" for name in _OUTCOMES if name in s)
        lines.append(f"outcomes: {counted}")
        lines.append(f"primary_error_rate: {_fmt(s.get('primary_error_rate'))}")
        lines.append(
            "latency p50 / p99 (s): "
            f"old {_fmt(s.get('old_p50_seconds'))} / {_fmt(s.get('old_p99_seconds'))}, "
            f"new {_fmt(s.get('new_p50_seconds'))} / {_fmt(s.get('new_p99_seconds'))}"
        )
    if result.operations:
        lines.append(
            "comparisons by operation: "
            + ", ".join(f"{op} {n}" for op, n in sorted(result.operations.items()))
        )
    return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    if isinstance(value, tuple):
        return list(value)
    return value


def to_dict(result: Verdict) -> dict[str, Any]:
    """A JSON-ready mapping (``inf`` latencies become the string ``"inf"``)."""
    return {
        "target": result.target,
        "decision": result.decision,
        "ready": result.ready,
        "window_seconds": result.window_seconds,
        "computed_at": _iso(result.computed_at),
        "criteria": [
            {
                "name": c.name,
                "measured": _json_value(c.measured),
                "operator": c.operator,
                "threshold": _json_value(c.threshold),
                "passed": c.passed,
                "status": c.status,
                "detail": c.detail,
            }
            for c in result.criteria
        ],
        "stats": {name: _json_value(v) for name, v in result.stats.items()},
        "operations": dict(result.operations),
    }


def to_json(result: Verdict, *, indent: int | None = 2) -> str:
    return json.dumps(to_dict(result), indent=indent, allow_nan=False)
