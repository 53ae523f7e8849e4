"""The report's nouns: computed once by ``proxy.report.build``, frozen, rendered three ways
(``render_json``, ``render_md``, ``render_html``). No behaviour beyond a few derived values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from comparators.errors import ShadowProxyError

TargetKind = Literal["resource", "route"]


class ReportError(ShadowProxyError):
    """The report cannot be made: bad input (an unknown resource or route, a --since that
    is not a duration) or a sink that cannot be read. Exit status 2."""


@dataclass(frozen=True)
class Window:
    """``[start, end]`` in seconds since the epoch; ``since`` as the user wrote it."""

    since: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Source:
    """Where one part of the report came from, and whether it could be read. ``error`` says
    why not, in the words the report shows."""

    kind: str
    location: str
    available: bool
    error: str | None = None
    span: str = ""


@dataclass(frozen=True)
class Rate:
    """``mismatches`` of ``comparisons``, with its 95% Wilson score interval; with
    ``unjudged`` differences (comparison CPU budget spent) the rate and interval are
    estimated from the judged ones (``proxy.readiness.verdict.mismatch_estimate``)."""

    mismatches: int
    comparisons: int
    rate: float | None
    lower95: float
    upper95: float
    unjudged: int = 0


@dataclass(frozen=True)
class FieldCount:
    """A differing field (list indexes collapsed): in how many of the window's mismatch
    records, and what the instance's ``shadowproxy_mismatch_fields_total`` says (None without
    counters)."""

    field: str
    records: int
    counter: int | None


@dataclass(frozen=True)
class TimeBucket:
    start: float
    mismatches: int


@dataclass(frozen=True)
class Latency:
    """One side of the comparison (``primary``, ``shadow``, ``secondary``): its backends,
    samples and quantiles estimated from the histogram buckets."""

    side: str
    backends: tuple[str, ...]
    samples: int
    p50_seconds: float | None
    p99_seconds: float | None


@dataclass(frozen=True)
class Change:
    """One difference of an example, values as the sink holds them (redacted)."""

    path: str
    kind: str
    primary: Any
    shadow: Any


@dataclass(frozen=True)
class Example:
    time: str
    request_id: str
    operation: str
    method: str
    path: str
    primary_status: int | None
    shadow_status: int | None
    primary_ms: float | None
    shadow_ms: float | None
    summarised: bool
    detail: str
    changes: tuple[Change, ...]
    stores: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class CriterionRow:
    name: str
    measured: Any
    operator: str
    threshold: Any
    status: str
    detail: str


@dataclass(frozen=True)
class VerdictView:
    """A readiness verdict as ``GET /readiness`` answers it."""

    decision: str
    ready: bool
    window_seconds: float
    computed_at: str
    criteria: tuple[CriterionRow, ...]


@dataclass(frozen=True)
class NoiseField:
    """A field the noise baseline tracks (``GET /noise``): how often it differed between
    primary and noise and between primary and shadow, and whether it counts as noise."""

    field: str
    noisy: bool
    noise_rate: float
    shadow_rate: float


@dataclass(frozen=True)
class LearnedNoise:
    """A route's learned noise as the instance answers ``GET /noise`` (its process's)."""

    backend: str
    learning: bool
    noise_comparisons: int
    shadow_comparisons: int
    fields_dropped: int
    fields: tuple[NoiseField, ...]


@dataclass(frozen=True)
class TargetReport:
    name: str
    kind: TargetKind
    #: outcome -> count summed over operations; None without counters
    outcomes: Mapping[str, int] | None
    #: operation -> outcome -> count
    operations: Mapping[str, Mapping[str, int]]
    rate: Rate | None
    records: int
    fields: tuple[FieldCount, ...]
    timeline: tuple[TimeBucket, ...]
    bucket_seconds: int
    latency: tuple[Latency, ...]
    examples: tuple[Example, ...]
    #: None when readiness could not be asked; () when the instance has no verdict for it
    verdicts: tuple[VerdictView, ...] | None
    #: records of outcome ``noise`` in the window (not in ``records``)
    noise_records: int = 0
    #: None when not known (no noise backend, or the instance could not be asked)
    noise: LearnedNoise | None = None


@dataclass(frozen=True)
class Report:
    config: str
    version: str
    generated_at: float
    window: Window
    sink: Source
    counters: Source
    readiness: Source
    targets: tuple[TargetReport, ...]
    malformed_records: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
