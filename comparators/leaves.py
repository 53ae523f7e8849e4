"""Leaf equality: numbers with an absolute tolerance, timestamps within seconds.

Numbers are compared exactly: ``int``s as integers, a ``float`` as the decimal it prints as
(``0.1`` is ``Decimal("0.1")``), so a value read as ``Decimal`` from one store and as ``float``
from the other is equal when it prints the same. Booleans are not numbers (callers check).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

Number = int | float | Decimal


def numbers_equal(a: Number, b: Number, tolerance: float) -> bool:
    try:
        if a == b:
            return True
        da, db = _decimal(a), _decimal(b)
        if da.is_nan() or db.is_nan():
            return da.is_nan() and db.is_nan()
        if da.is_infinite() or db.is_infinite():
            return da == db
        return da == db or (tolerance > 0 and abs(da - db) <= _decimal(tolerance))
    except ArithmeticError:
        return False


def parse_instant(value: str) -> datetime | None:
    """An aware datetime if ``value`` is ISO-8601 (``Z`` accepted, naive means UTC)."""
    if len(value) < 10 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return as_utc(parsed)


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def instants_equal(a: datetime, b: datetime, tolerance: float) -> bool:
    a, b = as_utc(a), as_utc(b)
    return a == b or abs((a - b).total_seconds()) <= tolerance


def _decimal(value: Number) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
