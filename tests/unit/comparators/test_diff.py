from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import pytest

from comparators.comparison import compare
from comparators.diff import MAX_PAIRINGS, diff
from comparators.markers import Drifted
from comparators.model import Difference, Outcome
from comparators.rules import RuleSpec, compile_rules


def differences(a: Any, b: Any, *, prefix: str = "", **spec: Any) -> list[tuple[str, str]]:
    rules = compile_rules(RuleSpec(**spec))
    found = diff(rules.normalise(a), rules.normalise(b), rules, prefix=prefix)
    return [(d.path, d.kind) for d in found.differences]


def found(a: Any, b: Any, **spec: Any) -> list[tuple[str, str, Any, Any]]:
    rules = compile_rules(RuleSpec(**spec))
    result = diff(rules.normalise(a), rules.normalise(b), rules)
    return [(d.path, d.kind, d.primary, d.shadow) for d in result.differences]


def test_equal_values_have_no_differences() -> None:
    value = {"a": [1, {"b": None, "c": True}], "d": "x", "e": 1.5}
    assert differences(value, {"a": [1, {"b": None, "c": True}], "d": "x", "e": 1.5}) == []


def test_kinds_and_paths() -> None:
    a = {"same": 1, "changed": "a", "removed": 1, "nested": {"x": [1, 2, 3]}, "t": 1}
    b = {"same": 1, "changed": "b", "added": 2, "nested": {"x": [1, 5]}, "t": "1"}
    assert differences(a, b) == [
        ("changed", "changed"),
        ("removed", "removed"),
        ("nested.x[1]", "changed"),
        ("nested.x[2]", "removed"),
        ("t", "type_changed"),
        ("added", "added"),
    ]


def test_values_are_reported_plainly() -> None:
    rules = compile_rules(RuleSpec(keyed={"items": "id"}))
    found = diff(
        rules.normalise({"items": [{"id": 1, "v": 1}]}),
        rules.normalise({"items": [{"id": 2, "v": 1}], "extra": [1]}),
        rules,
        prefix="body",
    )
    assert found.differences == (
        Difference("body.items[id=1]", "removed", {"id": 1, "v": 1}, None),
        Difference("body.items[id=2]", "added", None, {"id": 2, "v": 1}),
        Difference("body.extra", "added", None, [1]),
    )


def test_root_paths() -> None:
    assert differences(1, 2) == [("$", "changed")]
    assert differences(1, 2, prefix="body") == [("body", "changed")]
    assert differences([1], [1, 2]) == [("[1]", "added")]


def test_list_growth_is_added_at_the_end() -> None:
    assert differences([1], [1, 2, 3]) == [("[1]", "added"), ("[2]", "added")]
    assert differences((1, 2), [1]) == [("[1]", "removed")]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (False, 0),
        (1, "1"),
        (None, 0),
        ({"a": 1}, [1]),
        (True, 1.0),
        (Decimal(1), True),
        ("x", datetime(2024, 1, 1)),
    ],
)
def test_type_changes(a: Any, b: Any) -> None:
    assert differences({"k": a}, {"k": b}) == [("k", "type_changed")]
    assert differences([a], [b]) == [("[0]", "type_changed")]


def test_bools_nested_in_containers_are_not_numbers() -> None:
    assert differences({"a": {"b": [True]}}, {"a": {"b": [1]}}) == [("a.b[0]", "type_changed")]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (Decimal("0.1"), 0.1),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00Z"),
        (datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC)),
        (date(2024, 1, 1), "2024-01-01"),
        (UUID(int=5), "00000000-0000-0000-0000-000000000005"),
        ({1, 2}, [2, 1]),
        ([2, 1], frozenset({1, 2})),
        (float("nan"), None),
    ],
)
def test_representations_that_are_equal(a: Any, b: Any) -> None:
    assert differences({"k": a}, {"k": b}) == []
    assert differences({"k": b}, {"k": a}) == []


def test_other_types_compare_by_canonical_bytes() -> None:
    class Colour(Enum):
        RED = "red"
        BLUE = "blue"

    assert differences({"c": Colour.RED}, {"c": Colour.RED}) == []
    assert differences({"c": UUID(int=1)}, {"c": UUID(int=2)}) == [("c", "changed")]
    assert differences({"d": date(2024, 1, 1)}, {"d": date(2024, 1, 2)}) == [("d", "changed")]


def test_subclasses_are_classified() -> None:
    class Flag(int):
        pass

    class Text(str):
        pass

    class Mapping(dict[str, Any]):
        pass

    class Items(list[Any]):
        pass

    class Moment(datetime):
        pass

    assert differences({"a": Flag(1)}, {"a": 2}) == [("a", "changed")]
    assert differences({"a": Text("x")}, {"a": "y"}) == [("a", "changed")]
    assert differences(Mapping(a=1), {"a": 2}) == [("a", "changed")]
    assert differences(Items([1]), [2]) == [("[0]", "changed")]
    moment = Moment(2024, 1, 1, tzinfo=UTC)
    assert differences({"a": moment}, {"a": datetime(2024, 1, 2, tzinfo=UTC)}) == [("a", "changed")]


def test_non_string_keys_render_as_strings() -> None:
    assert differences({1: "a"}, {1: "b"}) == [("1", "changed")]
    assert differences({1: "a"}, {2: "a"}) == [("1", "removed"), ("2", "added")]


def test_numeric_tolerance_global_and_per_path() -> None:
    a = {"price": 10.0, "qty": 1, "rate": 0.5}
    b = {"price": 10.004, "qty": 2, "rate": 0.51}
    assert differences(a, b, numeric_tolerance=0.005) == [("qty", "changed"), ("rate", "changed")]
    assert differences(a, b, numeric_tolerances={"price": 0.01, "rate": 0.01}) == [
        ("qty", "changed")
    ]
    assert differences(a, b, numeric_tolerance=5, numeric_tolerances={"*": 0}) == [
        ("price", "changed"),
        ("qty", "changed"),
        ("rate", "changed"),
    ]


def test_timestamp_strings_need_a_tolerance() -> None:
    a = {"at": "2024-01-01T00:00:00Z", "name": "x"}
    b = {"at": "2024-01-01T00:00:00.900+00:00", "name": "y"}
    assert differences(a, b) == [("at", "changed"), ("name", "changed")]
    assert differences(a, b, timestamp_tolerance_seconds=1) == [("name", "changed")]
    assert differences(a, b, timestamp_tolerance_seconds=0.5) == [
        ("at", "changed"),
        ("name", "changed"),
    ]
    assert differences(a, b, timestamp_tolerances={"at": 1}) == [("name", "changed")]
    same_instant = {"at": "2024-01-01T02:00:00+02:00"}
    assert differences(a | same_instant, a, timestamp_tolerances={"at": 0}) == []


def test_datetimes_are_instants() -> None:
    one = datetime(2024, 1, 1, tzinfo=UTC)
    two = datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert differences({"at": one}, {"at": two}) == [("at", "changed")]
    assert differences({"at": one}, {"at": two}, timestamp_tolerance_seconds=2) == []
    text = "2024-01-01T00:00:03Z"
    assert differences({"at": one}, {"at": text}) == [("at", "changed")]
    assert differences({"at": text}, {"at": one}, timestamp_tolerances={"at": 3}) == []
    assert differences({"at": one}, {"at": "soon"}) == [("at", "type_changed")]


def test_unordered_lists_are_multisets() -> None:
    spec: dict[str, Any] = {"unordered": ("tags",)}
    assert differences({"tags": ["a", "b", "a"]}, {"tags": ["b", "a", "a"]}, **spec) == []
    # An element on one side only is named by its value, at ``tags[]``, not by a position in
    # the sorted multiset; duplicates count.
    assert found({"tags": ["a", "b", "a"]}, {"tags": ["b", "a", "c"]}, **spec) == [
        ("tags[]", "removed", "a", None),
        ("tags[]", "added", None, "c"),
    ]
    assert found({"tags": ["a", "a", "a"]}, {"tags": ["a"]}, **spec) == [
        ("tags[]", "removed", "a", None),
        ("tags[]", "removed", "a", None),
    ]


def test_unordered_pairs_leftovers_under_tolerance() -> None:
    spec: dict[str, Any] = {"unordered": ("v",), "numeric_tolerance": 0.1}
    assert differences({"v": [1.0, 1.1]}, {"v": [1.1, 1.2]}, **spec) == []
    assert found({"v": [1.0, 1.05]}, {"v": [1.1, 1.5]}, **spec) == [
        ("v[]", "removed", 1.05, None),
        ("v[]", "added", None, 1.5),
    ]
    assert differences({"v": [1, 2.0]}, {"v": [2, 1.0]}, unordered=("v",)) == []


def test_unordered_pairing_finds_a_maximum_matching() -> None:
    spec: dict[str, Any] = {"unordered": ("v",), "numeric_tolerance": 1}
    # greedy would pair 1 with 2 and leave 3 alone; a maximum matching pairs 1-0 and 3-2
    assert differences({"v": [1, 3]}, {"v": [0, 2]}, **spec) == []
    objects: dict[str, Any] = {"unordered": ("v",), "numeric_tolerance": 0.5}
    a = {"v": [{"x": 1.0, "k": [1]}, {"x": 2.0, "k": [2]}]}
    b = {"v": [{"x": 2.4, "k": [2]}, {"x": 1.4, "k": [1]}]}
    assert differences(a, b, **objects) == []


def test_unordered_pairing_is_bounded() -> None:
    spec: dict[str, Any] = {"unordered": ("v",), "numeric_tolerance": 0.5, "max_differences": 500}
    n = int(MAX_PAIRINGS**0.5) + 1
    a = {"v": [i + 0.5 for i in range(n)]}
    b = {"v": [i + 0.75 for i in range(n)]}
    assert len(differences(a, b, **spec)) == 2 * n
    assert differences({"v": a["v"][:10]}, {"v": b["v"][:10]}, **spec) == []
    # too long to re-route exact matches, short enough to pair the leftovers
    shared = list(range(100, 100 + n))
    assert differences({"v": [*shared, 1.0]}, {"v": [*shared, 1.25]}, **spec) == []
    # leftovers pair among themselves only: the exact 2 - 2 stays, 1.75 and 2.25 are left
    spec["numeric_tolerance"] = 0.3
    left, right = [*shared, 1.75, 2], [*shared, 2, 2.25]
    assert found({"v": left}, {"v": right}, **spec) == [
        ("v[]", "removed", 1.75, None),
        ("v[]", "added", None, 2.25),
    ]


def test_sets_are_multisets_without_rules() -> None:
    assert found({"s": {1, 2}}, {"s": {2, 3}}) == [
        ("s[]", "removed", 1, None),
        ("s[]", "added", None, 3),
    ]


def test_keyed_lists_match_by_key() -> None:
    spec: dict[str, Any] = {"keyed": {"items": "id"}}
    a = {"items": [{"id": 1, "n": "a"}, {"id": "x", "n": "b"}, {"id": 3, "n": "c"}]}
    b = {"items": [{"id": "x", "n": "B"}, {"id": 1, "n": "a"}, {"id": 4, "n": "d"}]}
    assert differences(a, b, **spec) == [
        ('items[id="x"].n', "changed"),
        ("items[id=3]", "removed"),
        ("items[id=4]", "added"),
    ]


def test_keyed_elements_get_item_tolerances() -> None:
    spec: dict[str, Any] = {"keyed": {"items": "id"}, "numeric_tolerances": {"items[*].p": 1}}
    a = {"items": [{"id": 1, "p": 1.0}]}
    assert differences(a, {"items": [{"id": 1, "p": 1.5}]}, **spec) == []


def test_list_indexes_get_index_tolerances() -> None:
    spec: dict[str, Any] = {"numeric_tolerances": {"l[1]": 1}}
    assert differences({"l": [1, 1]}, {"l": [1.5, 1.5]}, **spec) == [("l[0]", "changed")]


def test_total_counts_beyond_the_cap() -> None:
    rules = compile_rules(RuleSpec(max_differences=2))
    found = diff({"a": 1, "b": 2, "c": 3}, {"a": 0, "b": 0, "c": 0}, rules)
    assert [d.path for d in found.differences] == ["a", "b"]
    assert found.total == 3


def test_ignored_list_elements_keep_positions_and_lengths_do_not_matter() -> None:
    spec: dict[str, Any] = {"ignore": ("l[0]", "l[2]")}
    assert differences({"l": [1, 2, 3]}, {"l": [9, 2]}, **spec) == []
    assert differences({"l": [1, 2, 3]}, {"l": [9, 5]}, **spec) == [("l[1]", "changed")]
    assert differences({"l": [1, 2]}, {"l": [3, 4, 5]}, ignore=("l[*]",)) == []
    # in an unordered list an index means the position as received
    unordered: dict[str, Any] = {"ignore": ("u[0]",), "unordered": ("u",)}
    assert differences({"u": [3, 1]}, {"u": [5, 1]}, **unordered) == []
    assert found({"u": [3, 1]}, {"u": []}, **unordered) == [("u[]", "removed", 1, None)]


def test_roots_of_every_kind() -> None:
    rules = compile_rules(RuleSpec())
    assert diff(True, False, rules).total == 1
    assert diff(None, None, rules).total == 0
    assert diff("ab", "".join(["a", "b"]), rules).total == 0


def test_shared_keyed_elements_are_skipped() -> None:
    shared = {"id": 1, "v": [1]}
    assert differences({"k": [shared]}, {"k": [shared, {"id": 2}]}, keyed={"k": "id"}) == [
        ("k[id=2]", "added")
    ]


def test_set_subclasses_are_multisets() -> None:
    class Tags(frozenset[str]):
        pass

    assert differences({"t": Tags({"a"})}, {"t": Tags({"a", "b"})}) == [("t[]", "added")]


def test_a_value_on_one_side_only_is_removed_or_added_not_retyped() -> None:
    record = {"id": 1, "email": "a@example.com"}
    assert differences(record, None) == [("$", "removed")]
    assert differences(None, record) == [("$", "added")]
    assert differences([1], None, prefix="body") == [("body", "removed")]
    # Below the top, null against a value is a retyping of that field.
    assert differences({"a": None}, {"a": {"b": 1}}) == [("a", "type_changed")]


# --- type drift: a Drifted marker is a difference whatever its raw value looks like ----------


def test_a_drifted_value_is_type_changed_whatever_the_element_order() -> None:
    spec: dict[str, Any] = {"unordered": ("roles",)}
    one, two = {"roles": ["user"]}, {"roles": ["admin", "user"]}
    assert found(one, {"roles": Drifted(["user"], "expected SS")}, **spec) == [
        ("roles", "type_changed", ["user"], {"malformed": ["user"], "reason": "expected SS"})
    ]
    for raw in (["admin", "user"], ["user", "admin"]):
        assert differences(two, {"roles": Drifted(raw)}, **spec) == [("roles", "type_changed")]
        assert differences({"roles": Drifted(raw)}, two, **spec) == [("roles", "type_changed")]
    # Equal-typed sets match in any order; so do two stores drifted the same way.
    assert differences(two, {"roles": ["user", "admin"]}, **spec) == []
    assert differences({"roles": Drifted(["user"])}, {"roles": Drifted(["user"])}) == []
    assert found({"n": Drifted("1")}, {"n": Drifted("2")}) == [
        ("n", "changed", {"malformed": "1", "reason": ""}, {"malformed": "2", "reason": ""})
    ]


@pytest.mark.parametrize("raw", ["42", 42, None, True, {"S": "x"}, [], "10.5"])
def test_a_drifted_value_differs_from_its_raw_value(raw: Any) -> None:
    assert differences({"f": raw}, {"f": Drifted(raw)}) == [("f", "type_changed")]
    assert differences([raw], [Drifted(raw)]) == [("[0]", "type_changed")]
    assert compare({"f": raw}, {"f": Drifted(raw)}, compile_rules(RuleSpec())).outcome == (
        Outcome.MISMATCH
    )
