"""The resource API's OpenAPI 3.1 document, generated from the compiled resource schemas.

    doc = resource_document([(api.schema, api.settings) for api in apis])

Built at start from the same ``Schema`` the handlers validate with (``proxy.resources.api``),
so the document cannot drift from the config: every resource's paths and methods, its query
parameters, request bodies (field types, nullability, required fields), the records it
answers and exactly the statuses each handler returns, every error in the envelope.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.openapi import (
    OPENAPI_OPERATION,
    OPENAPI_PATH,
    REQUEST_ID_HEADER,
    document,
    error_responses,
    json_body,
)
from proxy.settings import ResourceSettings
from proxy.store.fieldtypes import INT64_MAX, INT64_MIN, FieldType
from proxy.store.schema import FieldSpec, Schema

SERVER_ERRORS = frozenset({500, 502, 503, 504})
_HEADERS = {"X-Request-ID": REQUEST_ID_HEADER}
_NO_NUL = "^[^\\u0000]*$"  # PostgreSQL cannot store NUL
_NUMBER_TEXT = r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
_DECIMAL_OUT = r"^-?\d+(?:\.\d+)?$"
_DATETIME_OUT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
_UUID_OUT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# A value as a client may send it (JSON) and as the API renders it (canonical JSON).
_SCALAR_IN: dict[str, dict[str, Any]] = {
    "string": {"type": "string", "pattern": _NO_NUL},
    "int": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    "decimal": {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _NUMBER_TEXT}]},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "uuid": {"type": "string", "format": "uuid"},
    "json": {},
}
_SCALAR_OUT: dict[str, dict[str, Any]] = {
    **_SCALAR_IN,
    "decimal": {"type": "string", "pattern": _DECIMAL_OUT},
    "datetime": {"type": "string", "pattern": _DATETIME_OUT},
    "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    "uuid": {"type": "string", "pattern": _UUID_OUT},
}
# A scalar in a URL (a path key, a query filter): text parsed as the field's type.
_SCALAR_TEXT: dict[str, dict[str, Any]] = {**_SCALAR_IN, "decimal": {"type": "string"}}


def _value(ftype: FieldType, table: dict[str, dict[str, Any]], *, out: bool) -> dict[str, Any]:
    element = dict(table[ftype.base])
    if ftype.container is None:
        return element
    array: dict[str, Any] = {"type": "array", "items": element}
    if ftype.container == "set" and out:
        array["uniqueItems"] = True
    return array


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return schema if schema == {} else {"anyOf": [schema, {"type": "null"}]}


def field_input(spec: FieldSpec) -> dict[str, Any]:
    schema = _value(spec.type, _SCALAR_IN, out=False)
    if spec.is_key or spec.indexed:
        schema = _non_empty(schema)
    if spec.nullable:
        return _nullable(schema)
    return {**schema, "not": {"type": "null"}} if schema == {} else schema


def field_output(spec: FieldSpec) -> dict[str, Any]:
    schema = _value(spec.type, _SCALAR_OUT, out=True)
    # A set renders null as []; a key is never null.
    if spec.nullable and spec.type.container != "set":
        return _nullable(schema)
    return schema


def _non_empty(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "minLength": 1} if schema.get("type") == "string" else schema


def _text(spec: FieldSpec) -> dict[str, Any]:
    return _non_empty(dict(_SCALAR_TEXT[spec.type.base]))


def _create_required(schema: Schema) -> list[str]:
    """What ``Schema.validate(partial=False)`` refuses to miss: the key, required fields,
    and non-nullable fields other than sets (an absent set is the empty set)."""
    return [
        name
        for name, spec in schema.fields.items()
        if spec.required or (not spec.nullable and spec.type.container != "set")
    ]


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        body["required"] = required
    return body


def component_schemas(schema: Schema) -> dict[str, Any]:
    n = schema.name
    inputs = {name: field_input(spec) for name, spec in schema.fields.items()}
    outputs = {name: field_output(spec) for name, spec in schema.fields.items()}
    create = _create_required(schema)
    key_out = field_output(schema.key_field)
    return {
        f"{n}.Record": _object(outputs, list(schema.fields)),
        f"{n}.Projection": _object(outputs, [schema.key]),
        f"{n}.Create": _object(inputs, create),
        f"{n}.Replace": _object(inputs, [f for f in create if f != schema.key]),
        # at least one field besides the key
        f"{n}.Patch": {
            **_object(inputs, []),
            "minProperties": 1,
            "not": {"required": [schema.key], "maxProperties": 1},
        },
        f"{n}.BatchResult": _object(
            {
                "results": {
                    "type": "array",
                    "items": _object(
                        {
                            "key": key_out,
                            "status": {"enum": ["ok", "error"]},
                            "error": {"type": "string"},
                        },
                        ["key", "status"],
                    ),
                },
                "written": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
            },
            ["results", "written", "failed"],
        ),
    }


def _ref(schema: Schema, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema.name}.{name}"}


def _responses(ok: int, ok_body: dict[str, Any] | None, errors: Iterable[int]) -> dict[str, Any]:
    """``errors`` besides the 5xx every operation may answer (and, with rate limits, 429)."""
    success: dict[str, Any] = (
        json_body(ok_body, "the answer") if ok_body is not None else {"description": "done"}
    )
    success["headers"] = dict(_HEADERS)
    return {str(ok): success, **error_responses({*errors, *SERVER_ERRORS}, headers=_HEADERS)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_FIELDS_PARAM = "fields"


def _fields_param(schema: Schema) -> dict[str, Any]:
    names = "|".join(schema.fields)
    return _query(
        _FIELDS_PARAM,
        {"type": "string", "pattern": f"^(?:{names})?(?:,(?:{names})?)*$"},
        "comma-separated fields to return (the key always); an unknown one is a 422",
    )


def paths_of(
    schema: Schema, settings: ResourceSettings, *, rate_limited: bool = False
) -> dict[str, Any]:
    n, p = schema.name, settings.prefix
    key_param = {
        "name": schema.key,
        "in": "path",
        "required": True,
        "schema": _text(schema.key_field),
    }
    unique = any(index.unique for index in schema.indexes.values())
    extra = {429} if rate_limited else set()
    conflict = {409, *extra} if unique else extra
    items = {"type": "array", "items": _ref(schema, "Projection")}
    batch_limits = {"minItems": 1, "maxItems": settings.max_batch_items}
    list_body = _object(
        {"items": items, "next_cursor": {"type": ["string", "null"]}}, ["items", "next_cursor"]
    )
    filters = [
        _query(name, _text(spec), "equality filter (a lookup when it is the one indexed field)")
        for name, spec in schema.fields.items()
        if spec.type.is_scalar
    ]
    limit = {"type": "integer", "minimum": 1, "maximum": settings.max_list_limit}
    return {
        p: {
            "get": {
                "operationId": f"{n}_query",
                "summary": f"look up or list {n} by equality filters",
                "parameters": [
                    *filters,
                    _query("limit", limit, "page size (default 100)"),
                    _query(
                        "cursor",
                        {"type": "string", "minLength": 1},
                        "next_cursor of the previous page",
                    ),
                    _fields_param(schema),
                ],
                "responses": _responses(200, list_body, {400, 422, *extra}),
            },
            "post": {
                "operationId": f"{n}_create",
                "summary": f"create a {n} record; 409 when its key exists",
                "requestBody": _body(_ref(schema, "Create")),
                "responses": _responses(
                    201, _ref(schema, "Record"), {400, 409, 413, 415, 422, *extra}
                ),
            },
        },
        f"{p}/{{{schema.key}}}": {
            "parameters": [key_param],
            "get": {
                "operationId": f"{n}_get",
                "summary": f"one {n} record",
                "parameters": [_fields_param(schema)],
                "responses": _responses(200, _ref(schema, "Projection"), {400, 404, 422, *extra}),
            },
            "put": {
                "operationId": f"{n}_replace",
                "summary": f"replace or create a {n} record (the body's key, if any, must match)",
                "requestBody": _body(_ref(schema, "Replace")),
                "responses": _responses(
                    200, _ref(schema, "Record"), {400, 413, 415, 422, *conflict}
                ),
            },
            "patch": {
                "operationId": f"{n}_update",
                "summary": f"update fields of a {n} record",
                "requestBody": _body(_ref(schema, "Patch")),
                "responses": _responses(
                    200, _ref(schema, "Record"), {400, 404, 413, 415, 422, *conflict}
                ),
            },
            "delete": {
                "operationId": f"{n}_delete",
                "summary": f"delete a {n} record",
                "responses": _responses(204, None, {400, 404, 422, *extra}),
            },
        },
        f"{p}/batch": {
            "post": {
                "operationId": f"{n}_batch_put",
                "summary": f"upsert many {n} records; a result per item",
                "requestBody": _body(
                    _object(
                        {
                            "items": {
                                "type": "array",
                                "items": _ref(schema, "Create"),
                                **batch_limits,
                            }
                        },
                        ["items"],
                    )
                ),
                "responses": _responses(
                    200, _ref(schema, "BatchResult"), {400, 413, 415, 422, *conflict}
                ),
            }
        },
        f"{p}/batch-get": {
            "post": {
                "operationId": f"{n}_batch_get",
                "summary": f"many {n} records by key",
                "parameters": [_fields_param(schema)],
                "requestBody": _body(
                    _object(
                        {
                            "keys": {
                                "type": "array",
                                "items": field_input(schema.key_field),
                                **batch_limits,
                            }
                        },
                        ["keys"],
                    )
                ),
                "responses": _responses(
                    200,
                    _object(
                        {
                            "items": items,
                            "missing": {"type": "array", "items": field_output(schema.key_field)},
                        },
                        ["items", "missing"],
                    ),
                    {400, 413, 415, 422, *extra},
                ),
            }
        },
    }


DESCRIPTION = (
    "The typed resources shadowproxy serves in store mode, generated at start from the "
    "resource schemas of the config. Every error is the envelope `Error`. A record holding "
    "a value that no longer decodes to its declared type (type drift in a store) renders "
    "that value as stored, which this document does not describe. See docs/store-mode.md."
)


def resource_document(
    resources: Iterable[tuple[Schema, ResourceSettings]], *, rate_limited: bool = False
) -> dict[str, Any]:
    """``rate_limited``: a rate limit is configured, so every operation may answer 429."""
    paths: dict[str, Any] = {OPENAPI_PATH: OPENAPI_OPERATION}
    schemas: dict[str, Any] = {}
    for schema, settings in resources:
        paths.update(paths_of(schema, settings, rate_limited=rate_limited))
        schemas.update(component_schemas(schema))
    return document("shadowproxy resource API", DESCRIPTION, paths, {"schemas": schemas})
