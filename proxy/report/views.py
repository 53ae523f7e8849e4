"""From what the sources hold (a mismatch record as the sink wrote it, the JSON of ``GET
/readiness``) to the report's frozen views, tolerant of missing or mistyped keys: an older
record or instance yields empty values, never an error. Every value shown of a record goes
through ``scrub``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from comparators import Redactor
from proxy.report import scrub
from proxy.report.model import Change, CriterionRow, Example, VerdictView


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> Any:
    """A number of the record (exactjson reads ``1.5`` as a Decimal), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value) if isinstance(value, Decimal) else value


def example(record: Mapping[str, Any], redactor: Redactor) -> Example:
    changes = []
    differences = record.get("differences")
    for d in differences if isinstance(differences, list) else ():
        if not isinstance(d, dict):
            continue
        path, sensitive = scrub.difference_path(redactor, _text(d.get("path")))
        changes.append(
            Change(
                path=path,
                kind=_text(d.get("kind")),
                primary=scrub.value(redactor, d.get("primary"), sensitive=sensitive),
                shadow=scrub.value(redactor, d.get("shadow"), sensitive=sensitive),
            )
        )
    stores = (record.get("primary_store"), record.get("shadow_store"))
    return Example(
        time=_text(record.get("time")),
        request_id=_text(record.get("request_id")),
        operation=_text(record.get("operation")),
        method=_text(record.get("method")),
        path=scrub.request_path(redactor, _text(record.get("path"))),
        primary_status=_number(record.get("primary_status")),
        shadow_status=_number(record.get("shadow_status")),
        primary_ms=_number(record.get("primary_ms")),
        shadow_ms=_number(record.get("shadow_ms")),
        summarised=record.get("summarised") is True,
        detail=_text(record.get("detail")),
        changes=tuple(changes),
        stores=(_text(stores[0]) or None, _text(stores[1]) or None),
    )


def verdicts(name: str, ready: Mapping[str, Any]) -> tuple[VerdictView, ...]:
    found = [
        v
        for key in ("verdicts", "stop_old_writes")
        for v in ready.get(key) or ()
        if isinstance(v, dict) and v.get("target") == name
    ]
    return tuple(
        VerdictView(
            decision=str(v.get("decision", "")),
            ready=v.get("ready") is True,
            window_seconds=float(v.get("window_seconds") or 0),
            computed_at=str(v.get("computed_at", "")),
            criteria=tuple(
                CriterionRow(
                    name=str(c.get("name", "")),
                    measured=c.get("measured"),
                    operator=str(c.get("operator", "")),
                    threshold=c.get("threshold"),
                    status=str(c.get("status", "unknown")),
                    detail=str(c.get("detail", "")),
                )
                for c in v.get("criteria") or ()
                if isinstance(c, dict)
            ),
        )
        for v in found
    )
