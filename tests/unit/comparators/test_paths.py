from __future__ import annotations

from typing import Any

import pytest

from comparators.errors import RuleError
from comparators.paths import (
    MEMBER,
    Index,
    Keyed,
    Wildcard,
    collapse_indexes,
    is_key_field,
    parse_path,
    parse_pattern,
    render_path,
)


@pytest.mark.parametrize(
    ("prefix", "segments", "expected"),
    [
        ("", [], "$"),
        ("body", [], "body"),
        ("", ["a"], "a"),
        ("body", ["a", 3, "b"], "body.a[3].b"),
        ("", [0, "x"], "[0].x"),
        ("", ["items", Keyed("id", "42"), "name"], "items[id=42].name"),
        ("", ["items", Keyed("id", '"a-1"#2')], 'items[id="a-1"#2]'),
        ("", ["meta", "a.b"], 'meta["a.b"]'),
        ("", ["a b"], '["a b"]'),
        ("", [""], '[""]'),
        ("", ["*"], '["*"]'),
        ("headers", ["content-type"], "headers.content-type"),
        ("", ["tags", MEMBER], "tags[]"),
        ("body", ["items", Keyed("id", "1"), "tags", MEMBER], "body.items[id=1].tags[]"),
    ],
)
def test_render_path(prefix: str, segments: list[Any], expected: str) -> None:
    assert render_path(prefix, segments) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("items[3].a", "items[].a"),
        ("items[id=42].a", "items[].a"),
        ('items[id="x]y"#2].a', "items[].a"),
        ("items[id=?].a", "items[].a"),
        ("a[1][2]", "a[][]"),
        ('meta["a.b"]', 'meta["a.b"]'),
        ('meta["x[0]"][3]', 'meta["x[0]"][]'),
        ('l[2]["k\\"[1]"]', 'l[]["k\\"[1]"]'),
        ("plain.path", "plain.path"),
        ("users[email=redacted:0123abcd].name", "users[].name"),
        ("roles[]", "roles[]"),
        ("items[4].roles[]", "items[].roles[]"),
    ],
)
def test_collapse_indexes(path: str, expected: str) -> None:
    assert collapse_indexes(path) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("updated_at", ("updated_at",)),
        ("items[*].updated_at", ("items", Wildcard.ANY_INDEX, "updated_at")),
        ("meta.*", ("meta", Wildcard.ANY)),
        ("items[0].x", ("items", Index(0), "x")),
        ("[2]", (Index(2),)),
        ("*[*][1]", (Wildcard.ANY, Wildcard.ANY_INDEX, Index(1))),
        ('meta["a.b"].c', ("meta", "a.b", "c")),
        ('["*"]', ("*",)),
    ],
)
def test_parse_pattern(pattern: str, expected: tuple[object, ...]) -> None:
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    ["", "a..b", ".a", "a.", "a*", "*a", "a[x]", "a[-1]", "a.[0]", "a b", "a[", 'a["\\q"]', "a]"],
)
def test_parse_pattern_rejects_bad_patterns_naming_them(pattern: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_pattern(pattern)
    assert repr(pattern) in str(caught.value)


def test_parse_pattern_rejects_non_strings() -> None:
    with pytest.raises(RuleError, match="non-empty string"):
        parse_pattern(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path",
    [
        "$",
        "status",
        "body.items[3].a",
        "items[id=42].name",
        'items[id="a.b"#3].name',
        'meta["a.b"][0]',
        "headers.x-api-key",
        "[0]",
        "roles[]",
        "items[id=1].roles[]",
        '["a b"][]',
    ],
)
def test_parse_path_round_trips(path: str) -> None:
    assert render_path("", parse_path(path)) == path


def test_parse_path_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="bad path"):
        parse_path("a[")


def test_is_key_field() -> None:
    assert is_key_field("id")
    assert not is_key_field("a.b")
    assert not is_key_field("")


def test_a_multiset_element_has_no_position_in_its_path() -> None:
    """``roles[]``: the element is the difference's value, never part of the path, so the
    path (and the metric label made of it) stays one per field whatever the elements."""
    assert parse_path("roles[]") == ["roles", MEMBER]
    assert parse_path("[]") == [MEMBER]
