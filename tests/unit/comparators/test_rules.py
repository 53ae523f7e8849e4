from __future__ import annotations

from typing import Any

import pytest

from comparators.errors import ComparatorError, RuleError
from comparators.normalize import PruneIgnored, ReshapeLists
from comparators.rules import RuleSpec, compile_rules


def test_defaults() -> None:
    rules = compile_rules(RuleSpec())
    assert rules.normalisers == ()
    assert rules.tolerance_states == ()
    assert rules.numeric_tolerance == 0.0
    assert rules.timestamp_tolerance is None
    assert not rules.has_tolerances
    assert rules.compare_status
    assert rules.headers == ()
    assert rules.max_diff_bytes == 256 * 1024
    assert rules.max_differences == 100


def test_normalisers_are_compiled_in_order() -> None:
    rules = compile_rules(RuleSpec(ignore=("a",), unordered=("b",), keyed={"c": "id"}))
    assert [type(n) for n in rules.normalisers] == [PruneIgnored, ReshapeLists]


def test_lists_from_config_are_accepted() -> None:
    spec = RuleSpec(ignore=["a"], headers=["ETag", "etag"])  # type: ignore[arg-type]
    rules = compile_rules(spec)
    assert rules.headers == ("etag",)
    assert rules.spec is spec


@pytest.mark.parametrize(
    ("spec", "tolerances", "timestamp"),
    [
        (RuleSpec(numeric_tolerance=0.5), True, None),
        (RuleSpec(numeric_tolerance=1), True, None),
        (RuleSpec(timestamp_tolerance_seconds=2), True, 2.0),
        (RuleSpec(numeric_tolerances={"price": 0.01}), True, None),
        (RuleSpec(timestamp_tolerances={"at": 0}), True, None),
        (RuleSpec(ignore=("a",)), False, None),
    ],
)
def test_tolerances(spec: RuleSpec, tolerances: bool, timestamp: float | None) -> None:
    rules = compile_rules(spec)
    assert rules.has_tolerances is tolerances
    assert rules.timestamp_tolerance == timestamp


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RuleSpec(ignore=("a..b",)), "ignore: bad path pattern 'a..b'"),
        (RuleSpec(ignore=("ok", "x[y]")), "ignore: bad path pattern 'x[y]'"),
        (RuleSpec(unordered=("",)), "unordered: bad path pattern ''"),
        (RuleSpec(keyed={"a.": "id"}), "keyed: bad path pattern 'a.'"),
        (RuleSpec(keyed={"items": "a.b"}), "keyed: bad key field 'a.b' for pattern 'items'"),
        (RuleSpec(keyed={"items": 3}), "keyed: bad key field 3"),  # type: ignore[dict-item]
        (RuleSpec(unordered=("items",), keyed={"items": "id"}), "also listed as unordered"),
        (RuleSpec(numeric_tolerances={"p*": 1.0}), "numeric_tolerances: bad path pattern 'p*'"),
        (RuleSpec(timestamp_tolerances={"a": -1}), "timestamp_tolerances: expected a finite"),
        (RuleSpec(ignore="updated_at"), "ignore: expected a list of path patterns"),  # type: ignore[arg-type]
        (RuleSpec(ignore=None), "ignore: expected a list"),  # type: ignore[arg-type]
        (RuleSpec(keyed=["items"]), "keyed: expected a mapping"),  # type: ignore[arg-type]
        (RuleSpec(numeric_tolerance=-0.1), "numeric_tolerance: expected a finite number"),
        (RuleSpec(numeric_tolerance=float("nan")), "numeric_tolerance: expected a finite"),
        (RuleSpec(numeric_tolerance=True), "numeric_tolerance: expected a number"),
        (RuleSpec(numeric_tolerance="1"), "numeric_tolerance: expected a number"),  # type: ignore[arg-type]
        (RuleSpec(timestamp_tolerance_seconds=float("inf")), "timestamp_tolerance_seconds"),
        (RuleSpec(max_diff_bytes=0), "max_diff_bytes: expected an integer >= 1"),
        (RuleSpec(max_diff_bytes=1.5), "max_diff_bytes"),  # type: ignore[arg-type]
        (RuleSpec(max_differences=True), "max_differences"),
        (RuleSpec(compare_status="yes"), "compare_status: expected true or false"),  # type: ignore[arg-type]
        (RuleSpec(headers=("content type",)), "headers: bad header name 'content type'"),
        (RuleSpec(headers=("",)), "headers: bad header name ''"),
        (RuleSpec(headers=(1,)), "headers: bad header name 1"),  # type: ignore[arg-type]
        (RuleSpec(headers="etag"), "headers: expected a list of header names"),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_raise_rule_error_naming_the_setting(spec: RuleSpec, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rules(spec)
    assert message in str(caught.value)


def test_rule_error_is_a_value_error_with_the_pattern_error_chained() -> None:
    with pytest.raises(ValueError) as caught:
        compile_rules(RuleSpec(ignore=("a..b",)))
    assert isinstance(caught.value, ComparatorError)
    assert isinstance(caught.value.__cause__, RuleError)


def test_not_a_spec() -> None:
    bad: Any = {"ignore": ["a"]}
    with pytest.raises(RuleError, match="expected a RuleSpec, got dict"):
        compile_rules(bad)


def test_rules_are_frozen() -> None:
    rules = compile_rules(RuleSpec())
    with pytest.raises(AttributeError):
        rules.max_differences = 3  # type: ignore[misc]
