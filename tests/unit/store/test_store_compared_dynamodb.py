"""``ComparedDecoder`` against its definition: for any item DynamoDB could send (ours, other
tools', drifted), decoding straight to the compared form gives what decoding to a record and
rendering it (``Schema.to_json(..., drift=True)``) gives, value for value and type for type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators.canonical import canonical
from comparators.markers import Drifted
from proxy.store.codec_dynamodb import COMPARED_STEPS, decode_item, decode_value, encode_value
from proxy.store.compared import ComparedDecoder
from proxy.store.fieldtypes import render_datetime
from proxy.store.schema import ResourceConfig, Schema

from .conftest import RESOURCE

SCHEMA = Schema(ResourceConfig.model_validate(RESOURCE))
DECODER = ComparedDecoder(SCHEMA, COMPARED_STEPS, decode_value)


def shape(value: Any) -> Any:
    """A value with its types spelled out, so ``1 == 1.0 == True`` cannot pass for equal."""
    if isinstance(value, Drifted):
        return ("drifted", shape(value.raw), value.reason)
    if isinstance(value, dict):
        return ("dict", {k: shape(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [shape(v) for v in value])
    return (type(value).__name__, value)


def oracle(item: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return SCHEMA.to_json(decode_item(SCHEMA, item, names), fields=names, drift=True)


def same_as_oracle(item: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The decoder's answer, checked against the oracle's; where the oracle raises (an
    ``N`` that is no number, which DynamoDB never sends), the decoder raises alike."""
    try:
        want = oracle(item, names)
    except Exception as e:
        with pytest.raises(type(e)):
            DECODER.decode(item, names)
        return {}
    got = DECODER.decode(item, names)
    assert shape(got) == shape(want)
    assert list(got) == list(want)
    assert canonical(got) == canonical(want)
    return got


texts = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)
uuids = st.uuids().map(str)
any_text = st.one_of(
    texts,
    uuids,
    uuids.map(str.upper),
    uuids.map(lambda u: "{" + u + "}"),
    uuids.map(lambda u: u + "\n"),
    st.from_regex(r"[0-9a-fA-F-]{36}", fullmatch=True),
)
instants = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23), timezones=st.just(UTC)
)
datetime_texts = st.one_of(
    instants.map(lambda d: d.isoformat()),
    instants.filter(lambda d: timedelta(days=1) < d - datetime(1, 1, 1, tzinfo=UTC)).map(
        lambda d: render_datetime(d) if d.year < 9999 else d.isoformat()
    ),
    instants.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", fullmatch=True
    ),
    st.just("0001-01-01T23:59:59.999999Z"),
    st.just("0001-01-02T00:00:00.000000Z"),
    st.just("9999-12-30T23:59:59.999999Z"),
    st.just("9999-12-31T00:00:00.000000Z"),
    st.just("2024-02-30T00:00:00.000000Z"),
    st.just("2024-01-01T00:00:00.000000+02:00"),
    st.just("2024-01-01T00:00:00.000000z"),
    st.just("\uff12\uff10\uff12\uff14-01-01T00:00:00.000000Z"),
)
number_texts = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"-?[0-9]{1,20}", fullmatch=True),
    st.sampled_from(["-0", "+5", " 7", "1.0", "1.5", "1e3", "1E+2", "NaN", "", "0x10"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)
scalars = st.one_of(
    any_text.map(lambda t: {"S": t}),
    datetime_texts.map(lambda t: {"S": t}),
    number_texts.map(lambda t: {"N": t}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.sampled_from([{"BOOL": "true"}, {"BOOL": 1}, {"NULL": True}, {"S": 5}, {"N": 5}]),
)
attribute_values = st.one_of(
    scalars,
    st.lists(st.one_of(texts, st.integers()), max_size=4).map(lambda v: {"SS": v}),
    st.lists(texts, max_size=4).map(lambda v: {"SS": v}),
    st.lists(number_texts, max_size=3).map(lambda v: {"NS": v}),
    st.lists(scalars, max_size=3).map(lambda v: {"L": v}),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2).map(lambda v: {"M": v}),
    st.sampled_from([{"S": '{"b":[1,2.5],"a":null}'}, {"S": "{not json"}, {"S": "1.50"}]),
)


def stored(name: str, value: Any) -> dict[str, Any] | None:
    return encode_value(SCHEMA.fields[name], SCHEMA.validate({name: value}, partial=True)[name])


# What we write ourselves: the common case, which the fast paths are for.
ours = st.fixed_dictionaries(
    {
        "id": st.uuids().map(lambda u: stored("id", str(u))),
        "email": texts.filter(lambda t: "\x00" not in t).map(lambda t: {"S": t}),
        "is_active": st.booleans().map(lambda b: {"BOOL": b}),
        "created_at": instants.filter(
            lambda d: datetime(1, 1, 3, tzinfo=UTC) < d < datetime(9999, 12, 30, tzinfo=UTC)
        ).map(lambda d: stored("created_at", d.isoformat())),
        "login_count": st.integers(-(2**63), 2**63 - 1).map(lambda n: {"N": str(n)}),
        "roles": st.sets(st.text(max_size=5), min_size=1, max_size=4).map(
            lambda s: {"SS": sorted(s)}
        ),
        "balance": st.just({"N": str(Decimal("-12.5"))}),
    },
    optional={name: attribute_values for name in ("first_name", "preferences", "tags", "score")},
)
# Near misses of each fast path, field by field: other spellings, bad characters, drift.
odd_texts = st.one_of(texts, st.sampled_from(["a\x00b", "\x00", "\ud800", "caf\u00e9", ""]))
near: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(any_text.map(lambda t: {"S": t}), scalars),
    "email": st.one_of(odd_texts.map(lambda t: {"S": t}), scalars),
    "first_name": st.one_of(odd_texts.map(lambda t: {"S": t}), scalars),
    "created_at": st.one_of(datetime_texts.map(lambda t: {"S": t}), scalars),
    "login_count": st.one_of(number_texts.map(lambda t: {"N": t}), scalars),
    "is_active": scalars,
    "roles": st.one_of(st.lists(odd_texts, max_size=4).map(lambda v: {"SS": v}), attribute_values),
}
anything = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(near[name], attribute_values) if name in near else attribute_values
        for name in SCHEMA.fields
    },
)


@settings(max_examples=400, deadline=None)
@given(item=st.one_of(ours, anything))
def test_every_item_decodes_straight_to_what_the_record_renders_as(item: dict[str, Any]) -> None:
    same_as_oracle(item, list(SCHEMA.field_names))


@settings(max_examples=100, deadline=None)
@given(
    item=st.one_of(ours, anything),
    names=st.lists(st.sampled_from(list(SCHEMA.fields)), unique=True),
)
def test_a_projection_decodes_only_its_fields(item: dict[str, Any], names: list[str]) -> None:
    same_as_oracle(item, names)


def test_our_own_stored_texts_take_the_fast_paths() -> None:
    """The common item is answered without the canonical values: the fields render as
    their stored texts, the same objects."""
    key = str(uuid.uuid4())
    when = "2024-03-01T12:00:00.500000Z"
    item = {"id": {"S": key}, "created_at": {"S": when}, "roles": {"SS": ["b", "a", "b"]}}
    got = DECODER.decode(item, ["id", "created_at", "roles", "first_name"])
    assert got == {"id": key, "created_at": when, "roles": ["a", "b"], "first_name": None}
    assert got["id"] is key and got["created_at"] is when


def test_drift_is_marked_as_the_record_marks_it() -> None:
    item = {
        "id": {"S": "not-a-uuid"},
        "is_active": {"S": "yes"},
        "created_at": {"S": "2024-13-01T00:00:00.000000Z"},
    }
    got = DECODER.decode(item, ["id", "is_active", "created_at"])
    assert all(isinstance(v, Drifted) for v in got.values())
    assert shape(got) == shape(oracle(item, ["id", "is_active", "created_at"]))


@pytest.mark.parametrize(
    ("name", "av"),
    [
        ("id", {"S": "2F1B7E1C-7A4E-4C1E-9A43-0D3C1F9B6A10"}),
        ("id", {"S": "{2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10}"}),
        ("id", {"S": "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10\n"}),
        ("id", {"S": "2f1b7e1c7a4e4c1e9a430d3c1f9b6a10"}),
        ("email", {"S": "caf\u00e9"}),
        ("email", {"S": "\ud800"}),
        ("email", {"S": "a\x00b"}),
        ("email", {"N": "1"}),
        ("created_at", {"S": "2024-01-01T00:00:00.000000Z\n"}),
        ("created_at", {"S": "2024-01-01T00:00:00.000000Z"}),
        ("created_at", {"S": "2024-01-01T00:00:00Z"}),
        ("created_at", {"S": "2024-02-30T00:00:00.000000Z"}),
        ("created_at", {"S": "2024-01-01T24:00:00.000000Z"}),
        ("created_at", {"S": "0001-01-01T23:59:59.999999Z"}),
        ("created_at", {"S": "9999-12-31T00:00:00.000000Z"}),
        ("created_at", {"S": "2024-01-01T01:00:00.000000+01:00"}),
        ("login_count", {"N": "9223372036854775807"}),
        ("login_count", {"N": "9223372036854775808"}),
        ("login_count", {"N": "-9223372036854775809"}),
        ("login_count", {"N": "999999999999999999"}),
        ("login_count", {"N": "0007"}),
        ("login_count", {"N": "-0"}),
        ("login_count", {"N": "1.0"}),
        ("login_count", {"N": "1.5"}),
        ("login_count", {"S": "7"}),
        ("is_active", {"BOOL": 1}),
        ("is_active", {"BOOL": "true"}),
        ("is_active", {"NULL": True}),
        ("roles", {"SS": ["b", "a", "b"]}),
        ("roles", {"SS": ["\ud800"]}),
        ("roles", {"SS": ["a\x00"]}),
        ("roles", {"SS": []}),
        ("roles", {"L": [{"S": "a"}]}),
        ("roles", {"NS": ["1"]}),
    ],
)
def test_each_near_miss_of_a_fast_path_is_answered_as_the_record_renders(
    name: str, av: dict[str, Any]
) -> None:
    same_as_oracle({name: av}, [name])
