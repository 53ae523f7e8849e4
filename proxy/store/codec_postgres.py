"""PostgreSQL codec: canonical values <-> asyncpg parameters and row values.

Column types: string ``text``, int ``bigint``, decimal ``numeric``, float ``double
precision``, bool ``boolean``, datetime ``timestamptz``, date ``date``, uuid ``uuid``, json
``jsonb`` (sent and read as JSON text, its numbers exact: ``proxy.store.exactjson``),
``list<T>``/``set<T>`` a one-dimensional array of T's column type (sets written sorted; NULL
reads as the empty set).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from proxy.store import exactjson
from proxy.store.base import InvalidRecord, Record
from proxy.store.compared import SLOW, FastSteps, plain_text, plain_texts
from proxy.store.fieldtypes import (
    DATETIME_LIMIT,
    DATETIME_MIN,
    INT64_MAX,
    INT64_MIN,
    FieldType,
    InvalidField,
    Malformed,
    canonical_json_text,
    render_datetime,
)
from proxy.store.plain import plain
from proxy.store.schema import FieldSpec, Schema

COLUMN_TYPES = {
    "string": "text",
    "int": "bigint",
    "decimal": "numeric",
    "float": "double precision",
    "bool": "boolean",
    "datetime": "timestamptz",
    "date": "date",
    "uuid": "uuid",
    "json": "jsonb",
}


def column_type(ftype: FieldType) -> str:
    base = COLUMN_TYPES[ftype.base]
    return f"{base}[]" if ftype.container else base


def encode_value(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return [] if spec.type.container == "set" else None
    if isinstance(value, Malformed):
        raise InvalidRecord(f"field {spec.name!r} holds a malformed value: {value.reason}")
    if spec.type.base == "json":
        return exactjson.dumps(value).decode()
    if spec.type.container == "set":
        return sorted(value)
    if spec.type.container == "list":
        return list(value)
    return value


def encode_values(schema: Schema, record: Mapping[str, Any], names: Iterable[str]) -> list[Any]:
    fields = schema.fields
    return [encode_value(fields[name], record.get(name)) for name in names]


def decode_value(spec: FieldSpec, raw: Any) -> Any:
    if raw is None:
        return spec.empty
    try:
        if spec.type.base == "json":
            return canonical_json_text(raw)
        return spec.canonical(raw)
    except InvalidField as e:
        return Malformed(plain(raw), f"{e.path or 'value'} {e.message}")
    except exactjson.JSONDecodeError as e:
        return Malformed(plain(raw), f"not JSON: {e}")


def decode_row(schema: Schema, row: Mapping[str, Any], names: Iterable[str]) -> Record:
    fields = schema.fields
    return {name: decode_value(fields[name], row[name]) for name in names}


def decode_row_keyed(schema: Schema, row: Mapping[str, Any], key: Any) -> Record:
    """A whole record from a row read without its key column: ``key`` (canonical) is the
    key the row was read by."""
    fields, key_name = schema.fields, schema.key
    return {
        name: key if name == key_name else decode_value(spec, row[name])
        for name, spec in fields.items()
    }


# --- straight to the compared form (``proxy.store.compared``) -------------------------------
# asyncpg hands over typed values: a str, its own UUID subclass, a datetime in UTC, a list.


def _fast_string(raw: Any) -> Any:
    return raw if plain_text(raw) else SLOW


def _fast_uuid(raw: Any) -> Any:
    return str(raw) if isinstance(raw, uuid.UUID) else SLOW


def _fast_datetime(raw: Any) -> Any:
    if type(raw) is datetime and raw.tzinfo is UTC and DATETIME_MIN <= raw < DATETIME_LIMIT:
        return render_datetime(raw)
    return SLOW


def _fast_int(raw: Any) -> Any:
    return raw if type(raw) is int and INT64_MIN <= raw <= INT64_MAX else SLOW


def _fast_bool(raw: Any) -> Any:
    return raw if raw is True or raw is False else SLOW


def _fast_string_set(raw: Any) -> Any:
    return sorted(set(raw)) if plain_texts(raw) else SLOW


# The fast steps of ``ComparedDecoder(schema, COMPARED_STEPS, decode_value)``.
COMPARED_STEPS: FastSteps = {
    ("string", None): _fast_string,
    ("uuid", None): _fast_uuid,
    ("datetime", None): _fast_datetime,
    ("int", None): _fast_int,
    ("bool", None): _fast_bool,
    ("string", "set"): _fast_string_set,
}
