"""Exact values: numbers never pass through a binary float on the way in, through either
store's codec or on the way out; records over ``max_record_bytes`` are refused."""

from __future__ import annotations

import copy
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest

from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping
from proxy.store import codec_dynamodb, codec_postgres, exactjson
from proxy.store.base import LimitExceeded
from proxy.store.fieldtypes import Malformed
from proxy.store.plain import attribute
from proxy.store.schema import MAX_ITEM_BYTES, ResourceConfig, Schema
from proxy.store.sizes import RecordTooLarge, check_record_size, record_size
from tests.unit.store.conftest import RESOURCE, VALID

# --- exactjson ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"k": 0.12345678901234567890}', {"k": Decimal("0.12345678901234567890")}),
        (b"18446744073709551617", 2**64 + 1),
        (b"-18446744073709551617", -(2**64) - 1),
        (b"1.000000000000000000000001", Decimal("1.000000000000000000000001")),
        (b"[1.50, -0.0, 1e2, 1E-3]", [Decimal("1.50"), Decimal("-0.0"), 100, Decimal("0.001")]),
        (b"[1e400]", [Decimal("1E+400")]),  # orjson alone refuses it: beyond a double
        (b'{"a": [1, "x.y", true, null]}', {"a": [1, "x.y", True, None]}),
    ],
)
def test_loads_keeps_every_digit(text: bytes, expected: Any) -> None:
    value = exactjson.loads(text)
    assert value == expected
    assert not _has_float(value)


def _has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


def test_loads_keeps_the_scale_as_written() -> None:
    assert str(exactjson.loads(b"1.50")) == "1.50" and str(exactjson.loads(b"2.0")) == "2.0"


@pytest.mark.parametrize(
    "text",
    [b'{"a": ', b"[NaN]", b"[Infinity]", b'["\\ud800"]', b'["\\ud800", 1.5]', b"\xef\xbb\xbf{}"],
)
def test_loads_refuses_what_orjson_refuses(text: bytes) -> None:
    with pytest.raises(exactjson.JSONDecodeError):
        exactjson.loads(text)


def test_loads_refuses_floats_nested_too_deeply_for_the_exact_parser() -> None:
    with pytest.raises(exactjson.JSONDecodeError):
        exactjson.loads(b"[" * 1000 + b"1.5" + b"]" * 1000)


def test_dumps_writes_the_digits() -> None:
    value = {
        "b": exactjson.DecimalText("1.50"),
        "a": [2**70, -(2**64), Decimal("-0.0"), Decimal("1E+2"), Decimal("1.5E-3"), 2**64 - 1],
    }
    assert exactjson.dumps(value, sort_keys=True) == (
        b'{"a":[1180591620717411303424,-18446744073709551616,0.0,100,0.0015,'
        b'18446744073709551615],"b":"1.50"}'
    )
    assert exactjson.dumps({"z": 1, "a": 2}) == b'{"z":1,"a":2}'  # declaration order kept
    assert exactjson.dumps([10**5000]) == b"[1" + b"0" * 5000 + b"]"  # past int's text limit


def test_dumps_chains_a_default_and_refuses_the_rest() -> None:
    assert exactjson.dumps({"x": uuid.UUID(int=1)}, default=str) == (
        b'{"x":"00000000-0000-0000-0000-000000000001"}'
    )
    with pytest.raises(TypeError):
        exactjson.dumps(object())
    with pytest.raises(TypeError):
        exactjson.dumps(Decimal("NaN"))


def test_round_trips_text_exactly() -> None:
    text = b'{"a":0.12345678901234567890,"b":18446744073709551617,"c":1.50,"d":-5}'
    assert exactjson.dumps(exactjson.loads(text)) == text


def test_decimal_text_compares_as_a_number() -> None:
    assert exactjson.DecimalText("1.50") == Decimal("1.5")
    assert str(exactjson.DecimalText("1E+2")) == "100"
    assert hash(exactjson.DecimalText("1.50")) == hash(Decimal("1.5"))
    assert exactjson.DecimalText("0.10") != Decimal("0.1000000000000000000001")


# --- codecs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(ResourceConfig.model_validate(RESOURCE))


JSON_NUMBERS = [
    "0.12345678901234567890",
    "18446744073709551617",
    "-18446744073709551617",
    "1.000000000000000000000001",
    "1.50",
    "0.0",
    "123456789012345678901234567890.123456789012345678901234567890",
]


@pytest.mark.parametrize("number", JSON_NUMBERS)
def test_postgres_jsonb_round_trips_the_digits(schema: Schema, number: str) -> None:
    spec = schema.fields["preferences"]
    value = codec_postgres.decode_value(spec, f'{{"k": {number}}}')
    assert codec_postgres.encode_value(spec, value) == f'{{"k":{number}}}'
    assert exactjson.dumps(schema.to_json({"preferences": value}, fields=["preferences"])) == (
        f'{{"preferences":{{"k":{number}}}}}'.encode()
    )


@pytest.mark.parametrize("number", JSON_NUMBERS)
def test_dynamodb_json_text_round_trips_the_digits(schema: Schema, number: str) -> None:
    spec = schema.fields["preferences"]
    value = codec_dynamodb.decode_value(spec, {"S": f'{{"k": {number}}}'})
    assert codec_dynamodb.encode_value(spec, value) == {"S": f'{{"k":{number}}}'}


def test_dynamodb_native_numbers_are_exact(schema: Schema) -> None:
    spec = schema.fields["preferences"]
    av = {"M": {"k": {"N": "0.12345678901234567891"}, "n": {"L": [{"N": "18446744073709551617"}]}}}
    assert codec_dynamodb.decode_value(spec, av) == {
        "k": Decimal("0.12345678901234567891"),
        "n": [2**64 + 1],
    }
    assert attribute({"NS": ["1.50", "0.1"]}) == [Decimal("0.1"), Decimal("1.50")]


def test_dynamodb_decimal_is_written_without_trailing_zeros(schema: Schema) -> None:
    spec = schema.fields["balance"]
    assert codec_dynamodb.encode_value(spec, Decimal("1.50")) == {"N": "1.5"}
    assert codec_dynamodb.encode_value(spec, Decimal("100")) == {"N": "100"}
    assert codec_dynamodb.encode_value(spec, Decimal("0.00")) == {"N": "0"}
    digits = "0.12345678901234567890123456789012345678"
    assert codec_dynamodb.decode_value(spec, {"N": digits}) == Decimal(digits)


def test_dynamodb_float_holding_more_than_a_double_is_drift(schema: Schema) -> None:
    spec = schema.fields["score"]
    assert codec_dynamodb.decode_value(spec, {"N": "0.1"}) == 0.1
    drifted = codec_dynamodb.decode_value(spec, {"N": "0.12345678901234567891"})
    assert isinstance(drifted, Malformed) and drifted.raw == Decimal("0.12345678901234567891")


def test_postgres_numeric_keeps_its_scale(schema: Schema) -> None:
    spec = schema.fields["balance"]
    for text in ("1.50", "0.00", "12345678901234567890123456789012345678", "-0.010"):
        value = codec_postgres.decode_value(spec, Decimal(text))
        assert str(value) == text and exactjson.dumps(spec.render(value)) == f'"{text}"'.encode()


# --- record size ----------------------------------------------------------------------------


def _record(schema: Schema, **over: Any) -> dict[str, Any]:
    return schema.validate({**VALID, **over}, partial=False)


def test_record_size_is_the_dynamodb_item_size(schema: Schema) -> None:
    record = _record(schema, first_name="x" * 1000, preferences={"a": 1})
    item = codec_dynamodb.encode_item(schema, record)
    assert record_size(schema, record) == codec_dynamodb.item_size(item)


def test_a_record_over_the_limit_is_refused_naming_the_largest_field(schema: Schema) -> None:
    check_record_size(schema, _record(schema, first_name="x" * 400_000))
    with pytest.raises(RecordTooLarge) as caught:
        check_record_size(schema, _record(schema, first_name="é" * 300_000))
    error = caught.value
    assert isinstance(error, LimitExceeded)
    assert error.field == "first_name" and error.size > MAX_ITEM_BYTES == error.limit
    assert "first_name" in str(error) and "max_record_bytes" in str(error)


def test_max_record_bytes_is_the_schemas(schema: Schema) -> None:
    small = Schema(ResourceConfig.model_validate(RESOURCE), max_record_bytes=500)
    record = _record(small, first_name="x" * 600)
    check_record_size(schema, record)
    with pytest.raises(RecordTooLarge, match="over the 500"):
        check_record_size(small, record)


# --- settings -------------------------------------------------------------------------------


def _settings(max_record_bytes: int, backend: str) -> dict[str, Any]:
    resource = copy.deepcopy(RESOURCE)
    del resource["name"]
    resource["stores"] = {"main": {"backend": backend, "table": "users"}}
    resource["flags"] = {"read_from": "main", "write_to": ["main"]}
    resource["max_record_bytes"] = max_record_bytes
    return {
        "backends": {
            "pg": {"kind": "postgres"},
            "ddb": {"kind": "dynamodb", "region": "eu-west-1"},
        },
        "resources": {"users": resource},
    }


def test_max_record_bytes_defaults_to_dynamodbs_item_limit() -> None:
    raw = _settings(1, "ddb")
    del raw["resources"]["users"]["max_record_bytes"]
    assert settings_from_mapping(raw).resources["users"].max_record_bytes == 400 * 1024


def test_max_record_bytes_above_dynamodbs_limit_is_a_config_error() -> None:
    assert settings_from_mapping(_settings(10**6, "pg")).resources["users"].max_record_bytes
    assert settings_from_mapping(_settings(100_000, "ddb"))
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(_settings(409_601, "ddb"))
    assert "resources.users.max_record_bytes = 409601" in str(caught.value)
    assert "DynamoDB" in str(caught.value)
    with pytest.raises(ConfigError, match="max_record_bytes = 0"):
        settings_from_mapping(_settings(0, "pg"))


def test_error_details_hold_exact_numbers(schema: Schema) -> None:
    from proxy.store.schema import SchemaError

    digits = b"1.2345678901234567890123456789012345678901"
    body = exactjson.loads(b'{"login_count": 18446744073709551617, "balance": %s}' % digits)
    with pytest.raises(SchemaError) as caught:
        schema.validate({**VALID, **body}, partial=False)
    assert orjson.dumps(caught.value.errors) == (
        b'[{"field":"balance","message":"more than 38 significant digits (DynamoDB)","value":'
        + digits
        + b'},{"field":"login_count","message":"integer out of the signed 64-bit range",'
        b'"value":18446744073709551617}]'
    )
