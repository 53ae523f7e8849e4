"""``Schema.stored_errors`` (the backfill's cheap screen of a row read from a store) against
``validate(to_json(record))`` as the oracle: the same records pass, the same fields fail."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.store.fieldtypes import Malformed
from proxy.store.schema import ResourceConfig, Schema, SchemaError

SCHEMA = Schema(
    ResourceConfig.model_validate(
        {
            "name": "users",
            "prefix": "/users",
            "key": "id",
            "fields": {
                "id": {"type": "string"},
                "email": {"type": "string", "sensitive": True, "nullable": False},
                "name": {"type": "string"},
                "active": {"type": "bool", "nullable": False, "required": True},
                "roles": {"type": "set<string>", "nullable": False},
                "balance": {"type": "decimal"},
                "count": {"type": "int", "nullable": False},
            },
            "indexes": {"email": {"field": "email"}},
            "stores": {"p": {"backend": "p", "table": "t"}},
        }
    )
)

strings = st.one_of(st.just(""), st.text(max_size=5), st.just("x" * 2000))
malformed = st.builds(Malformed, st.one_of(st.integers(), st.text(max_size=3), st.none()))


def field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values, malformed)


records = st.fixed_dictionaries(
    {
        "id": field(strings),
        "email": field(strings),
        "name": field(strings),
        "active": field(st.booleans()),
        "roles": st.one_of(st.none(), st.frozensets(st.text(min_size=1, max_size=3), max_size=3)),
        "balance": field(st.decimals(allow_nan=False, allow_infinity=False, places=2)),
        "count": field(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    }
)


def decoded(record: dict[str, Any]) -> dict[str, Any]:
    """As a codec hands a row over: each value canonical, or Malformed when it is not."""
    out = {}
    for name, value in record.items():
        if value is not None and not isinstance(value, Malformed):
            try:
                value = SCHEMA.fields[name].canonical(value)
            except Exception:
                value = Malformed(value)
        out[name] = value
    return out


def oracle(record: dict[str, Any]) -> list[str]:
    try:
        SCHEMA.validate(SCHEMA.to_json(record), partial=False)
    except SchemaError as e:
        return sorted(err["field"] for err in e.errors)
    return []


@settings(max_examples=400, deadline=None)
@given(records)
def test_the_screen_agrees_with_validate(record: dict[str, Any]) -> None:
    record = decoded(record)
    assert sorted(e["field"] for e in SCHEMA.stored_errors(record)) == oracle(record)


def test_a_clean_stored_record_passes() -> None:
    record = {"id": str(uuid.uuid4()), "email": "a@b.c", "name": None, "active": True,
              "roles": frozenset(), "balance": Decimal("1.50"), "count": 3}  # fmt: skip
    assert SCHEMA.stored_errors(record) == [] == oracle(record)


def test_a_sensitive_value_never_shows() -> None:
    [error] = SCHEMA.stored_errors(
        {
            "id": "k",
            "email": Malformed(12345),
            "name": None,
            "active": True,
            "roles": frozenset(),
            "balance": None,
            "count": 1,
        }
    )
    assert error["field"] == "email" and error["value"] == "[redacted]"
