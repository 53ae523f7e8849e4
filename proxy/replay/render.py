"""What replay prints: a line per request (with its differences), the totals, or one JSON
object. Everything shown is redacted: differences come hashed from the sides, and a
store-mode key of a sensitive field is shown as its hash."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from comparators import Redactor
from proxy.replay.model import Request, Result, Totals, Verdict
from proxy.replay.records import Loaded
from proxy.settings import Settings
from proxy.store import exactjson

SHOWN_DIFFERENCES = 5
VALUE_CHARS = 80
PathOf = Callable[[Request], str]


def path_shower(settings: Settings, redactor: Redactor) -> PathOf:
    """A request's path as shown: a store-mode key of a sensitive field hashed."""
    hidden = {
        name: resource.prefix + "/"
        for name, resource in settings.resources.items()
        if redactor.is_sensitive(resource.key)
    }

    def path_of(request: Request) -> str:
        prefix = hidden.get(request.target) if request.kind == "store" else None
        if prefix is None or not request.path.startswith(prefix):
            return request.path
        key, sep, query = request.path[len(prefix) :].partition("?")
        return prefix + quote(redactor.value(key), safe=":") + sep + query

    return path_of


def _value(value: Any) -> str:
    text = exactjson.dumps(value, default=str).decode("utf-8", "replace")
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _difference(d: dict[str, Any]) -> str:
    where = d.get("backend") or d.get("store")
    sides = [(k, v) for k, v in d.items() if k not in ("path", "kind", "backend", "store")]
    shown = " vs ".join(f"{k} {_value(v)}" for k, v in sides)
    return f"{where + ': ' if where else ''}{d['path']} {d['kind']}: {shown}"


def text(results: Sequence[Result], totals: Totals, loaded: Loaded, path_of: PathOf) -> str:
    lines = []
    width = max((len(r.verdict.label) for r in results), default=0)
    for r in results:
        request = r.case.request
        records = f" ({r.case.records} records)" if r.case.records > 1 else ""
        sides = ", ".join(f"{k} {v}" for k, v in r.sides.items())
        head = f"{r.verdict.label.upper():<{width}}  {request.target}  {request.method} "
        head += path_of(request) + records + (f"  [{sides}]" if sides else "")
        lines.append(head)
        if r.detail:
            lines.append(f"    {r.detail}")
        for d in r.differences[:SHOWN_DIFFERENCES]:
            lines.append(f"    {_difference(dict(d))}")
        if len(r.differences) > SHOWN_DIFFERENCES:
            lines.append(f"    … {len(r.differences) - SHOWN_DIFFERENCES} more differences")
    lines.extend(summary(totals, loaded))
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary(totals: Totals, loaded: Loaded) -> list[str]:
    records = sum(totals.records.values())
    requests = sum(totals.requests.values())
    lines = [f"replay: {_n(records, 'record')}, {_n(requests, 'request')}, from {loaded.source}"]
    for verdict in Verdict:
        n, m = totals.requests.get(verdict, 0), totals.records.get(verdict, 0)
        lines.append(f"  {verdict.label}: {_n(n, 'request')} ({_n(m, 'record')})")
    if loaded.malformed:
        lines.append(f"  malformed, skipped: {loaded.malformed}")
    return lines


def as_json(
    results: Sequence[Result], totals: Totals, loaded: Loaded, path_of: PathOf, *, strict: bool
) -> dict[str, Any]:
    return {
        "source": loaded.source,
        "remaining": totals.remaining(strict=strict),
        "totals": {
            "requests": {v.value: totals.requests.get(v, 0) for v in Verdict},
            "records": {v.value: totals.records.get(v, 0) for v in Verdict},
            "malformed": loaded.malformed,
        },
        "malformed": loaded.examples,
        "results": [_result(r, path_of) for r in results],
    }


def _result(result: Result, path_of: PathOf) -> dict[str, Any]:
    request = result.case.request
    target = "route" if request.kind == "http" else "resource"
    return {
        "id": request.ident,
        "verdict": result.verdict.value,
        "kind": request.kind,
        target: request.target,
        "operation": request.operation,
        "method": request.method,
        "path": path_of(request),
        "records": result.case.records,
        "request_ids": list(result.case.request_ids),
        "detail": result.detail,
        "sides": dict(result.sides),
        "differences": [dict(d) for d in result.differences],
    }
