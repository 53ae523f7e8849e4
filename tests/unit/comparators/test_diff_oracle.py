"""deepdiff as the oracle of ``comparators.diff``: without rules both find the same differences.

Both differs run on random JSON pairs (often one derived from the other by a few mutations),
our differ with no ignore / tolerance / unordered / keyed rules and ``max_differences`` large
enough that nothing is capped (``diff`` itself never summarises; ``compare`` is also run, with
``max_diff_bytes`` large enough that it always walks). deepdiff runs with
``zip_ordered_iterables=True`` (lists position by position, no difflib alignment),
``threshold_to_diff_deeper=0`` (never report a whole dict instead of its keys) and
``ignore_private_variables=False`` (keys starting with ``__`` are data).

Mapping, in one representation: a path is a tuple of segments, ``str`` for a dict key and
``int`` for a list index, ``()`` for the root.

- Ours: ``parse_path(d.path)``, except ``$`` (``ROOT``), which is ``()``.
- deepdiff: ``level.path(output_format="list")`` of every reported level.

Kinds (checked too, path by path), deepdiff's report -> ours (``Difference.kind``):

- ``dictionary_item_added``, ``iterable_item_added`` -> ``added`` (one per key or index; a
  list that grew is one ``added`` per extra index in both);
- ``dictionary_item_removed``, ``iterable_item_removed`` -> ``removed`` (likewise);
- ``values_changed`` -> ``changed``;
- ``type_changes`` between an int and a float (neither a bool) -> ``changed`` when the values
  differ (``!=``) and nothing when they are equal: our differ compares numbers by value and
  documents ``1`` vs ``1.0`` as equal;
- ``type_changes`` at the root with ``None`` on one side -> ``removed`` (the shadow has no
  value) or ``added`` (the primary has none): a record absent from one store;
- any other ``type_changes`` (``True`` vs ``1``, ``None`` vs ``0``, ``{}`` vs ``[]``, ``"1"``
  vs ``1``) -> ``type_changed``: booleans are not numbers for our differ.

Inputs are kept where the two notions of equality coincide, each exclusion documented:

- integers within +-2**53: ``comparators.leaves`` compares a float as the decimal it prints as
  (``float(2**60)`` equals ``1152921504606847000``) while deepdiff uses Python's exact ``==``;
  the two agree whenever the integer is exactly representable as a float.
- no NaN (asked for) and no infinity: see ``test_infinity_is_not_null`` (a bug).
- no dict key ``"$"`` (a top-level one renders as the root): see
  ``test_root_key_named_dollar_is_not_the_root`` (a bug).

Unordered lists (multisets) have an oracle of their own: deepdiff with ``ignore_order=True``,
``report_repetition=True`` and ``cutoff_distance_for_pairs=0`` (never pair two unequal
elements: a pairing drops a repetition, ``[True]`` vs ``[1, 1]`` reports one ``1``), on lists
of scalars (no floats: deepdiff tells ``1`` from ``1.0`` and ``0.0`` from ``-0.0``, our
differ compares numbers by value; no nested lists: deepdiff ignores order at every depth, the
rule only at its pattern). Both must name the same elements on each side only, duplicates
counted; ours are all at ``s[]``. deepdiff's reports -> (kind, element), counted:

- ``iterable_item_removed`` / ``iterable_item_added`` -> ``removed`` / ``added`` the element;
- ``repetition_change`` -> the element ``removed`` (or ``added``) as often as its count fell
  (or rose).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

import pytest
from deepdiff import DeepDiff
from hypothesis import example, given, settings
from hypothesis import strategies as st

from comparators import ROOT, RuleSpec, compare, compile_rules, render_path
from comparators.canonical import canonical
from comparators.diff import diff
from comparators.paths import Keyed, parse_path

Path = tuple[str | int, ...]
Found = dict[Path, str]

SETTINGS = settings(database=None, deadline=None, max_examples=400)
BIG = 1_000_000
RULES = compile_rules(RuleSpec(max_differences=BIG, max_diff_bytes=BIG))
INT_LIMIT = 2**53

KEYS = (
    st.sampled_from(["a", "b", "id", "0", "x.y", "__p", "a b", "*", "k=v"]) | st.text(max_size=3)
).filter(lambda k: k != ROOT)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-INT_LIMIT, max_value=INT_LIMIT)
    | st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, 0.5, 2**53])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "a", "1", "true", "null", "2024-01-01T00:00:00Z"])
    | st.text(max_size=3)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
SMALL_JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(KEYS, children, max_size=2),
    max_leaves=3,
)

_ADDED = {"dictionary_item_added": "added", "iterable_item_added": "added"}
_REMOVED = {"dictionary_item_removed": "removed", "iterable_item_removed": "removed"}
_KINDS = {**_ADDED, **_REMOVED, "values_changed": "changed"}
_NUMBERS = (int, float)  # type() in: a bool is not a number here


# -- the two sides of the mapping ------------------------------------------------------------


def ours(a: Any, b: Any) -> Found:
    found = diff(RULES.normalise(a), RULES.normalise(b), RULES)
    assert found.total == len(found.differences), "our differ capped its output"
    paths = [d.path for d in found.differences]
    assert len(paths) == len(set(paths)), f"a path reported twice: {paths}"
    via_compare = compare(a, b, RULES)
    assert not via_compare.summarised, via_compare.detail
    assert {d.path for d in via_compare.differences} == set(paths)
    return {_our_path(d.path): d.kind for d in found.differences}


def _our_path(path: str) -> Path:
    if path == ROOT:
        return ()
    out: list[str | int] = []
    for segment in parse_path(path):
        assert not isinstance(segment, Keyed), f"a keyed segment without keyed rules: {path}"
        out.append(segment)
    return tuple(out)


def theirs(a: Any, b: Any) -> Found:
    tree = DeepDiff(
        a,
        b,
        view="tree",
        zip_ordered_iterables=True,
        threshold_to_diff_deeper=0,
        ignore_private_variables=False,
    )
    out: Found = {}
    for report, levels in tree.items():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            assert path not in out, f"deepdiff reported {path} twice"
            if report in _KINDS:
                out[path] = _KINDS[report]
            elif report == "type_changes":
                x, y = level.t1, level.t2
                if type(x) in _NUMBERS and type(y) in _NUMBERS:
                    if x != y:
                        out[path] = "changed"
                elif path == () and (x is None) != (y is None):
                    out[path] = "removed" if y is None else "added"  # a whole value
                else:
                    out[path] = "type_changed"
            else:
                raise AssertionError(f"unexpected deepdiff report {report} at {path}")
    return out


def _show(paths: set[Path]) -> str:
    """Segment lists, not rendered paths: rendering may be ambiguous (see the xfails)."""
    return str(sorted((list(p) for p in paths), key=repr))


def disagreement(mine: Found, oracle: Found) -> str:
    """Empty when both found the same paths with the same kinds, else what differs."""
    only_ours, only_theirs = mine.keys() - oracle.keys(), oracle.keys() - mine.keys()
    if only_ours or only_theirs:
        return (
            f"paths only we report: {_show(only_ours)}; only deepdiff reports: {_show(only_theirs)}"
        )
    kinds = {render_path("", list(p)): (mine[p], oracle[p]) for p in mine if mine[p] != oracle[p]}
    return f"kinds differ (ours, deepdiff's mapped): {kinds}" if kinds else ""


def assert_agree(a: Any, b: Any) -> None:
    problem = disagreement(ours(a, b), theirs(a, b))
    assert not problem, f"{problem}\nprimary={a!r}\nshadow={b!r}"


# -- pairs: mutated (mostly), identical, independent -----------------------------------------


def _twin(value: Any) -> list[Any]:
    """Values that are (nearly) the same data in another type: the interesting mismatches."""
    if value is None:
        return [0, False, "", "null", [], {}]
    if isinstance(value, bool):
        return [int(value), float(value), str(value).lower(), None]
    if isinstance(value, int):
        return [float(value), bool(value), str(value)]
    if isinstance(value, float):
        back = [int(value)] if value.is_integer() and abs(value) <= INT_LIMIT else []
        return [*back, str(value), None]
    if isinstance(value, str):
        return [None, [value], {}]
    if isinstance(value, list):
        return [{str(i): v for i, v in enumerate(value)}, {}]
    return [list(value.values()), [], None]


def _nudge(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1] if abs(value) < INT_LIMIT else [0]
    if isinstance(value, float):
        return [math.nextafter(value, math.inf), -value if value else 1.0, value / 2]
    if isinstance(value, str):
        return [value + "x", value[:-1]]
    raise AssertionError(f"no nudge for {value!r}")


SAME_TYPE: dict[type, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(min_value=-INT_LIMIT, max_value=INT_LIMIT),
    float: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text(max_size=3),
}


@st.composite
def _mutate_here(draw: st.DrawFn, value: Any) -> Any:
    ops: list[str] = ["twin", "fresh"]
    if isinstance(value, dict):
        ops += 2 * ["add_key", *(["drop_key", "rekey"] if value else [])]
    elif isinstance(value, list):
        ops += 2 * ["append", "insert_first", *(["pop", "pop_first", "swap"] if value else [])]
    elif value is not None:
        ops = ["nudge", "nudge", "same_type", *ops]
    op = draw(st.sampled_from(ops))
    if op == "fresh":
        return draw(SMALL_JSON)
    if op == "twin":
        return draw(st.sampled_from(_twin(value)))
    if op == "nudge":
        return draw(st.sampled_from(_nudge(value)))
    if op == "same_type":
        return draw(SAME_TYPE[type(value)])
    if isinstance(value, dict):
        out = dict(value)
        if op == "add_key":
            out[draw(KEYS)] = draw(SMALL_JSON)
        else:
            key = draw(st.sampled_from(sorted(out)))
            moved = out.pop(key)
            if op == "rekey":
                out[draw(KEYS)] = moved
        return out
    items = list(value)
    if op == "append":
        items.append(draw(SMALL_JSON))
    elif op == "insert_first":
        items.insert(0, draw(SMALL_JSON))
    elif op == "pop":
        items.pop()
    elif op == "pop_first":
        items.pop(0)
    else:
        i, j = draw(st.integers(0, len(items) - 1)), draw(st.integers(0, len(items) - 1))
        items[i], items[j] = items[j], items[i]
    return items


@st.composite
def _mutate_somewhere(draw: st.DrawFn, value: Any) -> Any:
    descend = draw(st.integers(0, 2)) > 0
    if isinstance(value, dict) and value and descend:
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: draw(_mutate_somewhere(value[key]))}
    if isinstance(value, list) and value and descend:
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], draw(_mutate_somewhere(value[i])), *value[i + 1 :]]
    return draw(_mutate_here(value))


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    a = draw(JSON)
    how = draw(st.sampled_from(["mutated", "mutated", "mutated", "identical", "independent"]))
    if how == "identical":
        return a, copy.deepcopy(a)
    if how == "independent":
        return a, draw(JSON)
    b = a
    for _ in range(draw(st.integers(1, 3))):
        b = draw(_mutate_somewhere(b))
    return (b, a) if draw(st.booleans()) else (a, b)


# -- the property ----------------------------------------------------------------------------


@SETTINGS
@given(pairs())
@example(({"a": 1, "b": [1, 2]}, {"a": 1.0, "b": [True, 2, 3], "c": None}))
@example(({"x": [[1]], "y": {"p": 1, "q": 2}}, {"x": [[1, 2], [3]], "y": {"r": 1, "s": 2}}))
@example(({"__p": 1, "x.y": [], "": {}}, {"__p": 2, "x.y": {}, "": []}))
@example(([0, 1, 2], [1, 2]))
@example((2**53, float(2**53)))
def test_differing_paths_agree_with_deepdiff(pair: tuple[Any, Any]) -> None:
    assert_agree(*pair)


def test_the_oracle_catches_a_wrong_differ() -> None:
    """A differ that misses a key only the shadow has, reports ``1`` vs ``1.0`` or gets a kind
    wrong fails the comparison, which names the paths."""
    a, b = {"a": 1, "b": [1]}, {"a": 1.0, "b": [1, 2], "c": 2}
    mine, oracle = ours(a, b), theirs(a, b)
    assert mine == oracle == {("b", 1): "added", ("c",): "added"}
    assert disagreement(mine, oracle) == ""
    missing = {p: k for p, k in mine.items() if p != ("c",)}
    assert (
        disagreement(missing, oracle) == "paths only we report: []; only deepdiff reports: [['c']]"
    )
    extra = {**mine, ("a",): "changed"}
    assert disagreement(extra, oracle) == "paths only we report: [['a']]; only deepdiff reports: []"
    wrong = {**mine, ("b", 1): "changed"}
    assert disagreement(wrong, oracle) == "kinds differ (ours, deepdiff's mapped): " + str(
        {"b[1]": ("changed", "added")}
    )


def test_documented_number_equality_beyond_53_bits() -> None:
    """Why integers stay within 2**53: beyond, ``float(2**60)`` prints as
    ``1.152921504606847e+18`` and our differ (by its documentation) takes it as that decimal."""
    a, b = [1152921504606847000], [float(2**60)]
    assert ours(a, b) == {}
    assert theirs(a, b) == {(0,): "changed"}


# -- disagreements that are bugs in comparators (not fixed here) -----------------------------

INFINITY = ({"score": math.inf}, {"score": None})
DOLLAR_KEY = ({"$": 1}, {"$": 2})


def test_deepdiff_reports_the_two_known_disagreements() -> None:
    """The oracle's side of the two xfails below, so they fail only because of our differ."""
    assert theirs(*INFINITY) == {("score",): "type_changed"}
    assert theirs(*DOLLAR_KEY) == {("$",): "changed"}


@pytest.mark.xfail(
    strict=True,
    reason="comparators.canonical serialises float infinity as JSON null (orjson), and the "
    "differ trusts equal canonical bytes (diff._mixed, compare's fast path): inf == None",
)
def test_infinity_is_not_null() -> None:
    assert ours(*INFINITY) == {("score",): "type_changed"}


@pytest.mark.xfail(
    strict=True,
    reason="comparators.paths.render_path renders a top-level key '$' as '$', which is ROOT: "
    "a difference under key '$' cannot be told from a difference of the whole value",
)
def test_root_key_named_dollar_is_not_the_root() -> None:
    assert ours(*DOLLAR_KEY) == {("$",): "changed"}


# -- unordered lists: multisets ----------------------------------------------------------------

UNORDERED = compile_rules(RuleSpec(unordered=("s",), max_differences=BIG, max_diff_bytes=BIG))
ELEMENTS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-2, max_value=2)
    | st.integers(min_value=-INT_LIMIT, max_value=INT_LIMIT)
    | st.sampled_from(["", "a", "b", "1", "true"])
    | st.text(max_size=2)
)
Members = Counter[tuple[str, bytes]]


def our_members(a: list[Any], b: list[Any]) -> Members:
    found = diff(UNORDERED.normalise({"s": a}), UNORDERED.normalise({"s": b}), UNORDERED)
    assert found.total == len(found.differences)
    assert {d.path for d in found.differences} <= {"s[]"}, "a multiset element has no position"
    out: Members = Counter()
    for d in found.differences:
        assert d.kind in ("removed", "added"), d
        out[d.kind, canonical(d.primary if d.kind == "removed" else d.shadow)] += 1
    return out


def their_members(a: list[Any], b: list[Any]) -> Members:
    tree = DeepDiff(
        {"s": a},
        {"s": b},
        view="tree",
        ignore_order=True,
        report_repetition=True,
        cutoff_intersection_for_pairs=0,
    )
    out: Members = Counter()
    for report, levels in tree.items():
        for level in levels:
            assert level.path(output_format="list")[0] == "s", level.path()
            if report == "iterable_item_removed":
                out["removed", canonical(level.t1)] += 1
            elif report == "iterable_item_added":
                out["added", canonical(level.t2)] += 1
            elif report == "repetition_change":
                repetition = level.additional["repetition"]
                grew = repetition["new_repeat"] - repetition["old_repeat"]
                out["added" if grew > 0 else "removed", canonical(level.t1)] += abs(grew)
            else:
                raise AssertionError(f"unexpected deepdiff report {report} at {level.path()}")
    return +out


@st.composite
def multiset_pairs(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    a = draw(st.lists(ELEMENTS, max_size=6))
    how = draw(st.sampled_from(["shuffled", "edited", "edited", "independent"]))
    if how == "independent":
        return a, draw(st.lists(ELEMENTS, max_size=6))
    b = list(draw(st.permutations(a)))
    if how == "edited":
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(["add", "drop", "repeat"] if b else ["add"]))
            if op == "add":
                b.insert(draw(st.integers(0, len(b))), draw(ELEMENTS))
            elif op == "drop":
                b.pop(draw(st.integers(0, len(b) - 1)))
            else:
                b.append(draw(st.sampled_from(b)))
    return (b, a) if draw(st.booleans()) else (a, b)


@SETTINGS
@given(multiset_pairs())
@example((["admin", "user"], ["user", "admin"]))
@example((["admin", "user"], ["user"]))
@example((["a", "a", "b"], ["a", "c"]))
@example(([1, True, "1"], [True, "1", "1"]))
@example(([None, True], [None, 1, 1]))
def test_unordered_differences_agree_with_deepdiff(pair: tuple[list[Any], list[Any]]) -> None:
    a, b = pair
    mine, oracle = our_members(a, b), their_members(a, b)
    assert mine == oracle, f"ours={dict(mine)} deepdiff={dict(oracle)}\nprimary={a!r}\nshadow={b!r}"


def test_the_multiset_oracle_counts_duplicates() -> None:
    a, b = ["a", "a", "b"], ["a", "c"]
    expected = Counter({("removed", b'"a"'): 1, ("removed", b'"b"'): 1, ("added", b'"c"'): 1})
    assert our_members(a, b) == their_members(a, b) == expected
