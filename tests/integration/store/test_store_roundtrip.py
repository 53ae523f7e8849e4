"""The schema is the contract: any valid record written through either store reads back as
the same canonical JSON bytes, from both stores, equal to the input's canonical form."""

from __future__ import annotations

import asyncio
import os
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.store.fieldtypes import INT64_MAX, INT64_MIN
from proxy.store.schema import Schema

pytestmark = pytest.mark.integration

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=-14)), timezone(timedelta(hours=5, minutes=45))]
)
datetimes = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29)),
    offsets,
)
dates = st.dates(min_value=date(1, 1, 2), max_value=date(9999, 12, 30)).map(date.isoformat)
decimals = st.builds(
    lambda coefficient, exponent, as_text: (
        str(Decimal(f"{coefficient}E{exponent}")) if as_text else coefficient
    ),
    st.integers(-(10**38) + 1, 10**38 - 1),
    st.integers(-90, 87),
    st.booleans(),
)
floats = st.floats(min_value=-1e125, max_value=1e125, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) >= 1e-129
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


users = st.fixed_dictionaries(
    {
        "id": st.uuids().map(str),
        "email": st.text(
            st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
            min_size=1,
            max_size=40,
        ),
        "is_active": st.booleans(),
        "created_at": datetimes,
    },
    optional={
        "first_name": _maybe(text),
        "last_name": _maybe(text),
        "updated_at": _maybe(datetimes),
        "birthday": _maybe(dates),
        "preferences": json_values,
        "roles": _maybe(st.lists(text, max_size=5)),
        "tags": _maybe(st.lists(text, max_size=5)),
        "balance": _maybe(decimals),
        "login_count": _maybe(st.integers(INT64_MIN, INT64_MAX)),
        "score": _maybe(floats),
    },
)


def dynamodb_form(record: dict[str, Any]) -> dict[str, Any]:
    """The record as DynamoDB holds it: a decimal without trailing zeros after the point (the
    same number; PostgreSQL keeps the scale, ``1.50``, and DynamoDB trims it, ``1.5``)."""
    balance = record.get("balance")
    if balance is None:
        return record
    digits = format(balance, "f")
    return {
        **record,
        "balance": Decimal(digits.rstrip("0").rstrip(".") if "." in digits else digits),
    }


def test_records_read_back_identically_from_both_stores(
    users_schema: Schema, moto_endpoint: str, openers: Any
) -> None:
    open_postgres, open_dynamodb = openers
    suffix = uuid.uuid4().hex[:12]

    async def check(bodies: list[dict[str, Any]]) -> None:
        records = [users_schema.validate(body, partial=False) for body in bodies]
        expected = {r["id"]: users_schema.dumps(r) for r in records}  # the last one wins
        in_dynamodb = {r["id"]: users_schema.dumps(dynamodb_form(r)) for r in records}
        first = records[0]
        for store, form in ((pg, first), (ddb, dynamodb_form(first))):
            await store.put(first)
            assert users_schema.dumps(await store.get(first["id"])) == users_schema.dumps(form)
            assert all(r.ok for r in await store.batch_put(records))
        from_pg = await pg.batch_get(list(expected))
        from_ddb = await ddb.batch_get(list(expected))
        assert [users_schema.dumps(r) for r in from_pg] == list(expected.values())
        assert [users_schema.dumps(r) for r in from_ddb] == list(in_dynamodb.values())
        assert from_pg == from_ddb  # equal as values: 1.50 == 1.5

    @settings(
        max_examples=int(os.environ.get("STORE_ROUNDTRIP_EXAMPLES", "30")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(users, min_size=1, max_size=4))
    def roundtrip(bodies: list[dict[str, Any]]) -> None:
        runner.run(check(bodies))

    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        try:
            table = f"users_rt_{suffix}"
            pg = runner.run(stack.enter_async_context(open_postgres(users_schema, table)))
            ddb = runner.run(
                stack.enter_async_context(open_dynamodb(users_schema, table, moto_endpoint))
            )
            roundtrip()
        finally:
            runner.run(stack.aclose())
