from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from comparators import (
    UNJUDGED,
    Comparison,
    DiffBudget,
    Difference,
    Outcome,
    RuleSpec,
    compare,
    compile_rules,
)
from comparators.comparison import MATCH

PRIMARY = {"id": 1, "email": "a@example.com", "items": [{"id": 1, "n": "a"}], "at": "x"}


def rules(**spec: Any) -> Any:
    return compile_rules(RuleSpec(**spec))


def empty_budget() -> DiffBudget:
    return DiffBudget(per_second=0, burst=0)


def test_equal_values_match() -> None:
    assert compare(PRIMARY, dict(PRIMARY), rules()) == Comparison(Outcome.MATCH)


def test_fast_path_does_not_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the differ ran")

    monkeypatch.setattr("comparators.comparison.diff", boom)
    reordered = dict(reversed(list(PRIMARY.items())))
    assert compare(PRIMARY, reordered, rules()).outcome is Outcome.MATCH
    ignored = {**PRIMARY, "at": "y"}
    assert compare(PRIMARY, ignored, rules(ignore=("at",))).outcome is Outcome.MATCH


def test_equal_values_match_before_any_normaliser_runs() -> None:
    """Equal bytes are equal values: the rules' normalisers need not see them."""
    seen: list[object] = []

    def watched(value: object) -> object:
        seen.append(value)
        return value

    ruled = rules(ignore=("at",), unordered=("items",))
    object.__setattr__(ruled, "normalisers", (*ruled.normalisers, watched))
    reordered = dict(reversed(list(PRIMARY.items())))
    assert compare(PRIMARY, reordered, ruled) is MATCH
    assert seen == []
    differing = {**PRIMARY, "email": "b@example.com"}
    assert compare(PRIMARY, differing, ruled).outcome is Outcome.MISMATCH
    assert len(seen) == 2  # both sides normalised once the bytes differ


def test_store_types_meet_json() -> None:
    record = {
        "id": UUID(int=7),
        "balance": Decimal("10.50"),
        "at": datetime(2024, 1, 1, tzinfo=UTC),
        "tags": {"b", "a"},
    }
    json_like = {
        "id": "00000000-0000-0000-0000-000000000007",
        "balance": 10.5,
        "at": "2024-01-01T00:00:00+00:00",
        "tags": ["a", "b"],
    }
    assert compare(record, json_like, rules()).outcome is Outcome.MATCH


def test_equal_after_walk_matches() -> None:
    assert compare({"a": 1}, {"a": 1.0}, rules()).outcome is Outcome.MATCH
    assert compare({"p": 1.0}, {"p": 1.001}, rules(numeric_tolerance=0.01)).outcome is (
        Outcome.MATCH
    )


def test_mismatch_lists_differences_without_prefix() -> None:
    shadow = {**PRIMARY, "email": "b@example.com"}
    result = compare(PRIMARY, shadow, rules())
    assert result == Comparison(
        Outcome.MISMATCH, (Difference("email", "changed", "a@example.com", "b@example.com"),)
    )
    assert result.fields == ("email",)


def test_fields_collapse_indexes() -> None:
    result = compare({"l": [1, 2, 3]}, {"l": [0, 0, 0]}, rules())
    assert result.fields == ("l[]",)


def test_differences_are_capped_with_a_note() -> None:
    result = compare(list(range(10)), list(range(1, 11)), rules(max_differences=3))
    assert len(result.differences) == 3
    assert result.detail == "7 more differences not shown (max_differences=3)"


def test_over_size_cap_is_summarised_by_top_level_key() -> None:
    primary = {"same": "x" * 100, "big": "a" * 100, "gone": 1, "n": 1}
    shadow = {"same": "x" * 100, "big": "b" * 100, "new": 2, "n": 1}
    result = compare(primary, shadow, rules(max_diff_bytes=50))
    assert result.outcome is Outcome.MISMATCH
    assert result.summarised
    assert [(d.path, d.kind, d.primary, d.shadow) for d in result.differences] == [
        ("big", "summarised", None, None),
        ("gone", "summarised", None, None),
        ("new", "summarised", None, None),
    ]
    assert result.detail.startswith("structured diff skipped:")
    assert "> max_diff_bytes 50" in result.detail


def test_summarised_non_dicts_report_the_root() -> None:
    result = compare([1, 2], [1, 3], rules(max_diff_bytes=1))
    assert result.differences == (Difference("$", "summarised"),)
    odd = compare({1: "a"}, {"1": "b"}, rules(max_diff_bytes=1))
    assert [d.path for d in odd.differences] == ["1", "1"]


def test_summarised_compares_values_cheaply_and_exactly() -> None:
    primary = {"s": "a", "f": 1.0, "d": {"x": 1}, "t": True}
    shadow = {"s": "a", "f": 1.0, "d": {"x": 2}, "t": 1}
    result = compare(primary, shadow, rules(max_diff_bytes=1))
    assert [d.path for d in result.differences] == ["d", "t"]


def test_exhausted_budget_summarises_and_counts() -> None:
    budget = empty_budget()
    result = compare({"a": 1}, {"a": 2}, rules(), budget=budget)
    assert result.summarised
    assert result.detail == "structured diff skipped: diff budget exhausted"
    assert (budget.walked_total, budget.summarised_total) == (0, 1)
    assert compare({"a": 1}, {"a": 1}, rules(), budget=budget).outcome is Outcome.MATCH
    assert budget.summarised_total == 1


def test_size_cap_summaries_are_counted_too() -> None:
    budget = DiffBudget(per_second=1, burst=1)
    compare({"a": "x" * 10}, {"a": "y" * 10}, rules(max_diff_bytes=5), budget=budget)
    assert (budget.walked_total, budget.summarised_total) == (0, 1)


def test_budget_with_tokens_walks_and_counts() -> None:
    budget = DiffBudget(per_second=0, burst=1)
    result = compare({"a": 1}, {"a": 2}, rules(), budget=budget)
    assert not result.summarised
    assert budget.walked_total == 1
    # no token left: 1 vs 1.0 is only summarised, the documented false mismatch
    assert compare({"a": 1}, {"a": 1.0}, rules(), budget=budget).summarised


def test_tolerances_walk_small_values_without_tokens() -> None:
    budget = empty_budget()
    tolerant = rules(numeric_tolerance=0.1)
    assert compare({"a": 1.0}, {"a": 1.05}, tolerant, budget=budget).outcome is Outcome.MATCH
    assert budget.summarised_total == 0
    assert budget.walked_total == 1
    big = DiffBudget(per_second=0, burst=0, tolerance_walk_bytes=4)
    result = compare({"a": 1.0}, {"a": 1.05}, tolerant, budget=big)
    assert result.summarised


def test_too_deep_to_walk_is_summarised(monkeypatch: pytest.MonkeyPatch) -> None:
    def deep(*args: object, **kwargs: object) -> None:
        raise RecursionError

    monkeypatch.setattr("comparators.comparison.diff", deep)
    budget = DiffBudget(per_second=1, burst=1)
    result = compare({"a": 1}, {"a": 2}, rules(), budget=budget)
    assert result.summarised
    assert result.detail == "structured diff skipped: value nested too deeply"
    assert budget.summarised_total == 1


def test_really_deep_values_do_not_raise() -> None:
    primary: list[Any] = []
    shadow: list[Any] = []
    for holder in (primary, shadow):
        cursor = holder
        for _ in range(5000):
            cursor.append([])
            cursor = cursor[0]
        cursor.append(1)
    shadow_leaf = shadow
    while shadow_leaf[0] != 1:
        shadow_leaf = shadow_leaf[0]
    shadow_leaf[0] = 2
    result = compare(primary, shadow, rules())
    assert result.outcome is Outcome.MISMATCH
    assert result.summarised


def test_set_element_differences_are_one_bounded_field() -> None:
    """Elements on one side only are named by value, and the field label stays ``tags[]``
    however many distinct elements differ (element values never become label values)."""
    primary = {"tags": [f"a{i}" for i in range(50)]}
    shadow = {"tags": [f"b{i}" for i in range(50)]}
    result = compare(primary, shadow, rules(unordered=("tags",), max_differences=1000))
    assert result.fields == ("tags[]",)
    assert {d.path for d in result.differences} == {"tags[]"}
    assert sorted(d.primary for d in result.differences if d.kind == "removed") == sorted(
        primary["tags"]
    )
    assert len(result.differences) == 100


def test_a_record_on_one_side_only_is_removed_or_added_even_summarised() -> None:
    """Also when the structured diff is skipped (too big, no budget): the kind still says
    which side lacks the record; a summary carries no values."""
    record = {"id": 1, "email": "a@example.com"}
    assert compare(record, None, rules()).differences == (Difference("$", "removed", record, None),)
    big = compare(record, None, rules(max_diff_bytes=1))
    assert big.summarised and big.differences == (Difference("$", "removed"),)
    busy = compare(None, record, rules(), budget=empty_budget())
    assert busy.summarised and busy.differences == (Difference("$", "added"),)


def test_past_the_cpu_budget_differing_values_are_not_judged() -> None:
    budget = DiffBudget(per_second=1, burst=1, cpu_share=0, cpu_burst_seconds=0)
    result = compare({"a": 1}, {"a": 2}, rules(), budget=budget)
    assert result is UNJUDGED
    assert result.outcome is Outcome.SKIPPED and not result.differences
    assert compare({"a": 1}, {"a": 1}, rules(), budget=budget) is MATCH  # equal bytes: free
    assert (budget.walked_total, budget.summarised_total, budget.unjudged_total) == (0, 0, 1)


def test_a_judged_comparison_is_charged_to_the_cpu_budget() -> None:
    budget = DiffBudget(per_second=100, burst=100, cpu_share=0.5, cpu_burst_seconds=10)
    assert compare({"a": 1}, {"a": 2}, rules(), budget=budget).outcome is Outcome.MISMATCH
    assert budget.cpu_seconds < 10
    left = budget.cpu_seconds
    compare({"a": 1}, {"a": 1}, rules(), budget=budget)  # a match is not charged
    assert budget.cpu_seconds >= left
