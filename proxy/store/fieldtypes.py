"""Field types: parse ``set<string>``-style declarations; map JSON input to one canonical
Python value per type and render it back as the one canonical JSON value.

Canonical values and JSON renderings:

=========  =========================================  ==========================================
type       canonical Python value                     canonical JSON
=========  =========================================  ==========================================
string     ``str`` (no NUL, valid Unicode)            string
int        ``int`` in the signed 64-bit range         number
decimal    ``Decimal``, normalised, finite            string, fixed-point, no trailing zeros
float      ``float``, finite, ``-0.0`` -> ``0.0``     number (shortest round-trip form)
bool       ``bool``                                   true / false
datetime   ``datetime``, tz-aware UTC                 ``"YYYY-MM-DDTHH:MM:SS.ffffffZ"``
date       ``date``                                   ``"YYYY-MM-DD"``
uuid       ``UUID``                                   lower-case hyphenated string
json       plain JSON value (see ``canonical_json``)  the value (object keys sorted on dump)
list<T>    ``list`` of T (no nulls)                   array
set<T>     ``frozenset`` of T (no nulls)              array sorted by canonical value
=========  =========================================  ==========================================

Input rules that keep every value storable in *both* PostgreSQL and DynamoDB:
strings may not contain NUL (PostgreSQL ``text``/``jsonb`` cannot); decimals and floats stay
within DynamoDB's number range (38 significant digits, 1E-130 <= |x| < 1E+126); datetimes must
carry a zone (naive ones are rejected rather than guessed) and lie in 0001-01-02..9999-12-30
(asyncpg maps the extreme instants to +/-infinity); JSON integers must fit in 64 bits.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Context, Decimal
from typing import Any

from comparators.errors import ShadowProxyError

SCALAR_TYPES = ("string", "int", "decimal", "float", "bool", "datetime", "date", "uuid")
NUMBER_TYPES = frozenset({"int", "decimal", "float"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON_MAX_DEPTH = 64

_DECIMAL_MAX_DIGITS = 38
_DATE_MIN, _DATE_MAX = date(1, 1, 2), date(9999, 12, 30)
_DATETIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
_DATETIME_LIMIT = datetime(9999, 12, 31, tzinfo=UTC)

_TYPE_RE = re.compile(r"^(?:(list|set)<\s*([a-z]+)\s*>|([a-z]+))$")
_NUMBER_RE = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INT_RE = re.compile(r"^-?\d{1,20}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class InvalidField(ShadowProxyError, ValueError):
    """A value does not fit its type. ``path`` locates it inside the field (``[2]``, ``.a``)."""

    def __init__(self, message: str, value: Any, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.value = value
        self.path = path


@dataclass(frozen=True, slots=True)
class Malformed:
    """A stored value that does not decode to its declared type (type drift, NaN, infinity).

    Codecs keep it instead of failing the whole read, so a comparison shows the drift as a
    difference; it renders as ``raw`` (a plain JSON value) and cannot be written back.
    """

    raw: Any
    reason: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class FieldType:
    """A parsed type declaration: ``base`` is a scalar type or ``json``; ``container`` is
    ``None``, ``"list"`` or ``"set"``."""

    base: str
    container: str | None = None

    @classmethod
    def parse(cls, text: str) -> FieldType:
        match = _TYPE_RE.match(text.strip())
        if match is None:
            raise ValueError(f"unknown type {text!r}: expected {_type_names()}")
        container, element, plain = match.groups()
        base = element or plain
        if container is None and base not in (*SCALAR_TYPES, "json"):
            raise ValueError(f"unknown type {text!r}: expected {_type_names()}")
        if container is not None and base not in SCALAR_TYPES:
            raise ValueError(
                f"unknown type {text!r}: {container}<T> takes a scalar T, one of "
                + ", ".join(SCALAR_TYPES)
            )
        if container == "set" and base == "bool":
            raise ValueError(f"unsupported type {text!r}: DynamoDB has no boolean set")
        return cls(base, container)

    def __str__(self) -> str:
        return f"{self.container}<{self.base}>" if self.container else self.base

    @property
    def is_scalar(self) -> bool:
        return self.container is None and self.base != "json"


def _type_names() -> str:
    return ", ".join((*SCALAR_TYPES, "json", "list<T>", "set<T>"))


# --- scalars: JSON input (or an already canonical value) -> canonical value ---------------


def check_text(value: str) -> str:
    if "\x00" in value:
        raise InvalidField("must not contain NUL (U+0000): PostgreSQL cannot store it", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField("is not valid Unicode (lone surrogate)", value) from None
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidField("expected a string", value)
    return check_text(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidField("expected an integer", value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidField("integer out of the signed 64-bit range", value)
    return int(value)


def _check_number_range(number: Decimal, value: Any) -> None:
    if number and not -130 <= number.adjusted() <= 125:
        raise InvalidField("number out of range: 1E-130 <= |x| < 1E+126 (DynamoDB)", value)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidField("expected a decimal number or numeric string", value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidField("must be finite", value)
        number = Decimal(repr(value))
    elif isinstance(value, str) and _NUMBER_RE.match(value):
        number = Decimal(value)
    else:
        raise InvalidField("expected a decimal number or numeric string", value)
    if not number.is_finite():
        raise InvalidField("must be finite", value)
    if number.is_zero():
        return Decimal(0)
    if not -130 <= number.adjusted() <= 125:
        raise InvalidField("number out of range: 1E-130 <= |x| < 1E+126 (DynamoDB)", value)
    digits = len(number.as_tuple().digits)
    number = number.normalize(Context(prec=digits, Emin=-999_999, Emax=999_999))
    if len(number.as_tuple().digits) > _DECIMAL_MAX_DIGITS:
        raise InvalidField("more than 38 significant digits (DynamoDB)", value)
    return number


def _float(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidField("expected a number", value)
    try:
        number = float(value)
    except OverflowError:
        raise InvalidField("number out of the float range", value) from None
    if not math.isfinite(number):
        raise InvalidField("must be finite", value)
    _check_number_range(Decimal(repr(number)), value)
    return number + 0.0  # -0.0 + 0.0 == 0.0: one zero, as DynamoDB keeps it


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidField("expected true or false", value)
    return value


def _datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidField("expected an ISO-8601 datetime with a zone", value) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise InvalidField("expected an ISO-8601 datetime string", value)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidField("datetime has no zone: add 'Z' or an offset such as '+02:00'", value)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidField("datetime out of range", value) from None
    if not _DATETIME_MIN <= parsed < _DATETIME_LIMIT:
        raise InvalidField("datetime out of range 0001-01-02..9999-12-30", value)
    return parsed


def _date(value: Any) -> date:
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise InvalidField("expected a date YYYY-MM-DD", value) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        parsed = value
    else:
        raise InvalidField("expected a date YYYY-MM-DD", value)
    if not _DATE_MIN <= parsed <= _DATE_MAX:
        raise InvalidField("date out of range 0001-01-02..9999-12-30", value)
    return parsed


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value if type(value) is uuid.UUID else uuid.UUID(int=value.int)
    if isinstance(value, str) and _UUID_RE.match(value):
        return uuid.UUID(value)
    raise InvalidField("expected a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'", value)


SCALAR_CANONICAL: dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "int": _int,
    "decimal": _decimal,
    "float": _float,
    "bool": _bool,
    "datetime": _datetime,
    "date": _date,
    "uuid": _uuid,
}


# --- canonical value -> canonical JSON value ---------------------------------------------


def render_decimal(value: Decimal) -> str:
    return format(value, "f")


def render_datetime(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _identity(value: Any) -> Any:
    return value


SCALAR_RENDER: dict[str, Callable[[Any], Any]] = {
    "string": _identity,
    "int": _identity,
    "decimal": render_decimal,
    "float": _identity,
    "bool": _identity,
    "datetime": render_datetime,
    "date": date.isoformat,
    "uuid": str,
}


# --- json ----------------------------------------------------------------------------------


def canonical_json(value: Any, *, strict: bool = True, path: str = "", depth: int = 0) -> Any:
    """A plain JSON value in canonical form.

    Integral floats below 2**63 become ints and ints beyond 64 bits become floats (rejected
    when ``strict``), so a value survives PostgreSQL ``jsonb`` (which prints ``1e20`` as
    ``100000000000000000000``) and a JSON string in DynamoDB alike.
    """
    if depth > JSON_MAX_DEPTH:
        raise InvalidField(f"nested deeper than {JSON_MAX_DEPTH} levels", value, path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _at(path, check_text, value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        if strict:
            raise InvalidField("JSON integer out of the signed 64-bit range", value, path)
        value = _at(path, _float, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidField("must be finite", value, path)
        if value.is_integer() and INT64_MIN <= value < 2**63:
            return int(value)
        return value
    if isinstance(value, list | tuple):
        return [
            canonical_json(item, strict=strict, path=f"{path}[{i}]", depth=depth + 1)
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidField("JSON object keys must be strings", key, path)
            _at(path, check_text, key)
            out[key] = canonical_json(item, strict=strict, path=f"{path}.{key}", depth=depth + 1)
        return out
    raise InvalidField(f"not a JSON value ({type(value).__name__})", value, path)


def _at(path: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except InvalidField as e:
        raise InvalidField(e.message, e.value, path + e.path) from None


# --- compiled per field type ---------------------------------------------------------------


def canonicaliser(ftype: FieldType) -> Callable[[Any], Any]:
    """The function mapping a non-null JSON (or canonical) value of ``ftype`` to canonical."""
    if ftype.base == "json":
        return canonical_json
    element = SCALAR_CANONICAL[ftype.base]
    if ftype.container is None:
        return element

    def elements(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple | set | frozenset):
            raise InvalidField(f"expected an array of {ftype.base}", value)
        out = []
        for i, item in enumerate(value):
            if item is None:
                raise InvalidField("elements must not be null", item, f"[{i}]")
            out.append(_at(f"[{i}]", element, item))
        return out

    if ftype.container == "list":
        return elements
    return lambda value: frozenset(elements(value))


def renderer(ftype: FieldType) -> Callable[[Any], Any]:
    """The function mapping a canonical value of ``ftype`` to its canonical JSON value."""
    if ftype.base == "json":
        return _identity
    element = SCALAR_RENDER[ftype.base]
    if ftype.container is None:
        return element
    if ftype.container == "list":
        return lambda value: [element(item) for item in value]
    return lambda value: [element(item) for item in sorted(value)]
