"""JSON whose numbers never pass through a binary float.

``loads`` reads integers as ``int`` (any size) and every other number as a ``Decimal`` with the
digits as written (``1.50`` stays ``Decimal("1.50")``). It accepts what ``orjson.loads``
accepts, plus numbers beyond a double's range (``1e400``), with orjson's error messages: the
text is parsed by orjson first, and again by the standard library's parser (``parse_float=
Decimal``) only when orjson's result holds a float, i.e. a number orjson could not keep
exactly. Text without such numbers costs one orjson parse and a walk.

``dumps`` writes a ``Decimal`` as its fixed-point digits, as PostgreSQL prints ``numeric``
(``decimal_text``), a ``DecimalText`` (a ``decimal`` field's rendering) as a JSON string of
them, and integers beyond 64 bits in full; everything else is orjson's. A value without such
numbers costs one ``orjson.dumps``.

``exact_number`` is the one form a JSON number takes inside a ``json`` field: the value as
PostgreSQL ``jsonb`` keeps it (see ``proxy.store.fieldtypes.canonical_json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

INT_MAX_DIGITS = 4000
"""Longer integers stay ``Decimal``: Python converts ``int`` to and from text only up to 4300
digits (``sys.get_int_max_str_digits``)."""

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1  # what orjson writes itself


class DecimalText(Decimal):
    """A ``decimal`` field's value as rendered: written as a JSON string of its fixed-point
    digits (``"1.50"``), compared as the number it is (``Decimal("1.50") == Decimal("1.5")``),
    so the comparison of a PostgreSQL ``1.50`` and a DynamoDB ``1.5`` (which trims zeros) is a
    match while a difference in any digit is not."""

    __slots__ = ()

    def __str__(self) -> str:
        return decimal_text(self)

    def __repr__(self) -> str:
        return f"DecimalText('{decimal_text(self)}')"


def decimal_text(value: Decimal) -> str:
    """Fixed-point digits, as PostgreSQL prints ``numeric``: ``1.50`` -> ``"1.50"``, ``1E+2``
    -> ``"100"``, ``1.5E-3`` -> ``"0.0015"``; no negative zero (``-0.0`` -> ``"0.0"``)."""
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return format(value, "f")


def exact_number(value: Decimal) -> int | Decimal:
    """A finite number in the form PostgreSQL keeps it: written without a point (no
    fraction digits, as ``1E+2`` is kept as ``100``), an ``int``; else the ``Decimal`` with
    its digits and scale (``1.50``, ``0.0015``). Zero has no sign (``-0.0`` -> ``0.0``)."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite number: {value}")
    if exponent >= 0:
        if len(digits) + exponent <= INT_MAX_DIGITS:
            return int(value)
        return Decimal((0 if value.is_zero() else sign, (*digits, *(0,) * exponent), 0))
    if value.is_zero():
        return Decimal((0, (0,), exponent))
    return value


# --- loads -------------------------------------------------------------------------------


def _parse_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= INT_MAX_DIGITS else Decimal(text)


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_int=_parse_int, parse_constant=_refuse_constant
)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """A JSON document with exact numbers; raises ``JSONDecodeError`` (orjson's)."""
    try:
        value = orjson.loads(data)
    except JSONDecodeError as e:
        # orjson refuses a number beyond a double's range (1e400) even though it is JSON.
        exact = _exact(data, check=True)
        if exact is _FAILED:
            raise e from None
        return exact
    return loads_checked(data) if _has_float(value) else value


_FAILED: Any = object()


def loads_checked(data: bytes | bytearray | memoryview | str) -> Any:
    """``loads`` of text that ``orjson.loads`` has already accepted and read a float from:
    only the exact parse is left to do."""
    exact = _exact(data, check=False)
    if exact is _FAILED:
        raise JSONDecodeError("nested too deeply for exact numbers", _text(data), 0)
    return exact


def _text(data: bytes | bytearray | memoryview | str) -> str:
    return data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")


def _exact(data: bytes | bytearray | memoryview | str, *, check: bool) -> Any:
    """The standard library's parse with exact numbers, or ``_FAILED`` for text nested too
    deeply for it; with ``check`` (orjson refused the text), also for text orjson refuses for
    any reason but a number's range (such as a lone surrogate, which orjson cannot write)."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        value = _DECODER.decode(text)
        if check:
            dumps(value)
    except (ValueError, TypeError, RecursionError):
        return _FAILED
    return value


def _has_float(value: Any) -> bool:
    """Whether an orjson result holds a float: a number with a fraction or an exponent, or
    an integer beyond 64 bits, that orjson read as the nearest double."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
    return False


# --- dumps -------------------------------------------------------------------------------


Default = Callable[[Any], Any]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        text = decimal_text(value)
        return text if type(value) is DecimalText else orjson.Fragment(text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


@lru_cache(maxsize=32)
def _chained(default: Default) -> Default:
    def hook(value: Any) -> Any:
        return _default(value) if isinstance(value, Decimal) else default(value)

    return hook


def dumps(value: Any, *, sort_keys: bool = False, default: Default | None = None) -> bytes:
    """JSON bytes with every number exact (object keys sorted when ``sort_keys``); ``default``
    is asked, as orjson's is, for any other type orjson does not write itself."""
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    hook = _default if default is None else _chained(default)
    try:
        return orjson.dumps(value, default=hook, option=option)
    except orjson.JSONEncodeError:
        # orjson refuses an integer beyond 64 bits without asking ``default``.
        return orjson.dumps(_big_ints(value), default=lambda v: _big_ints(hook(v)), option=option)


def int_text(value: int) -> str:
    """The digits of any integer (also beyond Python's int-to-text limit)."""
    try:
        return str(value)
    except ValueError:
        return format(Decimal(value), "f")


def _big_ints(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(int_text(value))
    if isinstance(value, dict):
        return {k: _big_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints(v) for v in value]
    return value
