"""How big a record is, measured as DynamoDB measures an item, and the resource's bound.

DynamoDB holds at most 400 KB per item, the smallest limit of the stores, so a record larger
than that written to PostgreSQL first could never be mirrored: its key would stay in the repair
log for ever. ``check_record_size`` refuses such a record (``LimitExceeded``, answered 413)
before any store is written; the bound is the schema's ``max_record_bytes`` (configurable below
DynamoDB's limit, never above it while a DynamoDB store holds the resource).

The measure is ``proxy.store.codec_dynamodb.item_size`` of the record's item: attribute names
and values in UTF-8 bytes, numbers about one byte per two significant digits, JSON values as
their text; the DynamoDB store's own check of each item it writes uses the same measure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.store.base import LimitExceeded
from proxy.store.codec_dynamodb import encode_value, value_size
from proxy.store.fieldtypes import Malformed
from proxy.store.schema import Schema


class RecordTooLarge(LimitExceeded):
    """A record over ``max_record_bytes``: ``size`` bytes, ``field`` the largest field."""

    def __init__(self, message: str, *, size: int, limit: int, field: str, field_size: int):
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.field = field
        self.field_size = field_size


def field_sizes(schema: Schema, record: Mapping[str, Any]) -> dict[str, int]:
    """Bytes per stored attribute (name and value); null fields and malformed values, which
    cannot be written anyway, count nothing."""
    sizes: dict[str, int] = {}
    fields = schema.fields
    for name, value in record.items():
        if value is None or isinstance(value, Malformed):
            continue
        av = encode_value(fields[name], value)
        if av is not None:
            sizes[name] = len(name.encode("utf-8")) + value_size(av)
    return sizes


def record_size(schema: Schema, record: Mapping[str, Any]) -> int:
    return sum(field_sizes(schema, record).values())


def check_record_size(
    schema: Schema, record: Mapping[str, Any], *, changed: Iterable[str] | None = None
) -> None:
    """Raise ``RecordTooLarge`` (a ``LimitExceeded``: 413) naming the largest field when
    ``record`` is over the schema's ``max_record_bytes`` (of an update: the largest of the
    ``changed`` fields, what the client can drop)."""
    limit = schema.max_record_bytes
    sizes = field_sizes(schema, record)
    total = sum(sizes.values())
    if total <= limit:
        return
    among = [name for name in changed or () if name in sizes]
    largest = max(among or sizes, key=sizes.__getitem__)
    which = "the largest field changed" if among else "its largest field"
    raise RecordTooLarge(
        f"the {schema.name} record is {total} bytes encoded, over the {limit} a record may be "
        f"(max_record_bytes); {which} is {largest!r} ({sizes[largest]} bytes)",
        size=total,
        limit=limit,
        field=largest,
        field_size=sizes[largest],
    )
