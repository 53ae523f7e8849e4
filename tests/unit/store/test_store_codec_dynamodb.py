from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from proxy.store.base import InvalidRecord
from proxy.store.codec_dynamodb import (
    decode_item,
    decode_value,
    encode_item,
    encode_key,
    encode_value,
    item_size,
)
from proxy.store.fieldtypes import Malformed
from proxy.store.schema import Schema


def full(schema: Schema, **body: Any) -> dict[str, Any]:
    base = {
        "id": "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10",
        "email": "a@example.com",
        "is_active": True,
        "created_at": "2024-01-01T00:00:00.25+01:00",
        "birthday": "1990-01-02",
        "preferences": {"b": [1, 2.5, None], "a": "x"},
        "roles": ["admin", "user"],
        "tags": ["z", "a", "z"],
        "lucky": [7, 3],
        "balance": "-12.50",
        "login_count": 2**53 + 1,
        "score": 0.1,
    }
    return schema.validate({**base, **body}, partial=False)


def test_encoding(schema: Schema) -> None:
    item = encode_item(schema, full(schema))
    assert item["id"] == {"S": "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"}
    assert item["created_at"] == {"S": "2023-12-31T23:00:00.250000Z"}
    assert item["birthday"] == {"S": "1990-01-02"}
    assert item["preferences"] == {"S": '{"a":"x","b":[1,2.5,null]}'}
    assert item["roles"] == {"SS": ["admin", "user"]}
    assert item["lucky"] == {"NS": ["3", "7"]}
    assert item["tags"] == {"L": [{"S": "z"}, {"S": "a"}, {"S": "z"}]}
    assert item["balance"] == {"N": "-12.5"}
    assert item["login_count"] == {"N": "9007199254740993"}
    assert item["score"] == {"N": "0.1"}
    assert item["is_active"] == {"BOOL": True}
    assert "first_name" not in item


def test_null_and_empty_sets_are_absent_attributes(schema: Schema) -> None:
    item = encode_item(schema, full(schema, roles=[], lucky=None, tags=[], first_name=None))
    assert "roles" not in item and "lucky" not in item and "first_name" not in item
    assert item["tags"] == {"L": []}
    record = decode_item(schema, item, schema.field_names)
    assert record["roles"] == frozenset() and record["lucky"] == frozenset()
    assert record["first_name"] is None and record["tags"] == []


def test_round_trip(schema: Schema) -> None:
    record = full(schema)
    assert decode_item(schema, encode_item(schema, record), schema.field_names) == record


def test_numbers_arrive_as_decimal_text(schema: Schema) -> None:
    fields = schema.fields
    assert decode_value(fields["login_count"], {"N": "42"}) == 42
    assert type(decode_value(fields["login_count"], {"N": "42"})) is int
    assert decode_value(fields["score"], {"N": "0.1"}) == 0.1
    assert decode_value(fields["balance"], {"N": "1.500"}) == Decimal("1.5")
    assert decode_value(fields["score"], {"N": "-0.0"}) == 0.0


def test_null_attribute_reads_as_null(schema: Schema) -> None:
    assert decode_value(schema.fields["first_name"], {"NULL": True}) is None
    assert decode_value(schema.fields["roles"], {"NULL": True}) == frozenset()


def test_json_written_natively_by_another_tool_still_decodes(schema: Schema) -> None:
    native = {"M": {"a": {"N": "1"}, "b": {"L": [{"BOOL": False}, {"NULL": True}]}}}
    assert decode_value(schema.fields["preferences"], native) == {"a": 1, "b": [False, None]}


@pytest.mark.parametrize(
    ("field", "av", "raw"),
    [
        ("login_count", {"S": "42"}, "42"),
        ("login_count", {"N": "4.5"}, 4.5),
        ("is_active", {"S": "true"}, "true"),
        ("created_at", {"S": "2024-01-01T00:00:00"}, "2024-01-01T00:00:00"),
        ("id", {"S": "nope"}, "nope"),
        ("roles", {"L": [{"S": "a"}]}, ["a"]),
        ("tags", {"SS": ["a"]}, ["a"]),
        ("preferences", {"S": "{not json"}, "{not json"),
        ("balance", {"N": "NaN"}, "NaN"),
    ],
)
def test_drift_decodes_as_malformed(
    schema: Schema, field: str, av: dict[str, Any], raw: Any
) -> None:
    value = decode_value(schema.fields[field], av)
    assert isinstance(value, Malformed)
    assert value.raw == raw


def test_malformed_values_cannot_be_written(schema: Schema) -> None:
    with pytest.raises(InvalidRecord, match="login_count"):
        encode_value(schema.fields["login_count"], Malformed("42"))


def test_projection_decodes_only_the_named_fields(schema: Schema) -> None:
    item = encode_item(schema, full(schema))
    assert decode_item(schema, item, ["id", "roles"]) == {
        "id": uuid.UUID("2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"),
        "roles": frozenset({"admin", "user"}),
    }


def test_key(schema: Schema) -> None:
    key = uuid.UUID("2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10")
    assert encode_key(schema, key) == {"id": {"S": str(key)}}


def test_item_size_counts_names_and_values() -> None:
    assert item_size({"ab": {"S": "héllo"}}) == 2 + 6
    assert item_size({"n": {"N": "123.45"}}) == 1 + 4
    assert item_size({"l": {"L": [{"BOOL": True}, {"S": "ab"}]}}) == 1 + 3 + 2 + 3
    assert item_size({"s": {"SS": ["a", "bc"]}}) == 1 + 3


def test_datetimes_sort_as_strings(schema: Schema) -> None:
    early = datetime(999, 1, 1, tzinfo=UTC)
    late = datetime(2024, 1, 1, tzinfo=UTC)
    spec = schema.fields["created_at"]
    encoded = [encode_value(spec, v) for v in (early, late)]
    assert encoded[0] is not None and encoded[1] is not None
    assert encoded[0]["S"] < encoded[1]["S"]
