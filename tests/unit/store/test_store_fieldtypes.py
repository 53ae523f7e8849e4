from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from asyncpg.pgproto.pgproto import UUID as AsyncpgUUID
from hypothesis import given
from hypothesis import strategies as st

from proxy.store import exactjson
from proxy.store.fieldtypes import (
    FieldType,
    InvalidField,
    canonical_json,
    canonicaliser,
    render_datetime,
    render_uuid,
    renderer,
)


def canon(type_text: str, value: Any) -> Any:
    return canonicaliser(FieldType.parse(type_text))(value)


def render(type_text: str, value: Any) -> Any:
    return renderer(FieldType.parse(type_text))(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("string", FieldType("string")),
        ("json", FieldType("json")),
        ("list<int>", FieldType("int", "list")),
        ("set< uuid >", FieldType("uuid", "set")),
    ],
)
def test_parse_types(text: str, expected: FieldType) -> None:
    assert FieldType.parse(text) == expected
    assert FieldType.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("str", "unknown type 'str'"),
        ("list<json>", "takes a scalar T"),
        ("list<list<int>>", "unknown type"),
        ("set<bool>", "no boolean set"),
        ("map<string>", "unknown type"),
    ],
)
def test_parse_refuses_unknown_types(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FieldType.parse(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The digits and scale as PostgreSQL numeric keeps them; no negative zero.
        ("1.50", "1.50"),
        ("-0", "0"),
        ("-0.00", "0.00"),
        ("0.000", "0.000"),
        ("1e2", "100"),
        ("1.5E+3", "1500"),
        (12, "12"),
        (0.1, "0.1"),
        (Decimal("0.12345678901234567890"), "0.12345678901234567890"),
        ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
        ("1E-130", "1E-130"),
        # trailing zeros do not count towards the 38 digits: DynamoDB trims them
        ("1." + "0" * 60, "1." + "0" * 60),
    ],
)
def test_decimal_canonical(value: Any, expected: str) -> None:
    result = canon("decimal", value)
    assert result.as_tuple() == Decimal(expected).as_tuple()


@pytest.mark.parametrize(
    "value",
    [
        True,
        "abc",
        "NaN",
        "Infinity",
        "1_000",
        " 1",
        float("nan"),
        "123456789012345678901234567890123456789",
        "1.00000000000000000000000000000000000001",
        "1E-131",
        "1E+126",
        "1E+999999999",
        "0E-200",
        "1." + "0" * 200,
        [1],
    ],
)
def test_decimal_refuses(value: Any) -> None:
    with pytest.raises(InvalidField):
        canon("decimal", value)


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("1.5"), "1.5"),
        (Decimal("1.50"), "1.50"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("0.00"), "0.00"),
    ],
)
def test_decimal_renders_fixed_point(value: Decimal, rendered: str) -> None:
    """A JSON string of the digits, which compares as the number it is."""
    out = render("decimal", value)
    assert exactjson.dumps(out) == f'"{rendered}"'.encode()
    assert out == value and isinstance(out, Decimal)


def test_float_canonical() -> None:
    assert canon("float", 3) == 3.0 and isinstance(canon("float", 3), float)
    assert str(canon("float", -0.0)) == "0.0"
    assert canon("float", 1e125) == 1e125


@pytest.mark.parametrize(
    "value",
    [True, "1.5", float("inf"), 1e-200, 1e200, 10**400, Decimal("1E+400"), Decimal("NaN")],
)
def test_float_refuses(value: Any) -> None:
    with pytest.raises(InvalidField):
        canon("float", value)


def test_float_takes_an_exact_number_as_the_nearest_double() -> None:
    assert canon("float", Decimal("0.1")) == 0.1 and type(canon("float", Decimal("2"))) is float


@pytest.mark.parametrize("value", [True, 1.0, "1", 2**63, -(2**63) - 1])
def test_int_refuses(value: Any) -> None:
    with pytest.raises(InvalidField):
        canon("int", value)


def test_int_range_edges() -> None:
    assert canon("int", 2**63 - 1) == 2**63 - 1
    assert canon("int", -(2**63)) == -(2**63)


def test_datetime_is_utc_and_rendered_with_microseconds() -> None:
    value = canon("datetime", "2024-03-01T02:30:00.5+02:30")
    assert value == datetime(2024, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert value.tzinfo is UTC
    assert render("datetime", value) == "2024-03-01T00:00:00.500000Z"
    assert canon("datetime", "2024-03-01T00:00:00Z") == datetime(2024, 3, 1, tzinfo=UTC)
    aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert canon("datetime", aware) == datetime(2024, 1, 1, 17, tzinfo=UTC)


def test_datetime_renders_four_digit_years() -> None:
    assert render_datetime(datetime(5, 1, 2, tzinfo=UTC)) == "0005-01-02T00:00:00.000000Z"


def isoformat_z(value: datetime) -> str:
    """The oracle: the instant in UTC by ``isoformat``, microseconds always written."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None]),
    )
)
def test_datetime_rendering_is_isoformats_in_utc(value: datetime) -> None:
    """orjson writes the common case (UTC, microseconds set); isoformat is the judge."""
    assert render_datetime(value) == isoformat_z(value)
    assert render_datetime(value.replace(microsecond=0)) == isoformat_z(
        value.replace(microsecond=0)
    )


@given(st.uuids())
def test_uuid_rendering_is_strs_for_plain_and_asyncpg_uuids(value: uuid.UUID) -> None:
    assert render_uuid(value) == str(value)
    assert render_uuid(AsyncpgUUID(str(value))) == str(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-01-01T00:00:00", "no zone"),
        ("2024-01-01", "no zone"),
        (datetime(2024, 1, 1), "no zone"),
        ("yesterday", "ISO-8601"),
        ("2024-13-01T00:00Z", "ISO-8601"),
        ("0001-01-01T00:00:00Z", "out of range"),
        ("9999-12-31T00:00:00Z", "out of range"),
        ("0001-01-01T00:30:00+01:00", "out of range"),
        (1700000000, "string"),
    ],
)
def test_datetime_refuses(value: Any, message: str) -> None:
    with pytest.raises(InvalidField, match=message):
        canon("datetime", value)


def test_date() -> None:
    assert canon("date", "2024-02-29") == date(2024, 2, 29)
    assert render("date", date(33, 1, 2)) == "0033-01-02"
    for bad in ("2023-02-29", "20240101", "2024-W01-1", datetime(2024, 1, 1), "0001-01-01"):
        with pytest.raises(InvalidField):
            canon("date", bad)


def test_uuid() -> None:
    upper = "2F1B7E1C-7A4E-4C1E-9A43-0D3C1F9B6A10"
    assert render("uuid", canon("uuid", upper)) == upper.lower()
    assert type(canon("uuid", uuid.uuid4())) is uuid.UUID
    for bad in ("nope", "{2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10}", upper.replace("-", ""), 5):
        with pytest.raises(InvalidField, match="UUID"):
            canon("uuid", bad)


@pytest.mark.parametrize(
    ("value", "message"), [("a\x00b", "NUL"), ("\ud800", "surrogate"), (5, "string")]
)
def test_string_refuses(value: Any, message: str) -> None:
    with pytest.raises(InvalidField, match=message):
        canon("string", value)


def test_sets_collapse_duplicates_and_render_sorted() -> None:
    value = canon("set<string>", ["b", "a", "b"])
    assert value == frozenset({"a", "b"})
    assert render("set<string>", value) == ["a", "b"]
    assert render("set<int>", canon("set<int>", [10, 9, 10])) == [9, 10]
    assert canon("set<datetime>", ["2024-01-01T01:00+01:00", "2024-01-01T00:00Z"]) == frozenset(
        {datetime(2024, 1, 1, tzinfo=UTC)}
    )


def test_list_keeps_order_and_duplicates() -> None:
    assert canon("list<int>", [3, 1, 3]) == [3, 1, 3]


def test_container_errors_name_the_element() -> None:
    with pytest.raises(InvalidField) as caught:
        canon("list<uuid>", [str(uuid.uuid4()), "bad"])
    assert caught.value.path == "[1]"
    with pytest.raises(InvalidField, match="null"):
        canon("set<string>", ["a", None])
    with pytest.raises(InvalidField, match="array"):
        canon("list<string>", "abc")


def test_canonical_json_keeps_numbers_exact() -> None:
    """Numbers as PostgreSQL jsonb keeps them: an int when written without a point, else the
    Decimal with its digits and scale; no float, no negative zero."""
    value = {
        "a": [Decimal("1.0"), Decimal("2.50"), Decimal("-0.0"), Decimal("1E+20"), 2**64 + 1],
        "b": (True, None, "x"),
        "c": [Decimal("0.12345678901234567890"), Decimal("1.5E-3"), Decimal("-0")],
    }
    out = canonical_json(value)
    assert exactjson.dumps(out) == (
        b'{"a":[1.0,2.50,0.0,100000000000000000000,18446744073709551617],"b":[true,null,"x"],'
        b'"c":[0.12345678901234567890,0.0015,0]}'
    )
    assert [type(n) for n in out["a"]] == [Decimal, Decimal, Decimal, int, int]
    # a float from code counts as the digits it prints
    assert canonical_json(0.1) == Decimal("0.1") and type(canonical_json(1e20)) is int
    assert canonical_json(10**20, strict=False) == 10**20


def test_canonical_json_numbers_fit_postgresql_and_one_item() -> None:
    assert canonical_json(Decimal("1E+131071")) == Decimal("1E+131071")  # PostgreSQL's limit
    with pytest.raises(InvalidField, match="PostgreSQL keeps at most"):
        canonical_json({"a": Decimal("1E+131072")})
    with pytest.raises(InvalidField, match="PostgreSQL keeps at most"):
        canonical_json(Decimal("1E-16384"))
    with pytest.raises(InvalidField, match="written out in full") as caught:
        canonical_json({"a": [Decimal("1E+100000")] * 5})  # 40 bytes of text, 500 KB of digits
    assert caught.value.path == ".a[4]"
    # reads keep what the store holds
    assert canonical_json([Decimal("1E+100000")] * 5, strict=False)[4] == Decimal("1E+100000")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {"b": "x\x00"}}, ".a.b"),
        ({"a": [1, float("nan")]}, ".a[1]"),
        ({"a": Decimal("NaN")}, ".a"),
        ({"a": Decimal("1E+200000")}, ".a"),
        ({1: "x"}, ""),
        ({"a": {"\x00": 1}}, ".a"),
        ([object()], "[0]"),
    ],
)
def test_canonical_json_refuses(value: Any, path: str) -> None:
    with pytest.raises(InvalidField) as caught:
        canonical_json(value)
    assert caught.value.path == path


def test_canonical_json_depth_is_bounded() -> None:
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(InvalidField, match="deeper"):
        canonical_json(deep)
