"""What the triage page shows, gathered from the live process: the flags of every target, the
readiness verdicts, the comparison counters, and the newest mismatch records a filter keeps.

Nothing here renders HTML (``proxy.control.triage`` does) and nothing here raises past a
bad filter (``BadRequest``): a verdict or a sink that cannot be read becomes a message on
the page, never an error answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiMapping
from prometheus_client import CollectorRegistry

from comparators import collapse_indexes
from proxy.control.decisions import Decisions
from proxy.errors import BadRequest
from proxy.flags import FlagSnapshot
from proxy.flags.model import RESOURCE_FLAGS, ROUTE_FLAGS, flag_value
from proxy.metrics import exposition_registry
from proxy.readiness import Verdict
from proxy.store import exactjson

log = logging.getLogger("shadowproxy.triage")

SCANNED = 1000  # the newest records a filter looks through (the sink's ``recent`` cap)
MAX_SHOWN = 200
DEFAULT_SHOWN = 20
MAX_FIELD_CHARS = 200
TOP_FIELDS = 10
MAX_VALUE_CHARS = 2000
MAX_DIFFERENCES = 100
OUTCOMES = (
    "match", "mismatch", "transient", "noise", "shadow_error", "timeout", "primary_error",
    "dropped", "skipped",
)  # fmt: skip
FILTER_PARAMS = frozenset({"route", "field", "limit"})


@dataclass(frozen=True)
class Filters:
    """``route`` and ``field`` narrow the mismatch records; ``limit`` caps how many show."""

    route: str | None = None
    field: str | None = None
    limit: int = DEFAULT_SHOWN

    def keeps(self, record: Mapping[str, Any]) -> bool:
        if self.route is not None and record.get("route") != self.route:
            return False
        return self.field is None or any(_under(path, self.field) for path in record_fields(record))


def _under(path: str, prefix: str) -> bool:
    """``address`` keeps ``address``, ``address.city`` and ``address[].city``."""
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")


def record_fields(record: Mapping[str, Any]) -> list[str]:
    """The record's differing fields, list indexes collapsed (as the metrics label them)."""
    differences = record.get("differences")
    if not isinstance(differences, list):
        return []
    paths = (d.get("path") for d in differences if isinstance(d, dict))
    return list(dict.fromkeys(collapse_indexes(p) for p in paths if isinstance(p, str)))


def parse_filters(query: MultiMapping[str], routes: Iterable[str]) -> Filters:
    """The page's query string; an unknown parameter, a repeated one, a route this process
    does not know, a malformed field or limit is refused (400). Empty means "any"."""
    unknown = sorted(set(query) - FILTER_PARAMS)
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}: use route, field or limit")
    for name in FILTER_PARAMS:
        if len(query.getall(name, [])) > 1:
            raise BadRequest(f"query parameter {name!r} is given more than once")
    route = query.get("route") or None
    known = sorted(set(routes))
    if route is not None and route not in known:
        names = ", ".join(known) or "none"
        raise BadRequest(f"no route or resource named {route!r} (known: {names})")
    field_ = query.get("field") or None
    if field_ is not None and (len(field_) > MAX_FIELD_CHARS or not field_.isprintable()):
        raise BadRequest(f"field must be printable and at most {MAX_FIELD_CHARS} characters")
    raw = query.get("limit") or str(DEFAULT_SHOWN)
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_SHOWN:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_SHOWN}, got {raw!r}")
    return Filters(route, field_, int(raw))


@dataclass(frozen=True)
class TargetFlags:
    name: str
    kind: str  # "resource" | "route"
    flags: tuple[tuple[str, str], ...]


def flag_tables(snapshot: FlagSnapshot) -> list[TargetFlags]:
    tables = [
        TargetFlags(name, "resource", _flags(state, RESOURCE_FLAGS))
        for name, state in sorted(snapshot.resources.items())
    ]
    tables += [
        TargetFlags(name, "route", _flags(state, ROUTE_FLAGS))
        for name, state in sorted(snapshot.routes.items())
    ]
    return tables


def _flags(state: Any, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, _text(flag_value(state, name))) for name in names)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class TargetReadiness:
    """The flip-reads verdict, and for a resource the stop-old-writes one; ``error`` when they
    could not be computed (the page says so instead of failing)."""

    name: str
    kind: str
    reads: Verdict | None = None
    writes: Verdict | None = None
    error: str | None = None


async def readiness(decisions: Decisions) -> list[TargetReadiness]:
    out = []
    for name, target in sorted(decisions.targets.items()):
        try:
            reads = await decisions.verdict(name)
            writes = await decisions.write_verdict(name) if target.kind == "resource" else None
        except Exception as e:
            log.exception("triage: a readiness verdict failed", extra={"target": name})
            out.append(TargetReadiness(name, target.kind, error=f"{type(e).__name__}: {e}"))
            continue
        out.append(TargetReadiness(name, target.kind, reads, writes))
    return out


@dataclass(frozen=True)
class RouteCounts:
    """Comparison outcomes of one route or resource since this process (or, with several
    workers, the oldest of them) started, summed over its operations."""

    route: str
    outcomes: Mapping[str, int] = field(default_factory=dict)
    top_fields: tuple[tuple[str, int], ...] = ()

    @property
    def comparisons(self) -> int:
        return sum(self.outcomes.get(o, 0) for o in ("match", "mismatch", "transient", "noise"))

    @property
    def mismatch_rate(self) -> float | None:
        n = self.comparisons
        return self.outcomes.get("mismatch", 0) / n if n else None


def counters(registry: CollectorRegistry) -> list[RouteCounts]:
    """From the registry ``/metrics`` serves: ``shadowproxy_comparisons_total`` and
    ``shadowproxy_mismatch_fields_total``."""
    outcomes: dict[str, dict[str, int]] = {}
    fields: dict[str, dict[str, int]] = {}
    for labels, value in _samples(registry, "shadowproxy_comparisons"):
        per_route = outcomes.setdefault(labels.get("route", "?"), {})
        outcome = labels.get("outcome", "?")
        per_route[outcome] = per_route.get(outcome, 0) + int(value)
    for labels, value in _samples(registry, "shadowproxy_mismatch_fields"):
        per_route = fields.setdefault(labels.get("route", "?"), {})
        name = labels.get("field", "?")
        per_route[name] = per_route.get(name, 0) + int(value)
    routes = sorted(set(outcomes) | set(fields))
    return [
        RouteCounts(r, outcomes.get(r, {}), _top(fields.get(r, {}), TOP_FIELDS)) for r in routes
    ]


def _samples(registry: CollectorRegistry, family: str) -> Iterable[tuple[dict[str, str], float]]:
    for metric in exposition_registry(registry).collect():
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name == family + "_total":
                yield sample.labels, sample.value


def _top(counts: Mapping[str, int], n: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def known_fields(counts: Iterable[RouteCounts], records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Field names to suggest in the filter: those counted, and those in the records read."""
    names = {name for c in counts for name, _ in c.top_fields}
    for record in records:
        names.update(record_fields(record))
    return sorted(names)


@dataclass(frozen=True)
class DiffRow:
    """One difference, its two sides as JSON text (None: the side does not have the field)."""

    path: str
    kind: str
    primary: str | None
    shadow: str | None
    hit: bool = False  # under the field filter


@dataclass(frozen=True)
class RecordView:
    """One mismatch record as the page shows it (values were redacted when it was written)."""

    time: str
    route: str
    operation: str
    method: str
    path: str
    request_id: str
    requester: str
    primary_status: str
    shadow_status: str
    primary_ms: str
    shadow_ms: str
    primary_label: str
    shadow_label: str
    detail: str
    summarised: bool
    noise: (
        bool  # outcome ``noise``: every differing field is learned noise (proxy.experiment.noise)
    )
    noise_fields: tuple[str, ...]
    differences: tuple[DiffRow, ...]
    more: int  # differences over MAX_DIFFERENCES, not shown


def record_view(record: Mapping[str, Any], filters: Filters) -> RecordView:
    raw = record.get("differences")
    differences = [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []
    rows = tuple(_row(d, filters.field) for d in differences[:MAX_DIFFERENCES])

    def text(key: str) -> str:
        value = record.get(key)
        return "" if value is None else str(value)

    def side(role: str) -> str:
        store = record.get(f"{role}_store")
        return f"{role} · {store}" if store else role

    return RecordView(
        time=text("time"), route=text("route"), operation=text("operation"),
        method=text("method"), path=text("path"), request_id=text("request_id"),
        requester=text("requester") or "none", primary_status=text("primary_status"),
        shadow_status=text("shadow_status"), primary_ms=text("primary_ms"),
        shadow_ms=text("shadow_ms"), primary_label=side("primary"), shadow_label=side("shadow"),
        detail=text("detail"), summarised=record.get("summarised") is True,
        noise=record.get("outcome") == "noise", noise_fields=_strings(record.get("noise_fields")),
        differences=rows, more=max(0, len(differences) - MAX_DIFFERENCES),
    )  # fmt: skip


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _row(difference: Mapping[str, Any], field_: str | None) -> DiffRow:
    path = str(difference.get("path", ""))
    kind = str(difference.get("kind", ""))
    return DiffRow(
        path,
        kind,
        None if kind == "added" else json_text(difference.get("primary")),
        None if kind == "removed" else json_text(difference.get("shadow")),
        hit=field_ is not None and _under(collapse_indexes(path), field_),
    )


def json_text(value: Any) -> str:
    """A value as JSON (numbers exact), cut at ``MAX_VALUE_CHARS``."""
    try:
        text = exactjson.dumps(value, default=str).decode()
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + " …"
