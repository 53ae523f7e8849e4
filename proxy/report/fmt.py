"""How numbers and values read in the Markdown and HTML reports (JSON keeps them raw)."""

from __future__ import annotations

import math
from typing import Any

from proxy.report.model import Rate, Source
from proxy.store import exactjson

MAX_VALUE_CHARS = 240


def count(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0%"
    return f"{value * 100:.3g}%"


def rate(r: Rate | None) -> str:
    """``0.12% (95% interval 0.05% to 0.3%; 12 of 10,000 comparisons)``."""
    if r is None:
        return "n/a (no counters)"
    if r.comparisons == 0:
        return "n/a (no comparisons)"
    unjudged = (
        f"; estimated, {count(r.unjudged)} differences not judged (comparison CPU budget)"
        if r.unjudged
        else ""
    )
    return (
        f"{pct(r.rate)} (95% interval {pct(r.lower95)} to {pct(r.upper95)}; "
        f"{count(r.mismatches)} of {count(r.comparisons)} comparisons{unjudged})"
    )


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.3g} ms"


def measured(value: Any) -> str:
    """A readiness criterion's measured value or threshold, as ``shadowproxy readiness``
    prints them."""
    if value is None:
        return "n/a"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def value(data: Any) -> str:
    """A difference's value as compact JSON, cut at MAX_VALUE_CHARS; absent is ``—``."""
    if data is None:
        return "—"
    text = exactjson.dumps(data, default=str).decode()
    if len(text) > MAX_VALUE_CHARS:
        return text[: MAX_VALUE_CHARS - 1] + "…"
    return text


def status(code: int | None) -> str:
    return "—" if code is None else str(code)


def source(s: Source) -> str:
    where = f"{s.kind} {s.location}"
    if not s.available:
        return f"{where}: UNAVAILABLE ({s.error})"
    return f"{where} ({s.span})" if s.span else where


def duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
