"""Exact numbers: a difference in any digit of a Decimal or a big integer is a difference,
a different writing of the same number is not (``1.50`` and ``1.5``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from comparators import Outcome, RuleSpec, compare, compile_rules
from comparators.canonical import canonical, decimal_json

RULES = compile_rules(RuleSpec())
D38 = "0.12345678901234567890123456789012345678"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Decimal("0.12345678901234567890"), Decimal("0.12345678901234567891")),  # 20th digit
        (Decimal(D38), Decimal(D38[:-1] + "9")),  # 38th digit: beyond the default context's 28
        (Decimal("1.000000000000000000000001"), Decimal(1)),
        (2**64 + 1, 2**64 + 2),
        (Decimal("18446744073709551617"), 18446744073709551616),
    ],
)
def test_a_difference_in_any_digit_is_a_mismatch(a: object, b: object) -> None:
    assert canonical(a) != canonical(b)
    assert compare({"k": a}, {"k": b}, RULES).outcome is Outcome.MISMATCH


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Decimal("1.50"), Decimal("1.5")),
        (Decimal("100"), 100),
        (Decimal("1E+2"), 100),
        (Decimal("0.0"), 0),
        (Decimal(D38 + "000"), Decimal(D38)),
        (Decimal("18446744073709551617"), 18446744073709551617),
    ],
)
def test_the_same_number_written_otherwise_is_a_match(a: object, b: object) -> None:
    assert compare({"k": a}, {"k": b}, RULES).outcome is Outcome.MATCH


def test_decimal_json_keeps_every_digit() -> None:
    assert decimal_json(Decimal(D38 + "00")) == D38.encode()
