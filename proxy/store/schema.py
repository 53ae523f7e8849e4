"""A resource declared once: the config models (pydantic) and the compiled ``Schema``, the
contract both stores' codecs decode into. (Over 400 lines: the config models and the
schema compiled from them change together; splitting them off into a ``config`` module is
the next step when either grows.)

    config = ResourceConfig.model_validate(yaml.safe_load(text)["resources"]["users"])
    schema = Schema(config)
    record = schema.validate(request_json, partial=False)   # raises SchemaError
    body = schema.dumps(record)                              # canonical JSON bytes

Canonical JSON (see ``proxy.store.fieldtypes`` for every type): object keys sorted, every
declared field present (absent/null -> ``null``; sets -> ``[]``), datetimes
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, decimals as fixed-point strings, sets as sorted arrays.
Numbers are exact (``proxy.store.exactjson``): a decimal's string and a JSON value's numbers
carry the digits the store holds, never a binary float's approximation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from comparators.errors import ShadowProxyError
from comparators.markers import Drifted
from proxy.store import exactjson
from proxy.store.base import Record
from proxy.store.fieldtypes import (
    FieldType,
    InvalidField,
    Malformed,
    canonicaliser,
    renderer,
)

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_TABLE = r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$"
_GSI_NAME = r"^[A-Za-z0-9_.-]{3,255}$"
_PREFIX = r"^(/[A-Za-z0-9._~-]+)+$"
KEY_TYPES = frozenset({"string", "int", "uuid"})
INDEX_TYPES = frozenset({"string", "int", "decimal", "float", "datetime", "date", "uuid"})
MAX_KEY_BYTES = 2048  # DynamoDB partition key limit, also for GSI keys
MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item limit, the smallest store's: a record's bound
_ERROR_VALUE_CHARS = 200
RESERVED_PATH = "/openapi.json"  # proxy.openapi.OPENAPI_PATH: the resource API's document


# --- config ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldConfig(_Model):
    type: str
    nullable: bool = True
    sensitive: bool = False
    required: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return str(FieldType.parse(value))


class IndexConfig(_Model):
    field: str
    dynamodb_index: str | None = Field(default=None, pattern=_GSI_NAME)
    unique: bool = False


class StoreTableConfig(_Model):
    backend: str = Field(min_length=1)
    table: str = Field(pattern=_TABLE)


class ResourceConfig(_Model):
    name: str = Field(pattern=_IDENTIFIER)
    prefix: str = Field(pattern=_PREFIX)
    key: str
    fields: dict[str, FieldConfig] = Field(min_length=1)
    indexes: dict[str, IndexConfig] = {}
    stores: dict[str, StoreTableConfig] = {}
    cache_ttl_seconds: float = Field(default=60.0, ge=0)

    @field_validator("prefix")
    @classmethod
    def _not_reserved(cls, prefix: str) -> str:
        if prefix == RESERVED_PATH:
            raise ValueError(
                f"{prefix!r} is reserved: the proxy port serves its OpenAPI document there"
            )
        return prefix

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        for name in fields:
            if not re.match(_IDENTIFIER, name):
                raise ValueError(
                    f"field name {name!r} must be letters, digits and '_' (at most 63), "
                    "not starting with a digit"
                )
        return fields

    @field_validator("indexes")
    @classmethod
    def _index_names(cls, indexes: dict[str, IndexConfig]) -> dict[str, IndexConfig]:
        for name in indexes:
            if not re.match(_IDENTIFIER, name):
                raise ValueError(f"index name {name!r} must be letters, digits and '_'")
        return indexes

    @model_validator(mode="after")
    def _references(self) -> ResourceConfig:
        key = self.fields.get(self.key)
        if key is None:
            raise ValueError(f"key: {self.key!r} is not one of the fields {sorted(self.fields)}")
        if key.type not in KEY_TYPES:
            raise ValueError(
                f"fields.{self.key}.type: key type {key.type!r} must be one of {sorted(KEY_TYPES)}"
            )
        for name, index in self.indexes.items():
            target = self.fields.get(index.field)
            if target is None:
                raise ValueError(
                    f"indexes.{name}.field: {index.field!r} is not one of the fields "
                    f"{sorted(self.fields)}"
                )
            if target.type not in INDEX_TYPES:
                raise ValueError(
                    f"indexes.{name}.field: {index.field!r} has type {target.type!r}; an index "
                    f"needs one of {sorted(INDEX_TYPES)}"
                )
            if index.field == self.key:
                raise ValueError(f"indexes.{name}.field: {index.field!r} is already the key")
        return self


# --- compiled schema ---------------------------------------------------------------------


class FieldError(TypedDict):
    field: str
    message: str
    value: Any


class SchemaError(ShadowProxyError, ValueError):
    """Input that does not fit the schema; ``errors`` lists every problem found.

    Values of sensitive fields are replaced by ``"[redacted]"``; long values are truncated.
    """

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(summary + more)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    nullable: bool
    required: bool
    sensitive: bool
    is_key: bool
    indexed: bool
    canonical: Callable[[Any], Any]
    render: Callable[[Any], Any]

    @property
    def empty(self) -> Any:
        """The canonical value of an absent or null field: the empty set for sets, else None."""
        return frozenset() if self.type.container == "set" else None


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    field: str
    dynamodb_index: str
    unique: bool


def json_bytes(value: Any) -> bytes:
    """Canonical JSON bytes of a value ``to_json`` rendered: keys sorted, numbers exact."""
    return exactjson.dumps(value, sort_keys=True)


class Schema:
    """The compiled resource: validation, canonical rendering, key and query parsing."""

    def __init__(self, config: ResourceConfig, *, max_record_bytes: int = MAX_ITEM_BYTES) -> None:
        self.config = config
        self.name = config.name
        self.key = config.key
        # The largest record, measured as DynamoDB measures an item (``proxy.store.sizes``).
        self.max_record_bytes = max_record_bytes
        indexed = {index.field for index in config.indexes.values()}
        self.fields: dict[str, FieldSpec] = {
            name: _compile_field(name, fc, is_key=name == config.key, indexed=name in indexed)
            for name, fc in config.fields.items()
        }
        self.key_field = self.fields[config.key]
        self.indexes: dict[str, IndexSpec] = {
            name: IndexSpec(name, ic.field, ic.dynamodb_index or f"{ic.field}-index", ic.unique)
            for name, ic in config.indexes.items()
        }
        self.sensitive_fields = frozenset(n for n, f in self.fields.items() if f.sensitive)
        # Per field, in declaration order: what ``to_json`` needs, looked up once.
        self._render_plan: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
            name: (name, spec.render, spec.type.container == "set")
            for name, spec in self.fields.items()
        }

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.fields)

    # validation -------------------------------------------------------------------------

    def validate(self, body: Mapping[str, Any], *, partial: bool) -> Record:
        """Canonical record from a JSON object (or from canonical values).

        ``partial=False`` (create, replace): the key and required fields must be present;
        absent fields become null (the empty set for sets), which non-nullable fields refuse.
        ``partial=True`` (update): only the given fields are checked and returned.
        """
        if not isinstance(body, Mapping):
            raise SchemaError([_error("", "expected a JSON object", body, False)])
        errors: list[FieldError] = []
        for name in body:
            if name not in self.fields:
                errors.append(_error(str(name), "unknown field", body[name], False))
        record: Record = {}
        for name, spec in self.fields.items():
            if name in body:
                try:
                    record[name] = self._field_value(spec, body[name])
                except InvalidField as e:
                    errors.append(_error(name + e.path, e.message, e.value, spec.sensitive))
            elif not partial:
                if spec.required or spec.is_key:
                    errors.append(_error(name, "missing: required field", None, False))
                elif spec.empty is None and not spec.nullable:
                    errors.append(_error(name, "missing: field is not nullable", None, False))
                else:
                    record[name] = spec.empty
        if errors:
            raise SchemaError(errors)
        return record

    def stored_errors(self, record: Mapping[str, Any]) -> list[FieldError]:
        """What ``validate`` would refuse in a record read from a store (already canonical,
        every field present): a value that did not decode to its type (``Malformed``), a
        null where the field or the key does not allow one, a key or indexed value DynamoDB
        cannot hold. The same verdict as ``validate(to_json(record), partial=False)``, at a
        fraction of the cost (no rendering, no re-parsing): a backfill screens every row."""
        errors: list[FieldError] = []
        for name, spec in self.fields.items():
            value = record.get(name)
            if isinstance(value, Malformed):
                try:
                    self._field_value(spec, value.raw)
                except InvalidField as e:
                    errors.append(_error(name + e.path, e.message, e.value, spec.sensitive))
            elif value is None:
                if spec.empty is None and (spec.is_key or not spec.nullable):  # a set: []
                    errors.append(_error(name, "must not be null", None, spec.sensitive))
            elif spec.is_key or spec.indexed:
                try:
                    _check_key_value(value)
                except InvalidField as e:
                    errors.append(_error(name + e.path, e.message, e.value, spec.sensitive))
        return errors

    def validate_value(self, field: str, value: Any) -> Any:
        """Canonical value of one field (e.g. an index lookup value from a JSON body)."""
        spec = self._spec(field)
        try:
            return self._field_value(spec, value)
        except InvalidField as e:
            raise SchemaError([_error(field + e.path, e.message, e.value, spec.sensitive)]) from e

    def parse_text(self, field: str, text: str) -> Any:
        """Canonical value of a scalar field from URL text (a path key, a query parameter)."""
        spec = self._spec(field)
        if not spec.type.is_scalar:
            raise SchemaError([_error(field, f"cannot filter on a {spec.type} field", text, False)])
        try:
            return self._field_value(spec, _TEXT_TO_JSON[spec.type.base](text))
        except InvalidField as e:
            raise SchemaError([_error(field, e.message, text, spec.sensitive)]) from e

    def parse_key(self, text: str) -> Any:
        return self.parse_text(self.key, text)

    def parse_filters(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Equality filters from query parameters (the caller removes ``limit``/``cursor``)."""
        filters, errors = {}, []
        for name, text in params.items():
            try:
                filters[name] = self.parse_text(name, text)
            except SchemaError as e:
                errors.extend(e.errors)
        if errors:
            raise SchemaError(errors)
        return filters

    def check_fields(self, fields: Iterable[str]) -> tuple[str, ...]:
        """A projection: known field names, key first, no duplicates."""
        names = list(dict.fromkeys(fields))
        unknown = [n for n in names if n not in self.fields]
        if unknown:
            raise SchemaError([_error(n, "unknown field", n, False) for n in unknown])
        return (self.key, *(n for n in names if n != self.key))

    def check_filters(self, filters: Mapping[str, Any]) -> None:
        """Filters are equality on scalar fields with canonical (or null) values."""
        errors = []
        for name in filters:
            spec = self.fields.get(name)
            if spec is None:
                errors.append(_error(name, "unknown field", filters[name], False))
            elif not spec.type.is_scalar:
                errors.append(_error(name, f"cannot filter on a {spec.type} field", None, False))
        if errors:
            raise SchemaError(errors)

    def check_changes(self, key: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The non-key fields of an update; the key may be repeated but not changed."""
        unknown = [n for n in changes if n not in self.fields]
        if unknown:
            raise SchemaError([_error(n, "unknown field", changes[n], False) for n in unknown])
        if self.key in changes and changes[self.key] != key:
            raise SchemaError(
                [_error(self.key, "the key cannot be changed", changes[self.key], False)]
            )
        return {name: value for name, value in changes.items() if name != self.key}

    def index(self, name: str) -> IndexSpec:
        spec = self.indexes.get(name)
        if spec is None:
            raise SchemaError(
                [_error(name, f"unknown index; declared: {sorted(self.indexes)}", name, False)]
            )
        return spec

    def _spec(self, field: str) -> FieldSpec:
        spec = self.fields.get(field)
        if spec is None:
            raise SchemaError([_error(field, "unknown field", None, False)])
        return spec

    @staticmethod
    def _field_value(spec: FieldSpec, value: Any) -> Any:
        if value is None:
            if spec.is_key or not spec.nullable:
                raise InvalidField("must not be null", None)
            return spec.empty
        canonical = spec.canonical(value)
        if spec.is_key or spec.indexed:
            _check_key_value(canonical)
        return canonical

    # rendering --------------------------------------------------------------------------

    def to_json(
        self,
        record: Mapping[str, Any],
        *,
        fields: Iterable[str] | None = None,
        drift: bool = False,
    ) -> dict[str, Any]:
        """The canonical JSON value of a record: every declared field (or the projection).

        A malformed field (type drift) renders as its raw value, which is what a client gets;
        with ``drift`` (a value to compare, never to send: it is not JSON) as a
        :class:`~comparators.markers.Drifted` marker instead, so a comparison reports it
        whatever the raw value looks like.
        """
        plan = self._render_plan
        steps = plan.values() if fields is None else (plan[name] for name in fields)
        out: dict[str, Any] = {}
        for name, render, is_set in steps:
            value = record.get(name)
            if value is None:
                out[name] = [] if is_set else None
            elif isinstance(value, Malformed):
                out[name] = Drifted(value.raw, value.reason) if drift else value.raw
            else:
                out[name] = render(value)
        return out

    def with_drift(self, record: Mapping[str, Any] | None, rendered: Any) -> Any:
        """``rendered`` (``to_json`` of ``record``, or None) as ``to_json(drift=True)`` renders
        it: the same object when no field is malformed, so a rendering serves the client and
        a comparison alike at the cost of a look at each field."""
        if record is None or not isinstance(rendered, dict):
            return rendered
        drifted = {
            name: Drifted(value.raw, value.reason)
            for name, value in record.items()
            if isinstance(value, Malformed) and name in rendered
        }
        return {**rendered, **drifted} if drifted else rendered

    def dumps(self, record: Mapping[str, Any], *, fields: Iterable[str] | None = None) -> bytes:
        return json_bytes(self.to_json(record, fields=fields))

    def render_key(self, key: Any) -> Any:
        return self.key_field.render(key)


def _compile_field(name: str, fc: FieldConfig, *, is_key: bool, indexed: bool) -> FieldSpec:
    ftype = FieldType.parse(fc.type)
    return FieldSpec(
        name=name,
        type=ftype,
        nullable=fc.nullable and not is_key,
        required=fc.required or is_key,
        sensitive=fc.sensitive,
        is_key=is_key,
        indexed=indexed,
        canonical=canonicaliser(ftype),
        render=renderer(ftype),
    )


def _check_key_value(value: Any) -> None:
    if isinstance(value, str):
        if not value:
            raise InvalidField(
                "must not be empty: it is a key (DynamoDB keys cannot be empty)", value
            )
        if len(value.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidField(f"longer than {MAX_KEY_BYTES} bytes: it is a key", value)


def _text_int(text: str) -> Any:
    return int(text) if re.fullmatch(r"-?\d{1,20}", text) else text


def _text_float(text: str) -> Any:
    if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", text):
        return float(text)
    return text


_TEXT_BOOL = {"true": True, "false": False}
_TEXT_TO_JSON: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": _text_int,
    "decimal": str,
    "float": _text_float,
    "bool": lambda text: _TEXT_BOOL.get(text, text),
    "datetime": str,
    "date": str,
    "uuid": str,
}


def _error(field: str, message: str, value: Any, sensitive: bool) -> FieldError:
    if sensitive:
        value = "[redacted]"
    elif isinstance(value, str) and len(value) > _ERROR_VALUE_CHARS:
        value = value[:_ERROR_VALUE_CHARS] + "…"
    elif not isinstance(value, str | int | float | bool | type(None)) or (
        isinstance(value, int) and not -(2**63) <= value < 2**64
    ):
        value = _plain(value)
    return {"field": field, "message": message, "value": value}


def _plain(value: Any) -> Any:
    """A JSON-safe, bounded stand-in for a rejected value in an error; numbers exact (a
    Decimal or an integer beyond 64 bits as an ``orjson.Fragment`` of its digits)."""
    try:
        if len(orjson.dumps(value)) <= _ERROR_VALUE_CHARS:
            return value
    except TypeError:
        try:
            exact = exactjson.dumps(value)
        except TypeError:
            pass
        else:
            if len(exact) <= _ERROR_VALUE_CHARS:
                return orjson.Fragment(exact)
    text = repr(value)
    return text if len(text) <= _ERROR_VALUE_CHARS else text[:_ERROR_VALUE_CHARS] + "…"
