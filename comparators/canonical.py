"""Canonical JSON bytes: equal bytes mean equal values, so equality needs no walk.

``canonical(v)`` is ``orjson.dumps`` with sorted keys plus a few conversions so store values
and JSON values meet: ``Decimal`` -> the JSON number it denotes, ``datetime`` -> ISO-8601 in
UTC (naive means UTC), ``date``/``time`` -> ISO-8601, ``set`` -> list sorted by canonical bytes,
``UUID`` -> its string, a ``Drifted`` value -> ``{"\u0000malformed": raw}`` (never a plain
value's bytes). Integers beyond 64 bits and non-string dict keys take a slower path.
Anything else becomes a tagged string. It never raises.

The converse does not hold: ``1`` and ``1.0`` have different bytes and are still equal for the
differ, which is the judge; the bytes are only the fast path. Float NaN serialises as ``null``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

import orjson

from comparators.markers import DRIFTED_KEY, IGNORED_JSON, Drifted, Ignored

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_SLOW_OPTIONS = _OPTIONS | orjson.OPT_NON_STR_KEYS
_INT64 = range(-(2**63), 2**64)
_PLAIN_EXPONENTS = range(-30, 31)
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return _canonical_slow(value)


def utc_iso(value: datetime) -> str:
    """ISO-8601 of the instant in UTC (``+00:00``); naive datetimes are taken as UTC."""
    try:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC).isoformat()
        return value.astimezone(UTC).isoformat()
    except OverflowError:
        return value.isoformat()


def decimal_json(value: Decimal) -> bytes:
    """The JSON number text of a finite Decimal (``1.50`` -> ``1.5``, ``1E+2`` -> ``100``),
    every digit kept (``normalize()`` under the default context would round to 28)."""
    normal = value.normalize(_EXACT)
    if normal.adjusted() not in _PLAIN_EXPONENTS:
        return str(normal).encode()
    if normal == normal.to_integral_value():
        return str(int(normal)).encode()
    return format(normal, "f").encode()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if value.is_finite():
            return orjson.Fragment(decimal_json(value))
        return f"decimal:{value}"
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=canonical)
    if isinstance(value, Ignored):
        return orjson.Fragment(IGNORED_JSON)
    if isinstance(value, Drifted):
        return {DRIFTED_KEY: value.raw}
    return _describe(value)


def _describe(value: Any) -> str:
    try:
        return f"<{type(value).__name__}>{value!r}"
    except Exception:
        return f"<{type(value).__name__} at {id(value):#x}>"


def _canonical_slow(value: Any) -> bytes:
    try:
        return orjson.dumps(_encodable(value), default=_default, option=_SLOW_OPTIONS)
    except (orjson.JSONEncodeError, RecursionError, TypeError, ValueError):
        try:
            return b"\x00" + repr(value).encode("utf-8", "backslashreplace")
        except Exception:
            return b"\x00unrepresentable:%x" % id(value)


def _encodable(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else orjson.Fragment(str(value).encode())
    if isinstance(value, dict):
        return {_key(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_encodable(v) for v in value), key=canonical)
    if isinstance(value, Drifted):
        return {DRIFTED_KEY: _encodable(value.raw)}
    return value


def _key(key: Any) -> Any:
    if isinstance(key, str | int | float | bool | date | time) or key is None:
        return key
    return str(key)
