"""A second guard on what the report shows of a mismatch record.

The sink already holds every sensitive value as ``redacted:<keyed hash>``. A record written
before a field was marked sensitive, or by hand, may not: here every value under a sensitive
name (``redaction.fields`` and the resources' ``sensitive`` fields), every sensitive key value
in a difference path and every sensitive query value is hashed unless it already is a token.
Tokens are left as they are, so equal values still look equal across records."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from comparators import Redactor
from comparators.paths import Keyed, collapse_indexes, parse_path, render_path
from comparators.redact import PREFIX


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def value(redactor: Redactor, data: Any, *, sensitive: bool = False) -> Any:
    """``data`` with every value under a sensitive name hashed (``sensitive``: all of it)."""
    if sensitive:
        return data if data is None or _is_token(data) else redactor.value(data)
    if isinstance(data, dict):
        return {k: value(redactor, v, sensitive=redactor.is_sensitive(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [value(redactor, v) for v in data]
    return data


def difference_path(redactor: Redactor, path: str) -> tuple[str, bool]:
    """The path with sensitive keyed-list values hashed, and whether its last field is
    sensitive (then both sides' values are)."""
    try:
        segments = parse_path(path)
    except Exception:
        return collapse_indexes(path), True
    last = next((s for s in reversed(segments) if isinstance(s, str)), None)
    safe = [
        Keyed(s.field, redactor.value(s.text))
        if isinstance(s, Keyed) and redactor.is_sensitive(s.field) and not _is_token(s.text)
        else s
        for s in segments
    ]
    return render_path("", safe), redactor.is_sensitive(last)


def request_path(redactor: Redactor, path: str) -> str:
    """Query values of sensitive names hashed (the path itself is shown as the client sent
    it, as in the sink and the logs)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    safe = [(k, value(redactor, v, sensitive=redactor.is_sensitive(k))) for k, v in pairs]
    return base + "?" + urlencode(safe)
