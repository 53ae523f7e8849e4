"""The report's time window: ``--since 24h`` and the record timestamps it filters on."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from proxy.report.model import ReportError, Window

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> seconds; anything else is a ReportError
    naming the units."""
    match = _DURATION.match(text)
    units = ", ".join(UNITS)
    if match is None:
        raise ReportError(f"--since {text!r}: expected a number and a unit ({units}), e.g. 24h")
    number, unit = float(match[1]), match[2].lower()
    if unit not in UNITS:
        raise ReportError(f"--since {text!r}: unknown unit {match[2]!r} (known: {units})")
    if number <= 0:
        raise ReportError(f"--since {text!r}: must be more than 0")
    return number * UNITS[unit]


def window(since: str, now: float | None = None) -> Window:
    end = time.time() if now is None else now
    return Window(since=since, start=end - parse_duration(since), end=end)


def record_time(value: object) -> float | None:
    """A record's ``time`` (``2026-12-01T10:57:15Z``; other ISO 8601 forms too) as epoch
    seconds; None when it is missing or not a time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
