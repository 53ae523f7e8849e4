"""Properties of compare: reflexive, symmetric, ignore is exact, normalising is idempotent."""

from __future__ import annotations

import copy
from collections import Counter
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from comparators import Outcome, RuleSpec, compare, compile_rules, render_path
from comparators.canonical import canonical
from comparators.diff import diff
from comparators.rules import Rules

SETTINGS = settings(database=None, deadline=None, max_examples=300)
KEYS = st.sampled_from(["a", "b", "id", "x.y"]) | st.text(max_size=3)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5+00:00"])
    | st.text(max_size=4)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=16,
)
DICTS = st.dictionaries(KEYS, JSON, max_size=5)
SEGMENTS = st.sampled_from(["a", "b", "id", "*", "[*]", "[0]"])
PATTERNS = st.lists(SEGMENTS, min_size=1, max_size=3).map(
    lambda parts: "".join(
        p if p.startswith("[") or i == 0 else "." + p for i, p in enumerate(parts)
    )
)
BIG = 10_000


@st.composite
def rule_sets(draw: st.DrawFn) -> Rules:
    unordered = draw(st.lists(PATTERNS, max_size=2, unique=True))
    keyed = draw(st.dictionaries(PATTERNS, st.sampled_from(["id", "a"]), max_size=2))
    return compile_rules(
        RuleSpec(
            ignore=tuple(draw(st.lists(PATTERNS, max_size=2))),
            unordered=tuple(p for p in unordered if p not in keyed),
            keyed=keyed,
            numeric_tolerance=draw(st.sampled_from([0.0, 0.5])),
            numeric_tolerances=draw(
                st.dictionaries(PATTERNS, st.sampled_from([0.0, 1.0]), max_size=1)
            ),
            timestamp_tolerance_seconds=draw(st.sampled_from([0.0, 1.0])),
            max_differences=BIG,
        )
    )


def paths_and_kinds(a: Any, b: Any, rules: Rules) -> Counter[tuple[str, str]]:
    found = diff(rules.normalise(a), rules.normalise(b), rules)
    assert found.total == len(found.differences)
    return Counter((d.path, d.kind) for d in found.differences)


@SETTINGS
@given(JSON, rule_sets())
def test_any_value_matches_itself(value: Any, rules: Rules) -> None:
    assert compare(value, copy.deepcopy(value), rules).outcome is Outcome.MATCH


@SETTINGS
@given(JSON, JSON, rule_sets())
def test_outcome_is_symmetric(a: Any, b: Any, rules: Rules) -> None:
    assert compare(a, b, rules).outcome is compare(b, a, rules).outcome


@SETTINGS
@given(JSON, JSON)
def test_differences_are_symmetric_without_tolerances(a: Any, b: Any) -> None:
    rules = compile_rules(RuleSpec(max_differences=BIG))
    swap = {"added": "removed", "removed": "added"}
    backwards = Counter(
        {
            (path, swap.get(kind, kind)): n
            for (path, kind), n in paths_and_kinds(b, a, rules).items()
        }
    )
    assert paths_and_kinds(a, b, rules) == backwards


@SETTINGS
@given(DICTS, DICTS, st.lists(KEYS, min_size=1, max_size=2))
def test_ignoring_a_path_removes_exactly_the_differences_under_it(
    a: dict[str, Any], b: dict[str, Any], keys: list[str]
) -> None:
    pattern = render_path("", keys)
    everything = paths_and_kinds(a, b, compile_rules(RuleSpec(max_differences=BIG)))
    ignored = paths_and_kinds(a, b, compile_rules(RuleSpec(ignore=(pattern,), max_differences=BIG)))

    def under(path: str) -> bool:
        return path == pattern or (path.startswith(pattern) and path[len(pattern)] in ".[")

    assert ignored == Counter({k: n for k, n in everything.items() if not under(k[0])})


@SETTINGS
@given(JSON, rule_sets())
def test_normalising_is_idempotent(value: Any, rules: Rules) -> None:
    once = rules.normalise(value)
    assert canonical(rules.normalise(once)) == canonical(once)


@SETTINGS
@given(JSON, JSON, rule_sets())
def test_equal_canonical_bytes_mean_no_differences(a: Any, b: Any, rules: Rules) -> None:
    na, nb = rules.normalise(a), rules.normalise(b)
    if canonical(na) == canonical(nb):
        assert diff(na, nb, rules).total == 0


def store_twin(value: Any) -> Any:
    """The same data as a store codec might hand it over: Decimals and tuples."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return tuple(store_twin(v) for v in value)
    return {k: store_twin(v) for k, v in value.items()}


@SETTINGS
@given(JSON, rule_sets())
def test_store_representations_match_json(value: Any, rules: Rules) -> None:
    assert compare(value, store_twin(value), rules).outcome is Outcome.MATCH
    assert compare(store_twin(value), value, rules).outcome is Outcome.MATCH
