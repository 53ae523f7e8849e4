"""Field types: parse ``set<string>``-style declarations; map JSON input to one canonical
Python value per type and render it back as the one canonical JSON value.

Canonical values and JSON renderings:

=========  =========================================  ==========================================
type       canonical Python value                     canonical JSON
=========  =========================================  ==========================================
string     ``str`` (no NUL, valid Unicode)            string
int        ``int`` in the signed 64-bit range         number
decimal    ``Decimal``, finite, its scale kept        string of its fixed-point digits (``"1.50"``)
float      ``float``, finite, ``-0.0`` -> ``0.0``     number (shortest round-trip form)
bool       ``bool``                                   true / false
datetime   ``datetime``, tz-aware UTC                 ``"YYYY-MM-DDTHH:MM:SS.ffffffZ"``
date       ``date``                                   ``"YYYY-MM-DD"``
uuid       ``UUID``                                   lower-case hyphenated string
json       JSON value, exact numbers (see below)      the value (object keys sorted on dump)
list<T>    ``list`` of T (no nulls)                   array
set<T>     ``frozenset`` of T (no nulls)              array sorted by canonical value
=========  =========================================  ==========================================

Input rules that keep every value storable in *both* PostgreSQL and DynamoDB:
strings may not contain NUL (PostgreSQL ``text``/``jsonb`` cannot); decimals and floats stay
within DynamoDB's number range (38 significant digits, 1E-130 <= |x| < 1E+126); datetimes must
carry a zone (naive ones are rejected rather than guessed) and lie in 0001-01-02..9999-12-30
(asyncpg maps the extreme instants to +/-infinity); numbers in JSON values must fit
PostgreSQL's ``numeric`` (``canonical_json``).

Exact values: no ``int``, ``decimal`` or ``json`` number passes through a binary float. A
decimal keeps its digits and scale as PostgreSQL ``numeric`` does (``1.50`` stays ``1.50``;
DynamoDB trims it to ``1.5``, which compares equal), without negative zero; a JSON number is
an ``int`` or a ``Decimal`` as ``jsonb`` keeps it (``proxy.store.exactjson.exact_number``).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from comparators.errors import ShadowProxyError
from proxy.store import exactjson
from proxy.store.exactjson import DecimalText, exact_number

SCALAR_TYPES = ("string", "int", "decimal", "float", "bool", "datetime", "date", "uuid")
NUMBER_TYPES = frozenset({"int", "decimal", "float"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON_MAX_DEPTH = 64

_DECIMAL_MAX_DIGITS = 38
_DECIMAL_MAX_SCALE = 167  # digits after the point: 1E-130 with 38 significant digits
# A JSON number must fit PostgreSQL's numeric (digits before and after the point), and the
# numbers of one JSON value, written out in full as jsonb keeps them, must fit one DynamoDB
# item: exponents cannot blow a short request up into megabytes.
JSON_NUMBER_MAX_INTEGER_DIGITS = 131072
JSON_NUMBER_MAX_SCALE = 16383
JSON_NUMBERS_MAX_DIGITS = 400 * 1024
_DATE_MIN, _DATE_MAX = date(1, 1, 2), date(9999, 12, 30)
DATETIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
DATETIME_LIMIT = datetime(9999, 12, 31, tzinfo=UTC)

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
    if value.isascii():  # no surrogate: the common case needs no encoding
        return value
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
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    if not number.is_zero():
        if not -130 <= number.adjusted() <= 125:
            raise InvalidField("number out of range: 1E-130 <= |x| < 1E+126 (DynamoDB)", value)
        significant = len(digits)  # trailing zeros do not count: DynamoDB trims them
        while digits[significant - 1] == 0:
            significant -= 1
        if significant > _DECIMAL_MAX_DIGITS:
            raise InvalidField("more than 38 significant digits (DynamoDB)", value)
    if -exponent > _DECIMAL_MAX_SCALE:
        raise InvalidField(f"more than {_DECIMAL_MAX_SCALE} digits after the decimal point", value)
    # The digits and scale as PostgreSQL numeric keeps them: 1.50 stays 1.50, 1.5E+3 is
    # 1500, and there is no negative zero.
    if exponent > 0:
        return Decimal(int(number))
    return Decimal((0, (0,), exponent)) if number.is_zero() else number


def _float(value: Any) -> float:
    if not isinstance(value, int | float | Decimal) or isinstance(value, bool):
        raise InvalidField("expected a number", value)
    if isinstance(value, Decimal) and not value.is_finite():
        raise InvalidField("must be finite", value)
    try:
        number = float(value)  # a float field: the nearest double is what is kept
    except OverflowError:
        raise InvalidField("number out of the float range", value) from None
    if not math.isfinite(number):
        if isinstance(value, Decimal):
            raise InvalidField("number out of the float range", value)
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
    if not DATETIME_MIN <= parsed < DATETIME_LIMIT:
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


def render_decimal(value: Decimal) -> DecimalText:
    """A JSON string of the fixed-point digits (``"1.50"``) that compares as a number."""
    return value if type(value) is DecimalText else DecimalText(value)


def render_datetime(value: datetime) -> str:
    """``2026-12-04T01:28:25.280953Z``: the instant in UTC, always with microseconds.

    A canonical datetime is in UTC: orjson writes it ~4x faster than ``isoformat`` (0.4
    against 1.9 µs here, twice per users record on every read), but drops a zero microsecond
    part, so those and any other zone take the ``isoformat`` way. Tested against it."""
    if value.tzinfo is UTC and value.microsecond:
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def render_uuid(value: uuid.UUID) -> str:
    """The hyphenated lower-case form; orjson's for a plain ``UUID`` (0.2 against 0.55 µs for
    ``str``), ``str`` for a subclass, which orjson refuses (asyncpg's)."""
    if type(value) is uuid.UUID:
        return orjson.dumps(value)[1:-1].decode()
    return str(value)


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
    "uuid": render_uuid,
}


# --- json ----------------------------------------------------------------------------------


def canonical_json(value: Any, *, strict: bool = True, path: str = "", depth: int = 0) -> Any:
    """A JSON value in canonical form, its numbers exact and as PostgreSQL ``jsonb`` keeps
    them (``exact_number``): an ``int`` when written without a point (``1E+2`` is ``100``),
    else a ``Decimal`` with its digits and scale (``1.50``, ``0.0015``), no negative zero. A
    float (from code, not from JSON text) counts as the digits it prints (``0.1``).

    ``strict`` (input): every number fits PostgreSQL ``numeric`` (131072 digits before the
    point, 16383 after), and the numbers written out take at most ``JSON_NUMBERS_MAX_DIGITS``
    digits in all. JSON values are stored as text in both stores (``jsonb``, a DynamoDB
    ``S``), so DynamoDB's 38-digit limit on ``N`` does not apply to them.
    """
    budget = [JSON_NUMBERS_MAX_DIGITS] if strict else None
    try:
        return _json(value, depth, budget)
    except InvalidField as e:
        if not path:
            raise
        raise InvalidField(e.message, e.value, path + e.path) from None


class _Inexact(Exception):
    """orjson read a number as a float: the text must be parsed again, exactly."""


_NO_FLOATS: list[int] = []  # a budget that refuses floats (and counts nothing)


def canonical_json_text(text: str | bytes) -> Any:
    """The canonical value of stored JSON text, its numbers exact (a store's read path).

    One orjson parse and one walk when the text holds no number orjson cannot keep exactly
    (a fraction, an exponent, an integer beyond 64 bits): the walk ``canonical_json`` does
    anyway notices the first float, and only then is the text parsed again with exact
    numbers. Raises ``exactjson.JSONDecodeError``, or ``InvalidField`` for a value that is
    no text (a json field over a column of another type)."""
    if not isinstance(text, str | bytes):
        raise InvalidField("expected JSON text", text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # perhaps a number beyond a double's range (1e400)
        return canonical_json(exactjson.loads(text), strict=False)
    try:
        return _json(value, 0, _NO_FLOATS)
    except _Inexact:
        return canonical_json(exactjson.loads_checked(text), strict=False)


def _json(value: Any, depth: int, budget: list[int] | None) -> Any:
    """The canonical value; an ``InvalidField``'s path is relative to ``value`` (each
    container adds its segment as the error passes, so no path is built while all is well)."""
    if depth > JSON_MAX_DEPTH:
        raise InvalidField(f"nested deeper than {JSON_MAX_DEPTH} levels", value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        return _json_number(Decimal(value), value, budget)
    if isinstance(value, float):
        if budget is _NO_FLOATS:
            raise _Inexact
        if not math.isfinite(value):
            raise InvalidField("must be finite", value)
        return _json_number(Decimal(repr(value)), value, budget)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidField("must be finite", value)
        return _json_number(value, value, budget)
    if isinstance(value, list | tuple):
        out_list = []
        for i, item in enumerate(value):
            try:
                out_list.append(_json(item, depth + 1, budget))
            except InvalidField as e:
                raise InvalidField(e.message, e.value, f"[{i}]{e.path}") from None
        return out_list
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidField("JSON object keys must be strings", key)
            check_text(key)
            try:
                out[key] = _json(item, depth + 1, budget)
            except InvalidField as e:
                raise InvalidField(e.message, e.value, f".{key}{e.path}") from None
        return out
    raise InvalidField(f"not a JSON value ({type(value).__name__})", value)


def _json_number(number: Decimal, value: Any, budget: list[int] | None) -> Any:
    if budget is not None and budget is not _NO_FLOATS:
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        before = 1 if number.is_zero() else max(number.adjusted() + 1, 1)
        after = max(-exponent, 0)
        if before > JSON_NUMBER_MAX_INTEGER_DIGITS or after > JSON_NUMBER_MAX_SCALE:
            raise InvalidField(
                f"number out of range: PostgreSQL keeps at most "
                f"{JSON_NUMBER_MAX_INTEGER_DIGITS} digits before the decimal point and "
                f"{JSON_NUMBER_MAX_SCALE} after it",
                value,
            )
        budget[0] -= before + after
        if budget[0] < 0:
            raise InvalidField(
                f"the value's numbers written out in full take more than "
                f"{JSON_NUMBERS_MAX_DIGITS} digits (a DynamoDB item holds at most 400 KB)",
                value,
            )
    return exact_number(number)


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
