"""Opaque list cursors: the store that issued it and the last key returned, base64url JSON.

A cursor only resumes the store that issued it: store order differs (PostgreSQL by key,
DynamoDB by key hash), so a cursor carried across a ``read_from`` flip is refused.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from proxy.store.base import InvalidCursor
from proxy.store.schema import Schema, SchemaError


def encode(store: str, schema: Schema, last_key: Any) -> str:
    payload = orjson.dumps({"s": store, "k": schema.render_key(last_key)})
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode(store: str, schema: Schema, cursor: str) -> Any:
    """The last key of the previous page, or ``InvalidCursor``."""
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(payload, dict) or payload.get("s") != store:
            raise InvalidCursor(f"cursor {cursor[:40]!r} was not issued by this {store} store")
        return schema.validate_value(schema.key, payload.get("k"))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as e:
        if isinstance(e, SchemaError):
            raise InvalidCursor(f"cursor {cursor[:40]!r} holds a bad key") from e
        raise InvalidCursor(f"cursor {cursor[:40]!r} is not a cursor") from e
