"""Type drift as a comparison sees it: a value stored in another type than declared is a
difference whatever its raw value looks like, while the client keeps getting the raw value."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from comparators import Outcome, RuleSpec, compare, compile_rules
from comparators.markers import Drifted
from proxy.store.codec_dynamodb import decode_item, decode_value
from proxy.store.fieldtypes import Malformed
from proxy.store.schema import Schema, json_bytes

ID = "2f1b7e1c-7a4e-4c1e-9a43-0d3c1f9b6a10"
# As build_parts compiles a resource's rules: set fields are unordered.
RULES = compile_rules(RuleSpec(unordered=("roles", "lucky")))


def outcome(schema: Schema, primary: dict[str, Any], shadow: dict[str, Any]) -> Any:
    fields = ["id", *primary]
    a = schema.to_json({"id": uuid.UUID(ID), **primary}, fields=fields, drift=True)
    b = schema.to_json({"id": uuid.UUID(ID), **shadow}, fields=fields, drift=True)
    found = compare(a, b, RULES)
    return found.outcome, [(d.path, d.kind) for d in found.differences]


def dynamo(schema: Schema, name: str, av: dict[str, Any]) -> Any:
    return decode_value(schema.fields[name], av)


@pytest.mark.parametrize(
    "stored",
    [
        {"L": [{"S": "user"}]},
        {"L": [{"S": "admin"}, {"S": "user"}]},
        {"L": [{"S": "user"}, {"S": "admin"}]},
    ],
    ids=["one-element", "sorted", "reversed"],
)
def test_a_set_stored_as_a_list_is_type_drift_whatever_the_order(
    schema: Schema, stored: dict[str, Any]
) -> None:
    declared = frozenset(item["S"] for item in stored["L"])
    drifted = dynamo(schema, "roles", stored)
    assert isinstance(drifted, Malformed)
    expected = (Outcome.MISMATCH, [("roles", "type_changed")])
    assert outcome(schema, {"roles": declared}, {"roles": drifted}) == expected
    assert outcome(schema, {"roles": drifted}, {"roles": declared}) == expected


def test_equal_typed_sets_match_in_any_order(schema: Schema) -> None:
    for texts in (["admin", "user"], ["user", "admin"]):
        stored = dynamo(schema, "roles", {"SS": texts})
        assert outcome(schema, {"roles": frozenset({"admin", "user"})}, {"roles": stored}) == (
            Outcome.MATCH,
            [],
        )


def test_a_set_element_on_one_side_is_named(schema: Schema) -> None:
    a = schema.to_json({"id": uuid.UUID(ID), "lucky": frozenset({1, 7})}, fields=["lucky"])
    b = schema.to_json({"id": uuid.UUID(ID), "lucky": frozenset({7})}, fields=["lucky"])
    found = compare(a, b, RULES)
    assert [(d.path, d.kind, d.primary, d.shadow) for d in found.differences] == [
        ("lucky[]", "removed", 1, None)
    ]


@pytest.mark.parametrize(
    ("name", "declared", "stored"),
    [
        # Rendered, the declared value and the stored one look the same: only the type says.
        ("balance", Decimal("10.5"), {"S": "10.5"}),
        ("tags", ["a"], {"SS": ["a"]}),
        ("login_count", 42, {"S": "42"}),
    ],
)
def test_drift_shows_even_where_the_rendering_matches(
    schema: Schema, name: str, declared: Any, stored: dict[str, Any]
) -> None:
    drifted = dynamo(schema, name, stored)
    assert isinstance(drifted, Malformed)
    assert outcome(schema, {name: declared}, {name: drifted}) == (
        Outcome.MISMATCH,
        [(name, "type_changed")],
    )


def test_the_client_gets_the_raw_value(schema: Schema) -> None:
    item = {"id": {"S": ID}, "roles": {"L": [{"S": "user"}, {"S": "admin"}]}}
    record = decode_item(schema, item, ["id", "roles"])
    client = schema.to_json(record, fields=["id", "roles"])
    assert client == {"id": ID, "roles": ["user", "admin"]}
    compared = schema.to_json(record, fields=["id", "roles"], drift=True)
    assert compared["roles"] == Drifted(["user", "admin"])
    assert compared["roles"].reason == "expected SS"
    assert schema.dumps(record, fields=["id", "roles"]) == json_bytes(client)
    with pytest.raises(TypeError):  # a rendering for comparison is never sent
        json_bytes(compared)


def test_with_drift_marks_a_client_rendering(schema: Schema) -> None:
    clean = {"id": uuid.UUID(ID), "login_count": 3}
    rendered = schema.to_json(clean, fields=["id", "login_count"])
    assert schema.with_drift(clean, rendered) is rendered
    assert schema.with_drift(None, None) is None
    record = {"id": uuid.UUID(ID), "login_count": Malformed("3", "expected N")}
    rendered = schema.to_json(record, fields=["id", "login_count"])
    assert rendered == {"id": ID, "login_count": "3"}
    marked = schema.with_drift(record, rendered)
    assert marked == schema.to_json(record, fields=["id", "login_count"], drift=True)
    assert marked == {"id": ID, "login_count": Drifted("3")}
    assert rendered == {"id": ID, "login_count": "3"}  # not changed in place
    projected = schema.to_json(record, fields=["id"])
    assert schema.with_drift(record, projected) is projected
