from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

from comparators.canonical import canonical, decimal_json, utc_iso
from comparators.markers import IGNORED, Drifted


def test_sorted_keys_make_order_irrelevant() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.50"), b"1.5"),
        (Decimal("1E+2"), b"100"),
        (Decimal("-0"), b"0"),
        (Decimal("0.1"), b"0.1"),
        (Decimal("1E+40"), b"1E+40"),
        (Decimal("1.5E-40"), b"1.5E-40"),
        (Decimal("NaN"), b'"decimal:NaN"'),
        (UUID(int=1), b'"00000000-0000-0000-0000-000000000001"'),
        (date(2024, 1, 2), b'"2024-01-02"'),
        (time(3, 4, 5), b'"03:04:05"'),
        (datetime(2024, 1, 2, 3, 4, 5), b'"2024-01-02T03:04:05+00:00"'),
        (
            datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            b'"2024-01-02T03:04:05+00:00"',
        ),
        ({3, 1, 2}, b"[1,2,3]"),
        (frozenset({"b", "a"}), b'["a","b"]'),
        ((1, 2), b"[1,2]"),
    ],
)
def test_conversions(value: object, expected: bytes) -> None:
    assert canonical(value) == expected


def test_ignored_placeholder_is_a_tagged_string() -> None:
    assert canonical([IGNORED]) == b'["\\u0000ignored"]'
    assert canonical([IGNORED]) != canonical(["ignored"])


def test_decimal_and_float_meet() -> None:
    assert canonical([Decimal("0.10"), Decimal("2")]) == canonical([0.1, 2])
    assert decimal_json(Decimal("12.3400")) == b"12.34"


def test_big_ints_and_non_string_keys_take_the_slow_path() -> None:
    assert canonical(2**70) == str(2**70).encode()
    assert canonical({"a": [2**70, (1, 2**64)]}) == b'{"a":[%d,[1,%d]]}' % (2**70, 2**64)
    assert canonical({2: "b", 1: "a"}) == b'{"1":"a","2":"b"}'
    assert canonical({(1, 2): True}) == b'{"(1, 2)":true}'
    assert canonical({2**70, 1}) == b"[1,%d]" % 2**70
    assert canonical([True, None, 1.5]) == b"[true,null,1.5]"


def test_unknown_objects_become_tagged_strings() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing()"

    assert canonical(Thing()) == b'"<Thing>Thing()"'
    assert canonical(b"ab") == b"\"<bytes>b'ab'\""


def nested(depth: int) -> list[object]:
    root: list[object] = []
    cursor = root
    for _ in range(depth):
        inner: list[object] = []
        cursor.append(inner)
        cursor = inner
    return root


def test_too_deep_for_orjson_falls_back_to_repr() -> None:
    assert canonical(nested(300)) == b"\x00" + repr(nested(300)).encode()


def test_never_raises_on_very_deep_nesting() -> None:
    deep = nested(100_000)
    first, second = canonical(deep), canonical(deep)
    assert first.startswith(b"\x00unrepresentable")
    assert first == second
    assert first != canonical(nested(100_000))


def test_unrepresentable_values_differ_by_identity() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    one, two = {"a": Broken()}, {"a": Broken()}
    assert canonical(one) == canonical(one)
    assert canonical(one) != canonical(two)


def test_utc_iso() -> None:
    assert utc_iso(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00+00:00"
    far = datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))
    assert utc_iso(far) == far.isoformat()


def test_a_drifted_value_never_has_the_bytes_of_a_plain_value() -> None:
    assert canonical(Drifted(["user"], "expected SS")) == b'{"\\u0000malformed":["user"]}'
    assert canonical(Drifted(["user"])) != canonical(["user"])
    assert canonical(Drifted({"b": 1, "a": 2})) == b'{"\\u0000malformed":{"a":2,"b":1}}'
    assert canonical([Drifted(2**70)]) == b'[{"\\u0000malformed":%d}]' % 2**70
    assert canonical(Drifted("x", "one reason")) == canonical(Drifted("x", "another"))


def test_drifted_values_are_equal_by_canonical_bytes() -> None:
    assert Drifted(["a", 1]) == Drifted(("a", 1), "another reason")
    assert Drifted(1) != Drifted(True)
    assert Drifted("x") != "x"
