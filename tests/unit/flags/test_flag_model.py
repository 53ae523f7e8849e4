"""The flag model: names, coercion, validation (every unsafe flip refused), the document."""

from __future__ import annotations

import math
from typing import Any

import pytest

from proxy.flags.model import (
    FlagSnapshot,
    FlagState,
    InvalidFlagValue,
    ResourceFlagState,
    RouteFlagState,
    UnknownFlag,
    UnsafeFlip,
    apply,
    changed_flags,
    coerce,
    parse_assignment,
    parse_name,
    snapshot_from_doc,
    snapshot_to_doc,
    validate,
)

STORES = {"postgres", "dynamodb"}
BACKENDS = {"legacy", "candidate"}


def check_resource(state: FlagState, new_store: str | None = "dynamodb") -> None:
    validate("resource", state, stores=STORES, new_store=new_store, backends=(), target="users")


def check_route(state: FlagState) -> None:
    validate("route", state, stores=(), new_store=None, backends=BACKENDS, target="users-get")


# --- names ---------------------------------------------------------------------------------


def test_parse_name_splits_on_the_last_dot() -> None:
    assert parse_name("users.read_from") == ("users", "read_from")
    assert parse_name("api.v2.users-get.sample") == ("api.v2.users-get", "sample")


@pytest.mark.parametrize("name", ["read_from", "users.", ".read_from", "users.colour"])
def test_parse_name_refuses(name: str) -> None:
    with pytest.raises(UnknownFlag):
        parse_name(name)


def test_parse_assignment_forms() -> None:
    a = parse_assignment("users", "read_from=dynamodb")
    assert (a.target, a.flag, a.raw_value) == ("users", "read_from", "dynamodb")
    b = parse_assignment(None, "users.write_to = postgres, dynamodb")
    assert (b.target, b.flag, b.raw_value) == ("users", "write_to", "postgres, dynamodb")
    c = parse_assignment("users", "users.shadow_reads=0.5")
    assert (c.target, c.flag, c.raw_value) == ("users", "shadow_reads", "0.5")
    with pytest.raises(InvalidFlagValue, match="expected <flag>=<value>"):
        parse_assignment("users", "read_from")
    with pytest.raises(UnknownFlag, match="unknown flag 'colour'"):
        parse_assignment("users", "colour=red")


# --- coercion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres,dynamodb", ("postgres", "dynamodb")),
        (" postgres , dynamodb ,", ("postgres", "dynamodb")),
        ("[postgres, 'dynamodb']", ("postgres", "dynamodb")),
        (["dynamodb", "postgres", "dynamodb"], ("dynamodb", "postgres")),
        ("", ()),
        ([], ()),
    ],
)
def test_write_to_coercion(raw: Any, expected: tuple[str, ...]) -> None:
    assert coerce("write_to", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("0.25", 0.25), (1, 1.0), (0.5, 0.5), ("25%", 0.25), (" 1 ", 1.0)]
)
def test_fraction_coercion(raw: Any, expected: float) -> None:
    assert coerce("shadow_reads", raw) == expected


@pytest.mark.parametrize("raw", ["half", True, None, [0.5], ""])
def test_fraction_coercion_refuses(raw: Any) -> None:
    with pytest.raises(InvalidFlagValue, match="expected a number between 0 and 1"):
        coerce("sample", raw)


@pytest.mark.parametrize("raw", ["", None, 3, "a,b", "two words"])
def test_name_coercion_refuses(raw: Any) -> None:
    with pytest.raises(InvalidFlagValue):
        coerce("read_from", raw)


@pytest.mark.parametrize("raw", [None, "", "none", "NULL", "off"])
def test_shadow_off(raw: Any) -> None:
    assert coerce("shadow", raw) is None


def test_apply_returns_the_new_state_only(snapshot: FlagSnapshot) -> None:
    state = apply(snapshot, "users", "new_store_read_fraction", "10%")
    assert state == ResourceFlagState("postgres", ("postgres", "dynamodb"), 1.0, 0.1)
    assert snapshot.resources["users"].new_store_read_fraction == 0.0
    route = apply(snapshot, "users-get", "shadow", "none")
    assert route == RouteFlagState("legacy", None, 1.0)


def test_apply_unknown_target_or_flag(snapshot: FlagSnapshot) -> None:
    with pytest.raises(UnknownFlag, match=r"unknown resource 'orders'.*known resources: users"):
        apply(snapshot, "orders", "read_from", "postgres")
    with pytest.raises(UnknownFlag, match="unknown route 'users'"):
        apply(snapshot, "users", "sample", "0.5")  # users is a resource, sample a route flag
    with pytest.raises(UnknownFlag, match="unknown flag"):
        apply(snapshot, "users", "colour", "red")


# --- validation ----------------------------------------------------------------------------


def test_the_config_state_and_safe_flips_pass(snapshot: FlagSnapshot) -> None:
    check_resource(snapshot.resources["users"])
    check_resource(apply(snapshot, "users", "read_from", "dynamodb"))
    check_resource(apply(snapshot, "users", "new_store_read_fraction", "1"))
    flipped = snapshot.with_target("users", apply(snapshot, "users", "read_from", "dynamodb"))
    check_resource(apply(flipped, "users", "write_to", "dynamodb"))  # stop writing the old one
    check_route(snapshot.routes["users-get"])
    check_route(apply(snapshot, "users-get", "shadow", "none"))


UNSAFE_RESOURCE = [
    (
        "read_from",
        "dynamo",
        r"users: unknown store 'dynamo' \(declared stores: dynamodb, postgres\)",
    ),
    ("write_to", "", "users: write_to is empty: at least one store must receive writes"),
    (
        "write_to",
        "dynamodb",  # removes the read_from store
        r"users: read_from = 'postgres' is not in write_to = \['dynamodb'\]: reading from a "
        "store that no longer receives writes serves stale data",
    ),
    ("write_to", "postgres,mysql", "users: unknown store 'mysql'"),
    ("shadow_reads", "1.5", "users: shadow_reads = 1.5: must be a fraction between 0 and 1"),
    ("shadow_reads", "-0.1", "users: shadow_reads = -0.1: must be a fraction between 0 and 1"),
    ("shadow_reads", "nan", "users: shadow_reads = nan: must be a fraction between 0 and 1"),
    ("new_store_read_fraction", "inf", "new_store_read_fraction = inf: must be a fraction"),
    ("new_store_read_fraction", "101%", "new_store_read_fraction = 1.01: must be a fraction"),
]


@pytest.mark.parametrize(("flag", "raw", "message"), UNSAFE_RESOURCE)
def test_unsafe_resource_flips_are_refused(
    snapshot: FlagSnapshot, flag: str, raw: str, message: str
) -> None:
    state = apply(snapshot, "users", flag, raw)
    with pytest.raises(UnsafeFlip, match=message):
        check_resource(state)


def test_reading_from_a_store_that_gets_no_writes() -> None:
    # A state where read_from left write_to (e.g. built by hand), not through write_to.
    state = ResourceFlagState("dynamodb", ("postgres",), 1.0)
    with pytest.raises(UnsafeFlip, match="read_from = 'dynamodb' is not in write_to"):
        check_resource(state)


def test_new_store_fraction_needs_the_new_store_in_write_to() -> None:
    state = ResourceFlagState("postgres", ("postgres",), 1.0, 0.2)
    with pytest.raises(
        UnsafeFlip,
        match="new_store_read_fraction = 0.2 reads from the new store 'dynamodb', which is "
        r"not in write_to = \['postgres'\]",
    ):
        check_resource(state)
    with pytest.raises(UnsafeFlip, match="the resource has no new store"):
        check_resource(ResourceFlagState("postgres", ("postgres",), 1.0, 0.2), new_store=None)
    check_resource(ResourceFlagState("postgres", ("postgres",), 1.0, 0.0), new_store=None)


UNSAFE_ROUTE = [
    ("primary", "candidate", "users-get: shadow = primary = 'candidate': a backend cannot shadow"),
    (
        "primary",
        "nope",
        r"users-get: primary = 'nope': unknown backend \(known: candidate, legacy\)",
    ),
    ("shadow", "legacy", "shadow = primary = 'legacy'"),
    ("shadow", "nope", "users-get: shadow = 'nope': unknown backend"),
    ("sample", "2", "users-get: sample = 2.0: must be a fraction between 0 and 1"),
    ("sample", "NaN", "sample = nan: must be a fraction"),
]


@pytest.mark.parametrize(("flag", "raw", "message"), UNSAFE_ROUTE)
def test_unsafe_route_flips_are_refused(
    snapshot: FlagSnapshot, flag: str, raw: str, message: str
) -> None:
    with pytest.raises(UnsafeFlip, match=message):
        check_route(apply(snapshot, "users-get", flag, raw))


def test_unsafe_flip_is_a_value_error() -> None:
    assert issubclass(UnsafeFlip, ValueError)


def test_validate_refuses_the_wrong_kind(snapshot: FlagSnapshot) -> None:
    with pytest.raises(UnsafeFlip, match="expected route flags"):
        validate("route", snapshot.resources["users"], stores=(), new_store=None, backends=())


# --- snapshot helpers and the document -------------------------------------------------------


def test_snapshot_is_read_only(snapshot: FlagSnapshot) -> None:
    with pytest.raises(TypeError):
        snapshot.resources["orders"] = snapshot.resources["users"]  # type: ignore[index]


def test_flat_and_value(snapshot: FlagSnapshot) -> None:
    assert snapshot.flat() == {
        "users.read_from": "postgres",
        "users.write_to": ["postgres", "dynamodb"],
        "users.shadow_reads": 1.0,
        "users.new_store_read_fraction": 0.0,
        "users-get.primary": "legacy",
        "users-get.shadow": "candidate",
        "users-get.sample": 1.0,
    }
    assert snapshot.value("users", "write_to") == ["postgres", "dynamodb"]


def test_document_round_trip(snapshot: FlagSnapshot) -> None:
    doc = snapshot_to_doc(snapshot)
    assert snapshot_from_doc(7, doc) == FlagSnapshot(7, snapshot.resources, snapshot.routes)
    del doc["resources"]["users"]["new_store_read_fraction"]  # an older writer's document
    assert snapshot_from_doc(7, doc).resources["users"].new_store_read_fraction == 0.0
    with pytest.raises(InvalidFlagValue, match="malformed flag document"):
        snapshot_from_doc(1, {"resources": {"users": {"read_from": "postgres"}}})


def test_changed_flags(snapshot: FlagSnapshot) -> None:
    new = snapshot.with_target("users", apply(snapshot, "users", "read_from", "dynamodb"))
    assert changed_flags(snapshot, new) == [("users", "read_from", "postgres", "dynamodb")]
    assert changed_flags(snapshot, snapshot) == []
    assert math.isclose(new.resources["users"].shadow_reads, 1.0)
