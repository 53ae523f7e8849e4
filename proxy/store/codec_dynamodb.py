"""DynamoDB codec: canonical values <-> low-level AttributeValues (``{"S": "..."}``).

Stored forms: string/datetime/date/uuid as ``S`` (datetime ``YYYY-MM-DDTHH:MM:SS.ffffffZ``,
so it sorts), int/decimal/float as ``N`` in fixed-point text (a decimal without trailing
zeros, which DynamoDB trims anyway), bool as ``BOOL``, json as ``S`` holding the compact JSON
text with sorted keys and exact numbers (lossless: ``proxy.store.exactjson``; native
``M``/``L``/``N`` values written by other tools are still read, their numbers exact too),
``list<T>`` as ``L``, ``set<T>`` as ``SS``/``NS``. No ``N`` passes through a binary float: a
``float`` field's ``N`` must be the digits of a double (else it reads as drift).
Null is an absent attribute (``NULL`` also reads as null). An empty set cannot be stored:
it is an absent attribute, which reads back as the empty set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from proxy.store import exactjson
from proxy.store.base import InvalidRecord, Record
from proxy.store.compared import SLOW, FastSteps, plain_text, plain_texts
from proxy.store.fieldtypes import (
    DATETIME_LIMIT,
    DATETIME_MIN,
    NUMBER_TYPES,
    SCALAR_CANONICAL,
    InvalidField,
    Malformed,
    canonical_json,
    canonical_json_text,
    render_datetime,
    render_uuid,
)
from proxy.store.plain import attribute
from proxy.store.schema import MAX_ITEM_BYTES as MAX_ITEM_BYTES  # DynamoDB's item limit
from proxy.store.schema import FieldSpec, Schema

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
Items = list[Item]


def attribute_type(base: str) -> str:
    """The key attribute type (``S`` or ``N``) of a scalar type."""
    return "N" if base in NUMBER_TYPES else "S"


def _number_text(value: int | Decimal | float) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format(value, "f")


def _decimal_text(value: Decimal) -> str:
    """Fixed-point digits without trailing zeros after the point: DynamoDB keeps ``1.50`` as
    ``1.5`` (equal as numbers), and its 38-digit limit counts no trailing zero."""
    text = exactjson.decimal_text(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


_SCALAR_TEXT: dict[str, Callable[[Any], str]] = {
    "string": str,
    "int": _number_text,
    "decimal": _decimal_text,
    "float": _number_text,
    "datetime": render_datetime,
    "date": lambda value: value.isoformat(),
    "uuid": render_uuid,
}


def scalar(base: str, value: Any) -> AttributeValue:
    if base == "bool":
        return {"BOOL": value}
    return {attribute_type(base): _SCALAR_TEXT[base](value)}


def encode_value(spec: FieldSpec, value: Any) -> AttributeValue | None:
    """The AttributeValue of a canonical value, or None when it is stored as absent."""
    if value is None:
        return None
    if isinstance(value, Malformed):
        raise InvalidRecord(f"field {spec.name!r} holds a malformed value: {value.reason}")
    base, container = spec.type.base, spec.type.container
    if base == "json":
        return {"S": exactjson.dumps(value, sort_keys=True).decode()}
    if container == "list":
        return {"L": [scalar(base, item) for item in value]}
    if container == "set":
        if not value:
            return None
        text = _SCALAR_TEXT[base]
        return {attribute_type(base) + "S": [text(item) for item in sorted(value)]}
    return scalar(base, value)


def encode_item(schema: Schema, record: Mapping[str, Any]) -> Item:
    item: Item = {}
    for name, value in record.items():
        av = encode_value(schema.fields[name], value)
        if av is not None:
            item[name] = av
    return item


def encode_key(schema: Schema, key: Any) -> Item:
    return {schema.key: scalar(schema.key_field.type.base, key)}


def _scalar_python(base: str, av: AttributeValue) -> Any:
    """The Python value a scalar AttributeValue holds, checked against the declared type."""
    if base == "bool":
        if "BOOL" not in av:
            raise InvalidField("expected BOOL", av)
        return av["BOOL"]
    tag = attribute_type(base)
    if tag not in av:
        raise InvalidField(f"expected {tag}", av)
    if tag == "S":
        return av["S"]
    number = Decimal(av["N"])
    if base == "int":
        if number != number.to_integral_value():
            raise InvalidField("expected an integer", av)
        return int(number)
    if base == "float":
        as_float = float(number)
        if Decimal(repr(as_float)) != number:
            raise InvalidField("holds more digits than a double (float field)", av)
        return as_float
    return number


def _element(base: str, av: AttributeValue) -> Any:
    return SCALAR_CANONICAL[base](_scalar_python(base, av))


def _decode_json(av: AttributeValue) -> Any:
    if "S" in av:
        return canonical_json_text(av["S"])
    return canonical_json(attribute(av), strict=False)


def decode_value(spec: FieldSpec, av: AttributeValue | None) -> Any:
    if av is None or "NULL" in av:
        return spec.empty
    base, container = spec.type.base, spec.type.container
    try:
        if base == "json":
            return _decode_json(av)
        if container is None:
            return _element(base, av)
        if container == "list":
            if "L" not in av:
                raise InvalidField("expected L", av)
            return [_element(base, item) for item in av["L"]]
        tag = attribute_type(base) + "S"
        if tag not in av:
            raise InvalidField(f"expected {tag}", av)
        return frozenset(_element(base, {tag[0]: text}) for text in av[tag])
    except InvalidField as e:
        return Malformed(attribute(av), e.message)
    except (exactjson.JSONDecodeError, ArithmeticError, ValueError) as e:
        return Malformed(attribute(av), str(e))


def decode_item(schema: Schema, item: Mapping[str, AttributeValue], names: Iterable[str]) -> Record:
    fields = schema.fields
    return {name: decode_value(fields[name], item.get(name)) for name in names}


def decode_key(schema: Schema, item: Mapping[str, AttributeValue]) -> Any:
    return decode_value(schema.key_field, item.get(schema.key))


# --- straight to the compared form (``proxy.store.compared``) -------------------------------

_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DATETIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_DATETIME_TEXTS = (render_datetime(DATETIME_MIN), render_datetime(DATETIME_LIMIT))
_INT_TEXT = re.compile(r"-?[0-9]{1,18}")  # 18 digits always fit in 64 bits


def _fast_string(av: AttributeValue) -> Any:
    text = av.get("S")
    return text if plain_text(text) else SLOW


def _fast_uuid(av: AttributeValue) -> Any:
    text = av.get("S")
    return text if isinstance(text, str) and _UUID_TEXT.fullmatch(text) else SLOW


def _fast_datetime(av: AttributeValue) -> Any:
    # Our own stored form, in range and a real instant, renders as itself.
    text = av.get("S")
    if not isinstance(text, str) or not _DATETIME_TEXT.fullmatch(text):
        return SLOW
    low, limit = _DATETIME_TEXTS
    if not low <= text < limit:
        return SLOW
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return SLOW
    return text


def _fast_int(av: AttributeValue) -> Any:
    text = av.get("N")
    return int(text) if isinstance(text, str) and _INT_TEXT.fullmatch(text) else SLOW


def _fast_bool(av: AttributeValue) -> Any:
    value = av.get("BOOL")
    return value if value is True or value is False else SLOW


def _fast_string_set(av: AttributeValue) -> Any:
    texts: Any = av.get("SS")
    return sorted(set(texts)) if plain_texts(texts) else SLOW


# The fast steps of ``ComparedDecoder(schema, COMPARED_STEPS, decode_value)``.
COMPARED_STEPS: FastSteps = {
    ("string", None): _fast_string,
    ("uuid", None): _fast_uuid,
    ("datetime", None): _fast_datetime,
    ("int", None): _fast_int,
    ("bool", None): _fast_bool,
    ("string", "set"): _fast_string_set,
}


# Sizes as DynamoDB counts them: attribute names and values in UTF-8 bytes, numbers about
# one byte per two significant digits plus one, 3 bytes per list/map plus 1 per element.


def value_size(av: AttributeValue) -> int:
    ((tag, value),) = av.items()
    if tag == "S":
        return len(value.encode("utf-8"))
    if tag == "N":
        return _number_size(value)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "B":
        return len(value)
    if tag == "SS":
        return sum(len(v.encode("utf-8")) for v in value)
    if tag == "NS":
        return sum(_number_size(v) for v in value)
    if tag == "L":
        return 3 + sum(1 + value_size(v) for v in value)
    if tag == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in value.items())
    return len(orjson.dumps(value))


def _number_size(text: str) -> int:
    digits = len(text.lstrip("-").replace(".", "").strip("0"))
    return (digits + 1) // 2 + 1


def item_size(item: Mapping[str, AttributeValue]) -> int:
    return sum(len(name.encode("utf-8")) + value_size(av) for name, av in item.items())
