"""The PostgreSQL ``ComparedDecoder`` against its definition: for any row asyncpg could hand
over (typed values, as read; drifted ones too), decoding straight to the compared form gives
what ``decode_row`` and ``Schema.to_json(..., drift=True)`` give, value for value and type for
type."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from asyncpg.pgproto.pgproto import UUID as AsyncpgUUID
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators.canonical import canonical
from proxy.store.codec_postgres import COMPARED_STEPS, decode_row, decode_row_keyed, decode_value
from proxy.store.compared import ComparedDecoder, without_drift
from proxy.store.schema import ResourceConfig, Schema

from .conftest import RESOURCE
from .test_store_compared_dynamodb import shape

SCHEMA = Schema(ResourceConfig.model_validate(RESOURCE))
DECODER = ComparedDecoder(SCHEMA, COMPARED_STEPS, decode_value)
NAMES = list(SCHEMA.field_names)


def oracle(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return SCHEMA.to_json(decode_row(SCHEMA, row, names), fields=names, drift=True)


def check(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    want = oracle(row, names)
    got = DECODER.decode(row, names)
    assert shape(got) == shape(want)
    assert list(got) == list(want)
    assert canonical(got) == canonical(want)
    return got


texts = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=10),
    st.sampled_from(["a\x00b", "\ud800", "caf\u00e9", ""]),
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])
datetimes = st.one_of(
    st.datetimes(timezones=zones),
    st.datetimes(),  # naive: drift
    st.sampled_from(
        [
            datetime(1, 1, 1, 23, 59, tzinfo=UTC),
            datetime(1, 1, 2, tzinfo=UTC),
            datetime(9999, 12, 30, 23, 59, tzinfo=UTC),
            datetime(9999, 12, 31, tzinfo=UTC),
            datetime(2024, 1, 1, 12, tzinfo=UTC),
        ]
    ),
)
uuids = st.uuids().flatmap(
    lambda u: st.sampled_from([u, AsyncpgUUID(u.bytes), str(u), str(u).upper()])
)
ints = st.one_of(st.integers(-(2**64), 2**64), st.booleans(), st.floats(allow_nan=False))
others = st.one_of(
    st.none(), texts, ints, datetimes, uuids, st.dates(), st.decimals(allow_nan=False)
)
by_field: dict[str, st.SearchStrategy[Any]] = {
    "id": uuids,
    "email": texts,
    "first_name": texts,
    "is_active": st.one_of(st.booleans(), st.integers(0, 1)),
    "created_at": datetimes,
    "birthday": st.one_of(st.dates(), datetimes),
    "preferences": st.sampled_from(['{"b": [1, 2.5], "a": null}', "[1e400]", "{bad", '"x"']),
    "roles": st.lists(st.one_of(texts, st.none(), st.integers()), max_size=4),
    "tags": st.lists(texts, max_size=3),
    "lucky": st.lists(st.integers(-(2**64), 2**64), max_size=3),
    "balance": st.decimals(allow_nan=False, places=4),
    "login_count": ints,
    "score": st.floats(allow_nan=False),
}
rows = st.fixed_dictionaries(
    {name: st.one_of(st.none(), strategy, others) for name, strategy in by_field.items()}
)


@settings(max_examples=400, deadline=None)
@given(row=rows)
def test_every_row_decodes_straight_to_what_the_record_renders_as(row: dict[str, Any]) -> None:
    check(row, NAMES)


@settings(max_examples=100, deadline=None)
@given(row=rows, names=st.lists(st.sampled_from(NAMES), unique=True))
def test_a_projection_decodes_only_its_fields(row: dict[str, Any], names: list[str]) -> None:
    check(row, names)


@settings(max_examples=100, deadline=None)
@given(row=rows, key=st.uuids())
def test_a_row_read_without_its_key_takes_the_key_it_was_read_by(
    row: dict[str, Any], key: uuid.UUID
) -> None:
    del row["id"]
    want = SCHEMA.to_json(decode_row_keyed(SCHEMA, row, key), drift=True)
    assert shape(DECODER.decode(row, NAMES, key)) == shape(want)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("id", AsyncpgUUID(uuid.UUID(int=7).bytes)),
        ("id", "2F1B7E1C-7A4E-4C1E-9A43-0D3C1F9B6A10"),
        ("email", "\ud800"),
        ("email", "a\x00b"),
        ("email", "caf\u00e9"),
        ("email", 5),
        ("created_at", datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=1)))),
        ("created_at", datetime(2024, 1, 1, 12)),
        ("created_at", datetime(2024, 1, 1, 12, tzinfo=UTC)),
        ("created_at", datetime(1, 1, 1, 23, tzinfo=UTC)),
        ("created_at", datetime(9999, 12, 31, tzinfo=UTC)),
        ("created_at", date(2024, 1, 1)),
        ("login_count", True),
        ("login_count", 2**63),
        ("login_count", -(2**63)),
        ("login_count", 1.0),
        ("is_active", 1),
        ("roles", ["b", "a", "b"]),
        ("roles", ["a", None]),
        ("roles", ["\ud800"]),
        ("roles", ("a",)),
        ("roles", []),
        ("roles", None),
        ("preferences", 25_651_922_190),  # a json field over a bigint column: drift
    ],
)
def test_each_near_miss_of_a_fast_path_is_answered_as_the_record_renders(
    name: str, raw: Any
) -> None:
    check({name: raw}, [name])


def test_a_client_gets_the_raw_value_of_a_drifted_field_and_the_same_object_otherwise() -> None:
    row = {"id": uuid.uuid4(), "email": "a@example.com", "created_at": datetime(2024, 1, 1)}
    compared = check(row, ["id", "email"])
    assert without_drift(compared) is compared
    drifted = check(row, ["id", "created_at"])
    client = without_drift(drifted)
    assert client == SCHEMA.to_json(
        decode_row(SCHEMA, row, ["id", "created_at"]), fields=["id", "created_at"]
    )
    assert client["created_at"] == "2024-01-01T00:00:00"
