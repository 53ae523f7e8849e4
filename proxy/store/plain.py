"""Plain JSON stand-ins for raw store values that do not decode to their declared type."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from proxy.store.exactjson import exact_number


def plain(raw: Any) -> Any:
    """A JSON-renderable form of a raw Python value read from a store."""
    if raw is None or isinstance(raw, bool | int | str):
        return raw
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else str(raw)
    if isinstance(raw, Decimal):
        return number(raw)
    if isinstance(raw, datetime | date):
        return raw.isoformat()
    if isinstance(raw, uuid.UUID):
        return str(raw)
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode()
    if isinstance(raw, dict):
        return {str(k): plain(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple | set | frozenset):
        return [plain(v) for v in raw]
    return repr(raw)


def number(value: Decimal) -> Any:
    """The exact number, never a float: an int when written without a point, else the
    Decimal (``exact_number``); the text of a NaN or an infinity."""
    if not value.is_finite():
        return str(value)
    return exact_number(value)


def attribute(av: dict[str, Any]) -> Any:
    """A plain JSON value for a DynamoDB AttributeValue (``{"S": ...}``, ``{"L": [...]}``)."""
    if not isinstance(av, dict) or len(av) != 1:
        return plain(av)
    ((tag, value),) = av.items()
    if tag in ("S", "BOOL"):
        return value
    if tag == "N":
        return number(Decimal(value))
    if tag == "NULL":
        return None
    if tag == "L":
        return [attribute(v) for v in value]
    if tag == "M":
        return {k: attribute(v) for k, v in value.items()}
    if tag == "SS":
        return sorted(value)
    if tag == "NS":
        return [number(n) for n in sorted(Decimal(v) for v in value)]
    if tag == "B":
        return plain(value)
    if tag == "BS":
        return [plain(v) for v in value]
    return plain(value)
