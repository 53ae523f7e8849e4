from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from proxy.store.base import InvalidRecord
from proxy.store.codec_postgres import column_type, decode_row, decode_value, encode_values
from proxy.store.fieldtypes import FieldType, Malformed
from proxy.store.schema import Schema


class PgUUID(uuid.UUID):
    """Stands in for asyncpg's own UUID subclass."""


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("string", "text"),
        ("int", "bigint"),
        ("decimal", "numeric"),
        ("float", "double precision"),
        ("datetime", "timestamptz"),
        ("json", "jsonb"),
        ("set<uuid>", "uuid[]"),
        ("list<date>", "date[]"),
    ],
)
def test_column_types(text: str, column: str) -> None:
    assert column_type(FieldType.parse(text)) == column


def test_encode(schema: Schema) -> None:
    record = schema.validate(
        {
            "id": "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10",
            "email": "a@b",
            "is_active": False,
            "created_at": "2024-01-01T00:00Z",
            "preferences": {"b": 1, "a": [1.5]},
            "roles": ["b", "a"],
        },
        partial=False,
    )
    names = ("id", "preferences", "roles", "lucky", "tags", "first_name")
    assert encode_values(schema, record, names) == [
        uuid.UUID("2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"),
        '{"b":1,"a":[1.5]}',
        ["a", "b"],
        [],
        None,
        None,
    ]


def test_decode_driver_values(schema: Schema) -> None:
    key = uuid.uuid4()
    row = {
        "id": PgUUID(int=key.int),
        "balance": Decimal("1.500"),
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
        "birthday": date(2000, 2, 29),
        "preferences": '{"big": 100000000000000000000, "f": 1.0, "n": null}',
        "roles": None,
        "lucky": [3, 1],
        "score": -0.0,
    }
    record = decode_row(schema, row, list(row))
    assert type(record["id"]) is uuid.UUID and record["id"] == key
    # PostgreSQL's digits, exactly: numeric keeps its scale, jsonb its numbers' text.
    assert record["balance"] == Decimal("1.5") and str(record["balance"]) == "1.500"
    assert record["preferences"] == {"big": 10**20, "f": Decimal("1.0"), "n": None}
    assert type(record["preferences"]["big"]) is int
    assert str(record["preferences"]["f"]) == "1.0"
    assert record["roles"] == frozenset() and record["lucky"] == frozenset({1, 3})
    assert str(record["score"]) == "0.0"


@pytest.mark.parametrize(
    ("field", "raw", "shown"),
    [
        ("created_at", datetime(9999, 12, 31, 23, 59, 59, 999999), "9999-12-31T23:59:59.999999"),
        ("birthday", date.max, "9999-12-31"),
        ("balance", Decimal("NaN"), "NaN"),
        ("score", float("inf"), "inf"),
        ("tags", ["a", None], ["a", None]),
        ("preferences", "not json", "not json"),
    ],
)
def test_values_outside_the_contract_decode_as_malformed(
    schema: Schema, field: str, raw: Any, shown: Any
) -> None:
    value = decode_value(schema.fields[field], raw)
    assert isinstance(value, Malformed) and value.raw == shown
    orjson.dumps(value.raw)


def test_malformed_values_cannot_be_written(schema: Schema) -> None:
    with pytest.raises(InvalidRecord):
        encode_values(schema, {"balance": Malformed("NaN")}, ["balance"])
