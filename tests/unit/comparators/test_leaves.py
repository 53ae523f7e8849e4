from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from comparators.leaves import instants_equal, numbers_equal, parse_instant

NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("a", "b", "tolerance", "equal"),
    [
        (1, 1.0, 0.0, True),
        (Decimal("0.1"), 0.1, 0.0, True),
        (Decimal("0.10"), Decimal("0.1"), 0.0, True),
        (0.1 + 0.2, 0.3, 0.0, False),
        (0.1 + 0.2, 0.3, 1e-9, True),
        (10, 10.5, 0.5, True),
        (10, 10.51, 0.5, False),
        (2**53 + 1, float(2**53), 0.0, False),
        (NAN, NAN, 0.0, True),
        (NAN, 1.0, 100.0, False),
        (INF, INF, 0.0, True),
        (INF, 1e308, 1e308, False),
        (Decimal("sNaN"), 1, 0.0, False),
        (Decimal("9E+999999"), Decimal("-9E+999999"), 1.0, False),
    ],
)
def test_numbers_equal(a: float, b: float, tolerance: float, equal: bool) -> None:
    assert numbers_equal(a, b, tolerance) is equal
    assert numbers_equal(b, a, tolerance) is equal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        (
            "2024-01-02T05:04:05+02:00",
            datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("hello world", None),
        ("2024-13-45T00:00:00", None),
        ("12", None),
    ],
)
def test_parse_instant(text: str, expected: datetime | None) -> None:
    assert parse_instant(text) == expected


def test_instants_equal() -> None:
    a = datetime(2024, 1, 1, 0, 0, 0)
    b = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert not instants_equal(a, b, 0.0)
    assert instants_equal(a, b, 1.0)
    assert instants_equal(b, a, 1.0)
    assert instants_equal(a, a, 0.0)
