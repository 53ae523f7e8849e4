from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from proxy.store import exactjson
from proxy.store.fieldtypes import Malformed
from proxy.store.schema import ResourceConfig, Schema, SchemaError, json_bytes

ID = "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"


# --- config ------------------------------------------------------------------------------


def config_error(resource: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        ResourceConfig.model_validate(resource)
    return str(caught.value)


def test_config_errors_name_the_key_path_and_value(resource: dict[str, Any]) -> None:
    resource["fields"]["email"]["type"] = "strng"
    message = config_error(resource)
    assert "fields.email.type" in message and "strng" in message


def test_config_refuses_unknown_keys(resource: dict[str, Any]) -> None:
    resource["fields"]["email"]["pii"] = True
    message = config_error(resource)
    assert "fields.email.pii" in message and "Extra inputs" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(key="uid"), "'uid' is not one of the fields"),
        (lambda r: r["fields"]["id"].update(type="float"), "key type 'float'"),
        (lambda r: r["indexes"]["email"].update(field="nope"), "indexes.email.field: 'nope'"),
        (lambda r: r["indexes"]["email"].update(field="preferences"), "has type 'json'"),
        (lambda r: r["fields"].update({"bad-name": {"type": "int"}}), "'bad-name'"),
        (lambda r: r.update(prefix="users"), "prefix"),
        (lambda r: r.update(cache_ttl_seconds=-1), "cache_ttl_seconds"),
        (lambda r: r["stores"]["postgres"].update(table="drop table;"), "stores.postgres.table"),
    ],
)
def test_config_refuses_bad_references(
    resource: dict[str, Any], change: Any, expected: str
) -> None:
    change(resource)
    assert expected in config_error(resource)


def test_compiled_schema(schema: Schema) -> None:
    assert schema.key == "id" and schema.key_field.required and not schema.key_field.nullable
    assert schema.indexes["email"].dynamodb_index == "email-index"
    assert schema.sensitive_fields == {"email"}
    assert schema.field_names[0] == "id"


def test_default_gsi_name(resource: dict[str, Any]) -> None:
    del resource["indexes"]["email"]["dynamodb_index"]
    assert Schema(ResourceConfig.model_validate(resource)).indexes["email"].dynamodb_index == (
        "email-index"
    )


# --- validation --------------------------------------------------------------------------


def errors_of(schema: Schema, body: Any, *, partial: bool = False) -> list[dict[str, Any]]:
    with pytest.raises(SchemaError) as caught:
        schema.validate(body, partial=partial)
    return [dict(e) for e in caught.value.errors]


def test_valid_body_fills_absent_fields(schema: Schema, valid: dict[str, Any]) -> None:
    record = schema.validate(valid, partial=False)
    assert record["id"] == uuid.UUID(ID)
    assert record["created_at"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert record["first_name"] is None and record["roles"] == frozenset()
    assert set(record) == set(schema.fields)


def test_every_problem_is_reported(schema: Schema, valid: dict[str, Any]) -> None:
    body = {
        **valid,
        "id": "not-a-uuid",
        "nickname": "x",
        "is_active": "yes",
        "created_at": "2024-01-01T00:00:00",
        "login_count": "3",
        "roles": ["a", 5],
        "preferences": {"a": [float("inf")]},
    }
    errors = {e["field"]: e for e in errors_of(schema, body)}
    assert errors.keys() == {
        "id",
        "nickname",
        "is_active",
        "created_at",
        "login_count",
        "roles[1]",
        "preferences.a[0]",
    }
    assert errors["nickname"]["message"] == "unknown field"
    assert errors["id"]["value"] == "not-a-uuid"
    assert "no zone" in errors["created_at"]["message"]
    assert errors["roles[1]"]["value"] == 5


def test_missing_key_and_required_fields(schema: Schema) -> None:
    errors = errors_of(schema, {"is_active": True, "created_at": "2024-01-01T00:00Z"})
    assert [(e["field"], e["message"]) for e in errors] == [
        ("id", "missing: required field"),
        ("email", "missing: required field"),
    ]


def test_absent_non_nullable_field(schema: Schema, valid: dict[str, Any]) -> None:
    del valid["is_active"]
    assert errors_of(schema, valid) == [
        {"field": "is_active", "message": "missing: field is not nullable", "value": None}
    ]


@pytest.mark.parametrize("field", ["id", "is_active", "created_at"])
def test_null_on_non_nullable(schema: Schema, valid: dict[str, Any], field: str) -> None:
    errors = errors_of(schema, {**valid, field: None})
    assert errors == [{"field": field, "message": "must not be null", "value": None}]


def test_sensitive_values_are_redacted(schema: Schema, valid: dict[str, Any]) -> None:
    errors = errors_of(schema, {**valid, "email": 12345})
    assert errors == [{"field": "email", "message": "expected a string", "value": "[redacted]"}]


def test_long_values_are_truncated(schema: Schema, valid: dict[str, Any]) -> None:
    (error,) = errors_of(schema, {**valid, "birthday": "x" * 10_000})
    assert len(error["value"]) < 300


def test_indexed_and_key_strings_must_fit_dynamodb_keys(
    schema: Schema, valid: dict[str, Any]
) -> None:
    assert "must not be empty" in errors_of(schema, {**valid, "email": ""})[0]["message"]
    assert "2048 bytes" in errors_of(schema, {**valid, "email": "é" * 1025})[0]["message"]


def test_body_must_be_an_object(schema: Schema) -> None:
    assert errors_of(schema, ["id"])[0]["message"] == "expected a JSON object"


def test_partial_checks_only_given_fields(schema: Schema) -> None:
    assert schema.validate({"first_name": None, "roles": None}, partial=True) == {
        "first_name": None,
        "roles": frozenset(),
    }
    assert errors_of(schema, {"is_active": None}, partial=True)[0]["field"] == "is_active"
    assert errors_of(schema, {"bogus": 1}, partial=True)[0]["message"] == "unknown field"


def test_validate_accepts_its_own_output(schema: Schema, valid: dict[str, Any]) -> None:
    record = schema.validate({**valid, "balance": "1.50", "roles": ["x"]}, partial=False)
    assert schema.validate(record, partial=False) == record
    assert schema.validate(schema.to_json(record), partial=False) == record


# --- canonical rendering -----------------------------------------------------------------


def test_equivalent_inputs_dump_identically(schema: Schema) -> None:
    one = {
        "id": ID.upper(),
        "email": "a@b.c",
        "is_active": True,
        "created_at": "2024-01-01T02:00:00+02:00",
        "balance": "10.50",
        "roles": ["b", "a", "b"],
        "preferences": {"z": 1, "a": [2]},
    }
    two = {
        "preferences": {"a": [2], "z": 1},
        "roles": ["a", "b"],
        "balance": Decimal("10.50"),
        "created_at": "2024-01-01T00:00:00.000000Z",
        "is_active": True,
        "email": "a@b.c",
        "id": ID,
        "first_name": None,
    }
    dumped = schema.dumps(schema.validate(one, partial=False))
    assert dumped == schema.dumps(schema.validate(two, partial=False))
    assert orjson.loads(dumped) == {
        "balance": "10.50",
        "birthday": None,
        "created_at": "2024-01-01T00:00:00.000000Z",
        "email": "a@b.c",
        "first_name": None,
        "id": ID,
        "is_active": True,
        "login_count": None,
        "lucky": [],
        "preferences": {"a": [2], "z": 1},
        "roles": ["a", "b"],
        "score": None,
        "tags": None,
    }
    assert list(orjson.loads(dumped)) == sorted(orjson.loads(dumped))


def test_to_json_projection_and_malformed(schema: Schema) -> None:
    record = {"id": uuid.UUID(ID), "login_count": Malformed("42"), "balance": Decimal("1E+3")}
    rendered = schema.to_json(record, fields=["id", "login_count", "balance", "roles"])
    assert rendered == {"id": ID, "login_count": "42", "balance": Decimal(1000), "roles": []}
    assert (
        json_bytes(rendered)
        == f'{{"balance":"1000","id":"{ID}","login_count":"42","roles":[]}}'.encode()
    )


def test_numbers_render_with_the_digits_held(schema: Schema, valid: dict[str, Any]) -> None:
    """Exact values: a decimal keeps its scale (PostgreSQL numeric's ``1.50``) yet equals
    the same number written otherwise, and JSON numbers never pass through a float."""
    body = orjson.dumps({**valid, "balance": "1.50"})[:-1] + (
        b', "preferences": {"k": 0.12345678901234567890, "big": 18446744073709551617, '
        b'"one": 1.000000000000000000000001, "neg": -0.0, "exp": 1.5E-3}}'
    )
    record = schema.validate(exactjson.loads(body), partial=False)
    assert record["balance"] == Decimal("1.5") and str(record["balance"]) == "1.50"
    out = orjson.loads(schema.dumps(record))  # the text, read back without exactness
    assert out["balance"] == "1.50"
    assert (
        schema.dumps(record).count(
            b'"preferences":{"big":18446744073709551617,"exp":0.0015,"k":0.12345678901234567890,'
            b'"neg":0.0,"one":1.000000000000000000000001}'
        )
        == 1
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"login_count": 18446744073709551617}, "login_count", "64-bit"),
        ({"balance": "1.2345678901234567890123456789012345678901"}, "balance", "38"),
        ({"balance": Decimal("1.2345678901234567890123456789012345678901")}, "balance", "38"),
        ({"score": Decimal("1E+400")}, "score", "float range"),
        ({"preferences": {"a": [Decimal("1E+200000")]}}, "preferences.a[0]", "PostgreSQL"),
    ],
)
def test_numbers_no_store_can_hold_are_refused_naming_the_field(
    schema: Schema, valid: dict[str, Any], body: dict[str, Any], field: str, message: str
) -> None:
    errors = errors_of(schema, {**valid, **body})
    assert [e["field"] for e in errors] == [field] and message in errors[0]["message"]
    orjson.dumps(errors)  # the error envelope can be written, numbers exact


# --- URL text, projections, filters, changes ---------------------------------------------


def test_parse_text(schema: Schema) -> None:
    assert schema.parse_key(ID) == uuid.UUID(ID)
    assert schema.parse_filters({"is_active": "false", "login_count": "-3", "score": "1.5"}) == {
        "is_active": False,
        "login_count": -3,
        "score": 1.5,
    }
    with pytest.raises(SchemaError) as caught:
        schema.parse_filters({"is_active": "no", "roles": "a", "nope": "1", "login_count": "1.0"})
    assert [e["field"] for e in caught.value.errors] == [
        "is_active",
        "roles",
        "nope",
        "login_count",
    ]
    with pytest.raises(SchemaError):
        schema.parse_key("not-a-uuid")


def test_check_fields_puts_the_key_first(schema: Schema) -> None:
    assert schema.check_fields(["email", "id", "email"]) == ("id", "email")
    with pytest.raises(SchemaError):
        schema.check_fields(["email", "nope"])


def test_check_changes(schema: Schema) -> None:
    key = uuid.UUID(ID)
    assert schema.check_changes(key, {"id": key, "email": "x@y"}) == {"email": "x@y"}
    with pytest.raises(SchemaError, match="cannot be changed"):
        schema.check_changes(key, {"id": uuid.uuid4()})
    with pytest.raises(SchemaError, match="unknown field"):
        schema.check_changes(key, {"nope": 1})


def test_check_filters_and_index(schema: Schema) -> None:
    schema.check_filters({"email": "a", "first_name": None})
    with pytest.raises(SchemaError):
        schema.check_filters({"tags": ["a"]})
    with pytest.raises(SchemaError, match="unknown index"):
        schema.index("first_name")
