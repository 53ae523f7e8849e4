from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from comparators import Difference, Redactor
from comparators.http import preview
from comparators.redact import UNAVAILABLE

KEY = b"k" * 32


def redactor() -> Redactor:
    return Redactor(frozenset({"Email", "ssn", "authorization"}), KEY)


def test_value_is_a_keyed_hash_of_canonical_bytes() -> None:
    token = redactor().value({"b": 1, "a": 2})
    expected = hmac.new(KEY, b'{"a":2,"b":1}', hashlib.sha256).hexdigest()[:16]
    assert token == f"redacted:{expected}"
    assert redactor().value("x") == redactor().value("x")
    assert redactor().value("x") != redactor().value("y")
    assert Redactor({"email"}, b"other").value("x") != redactor().value("x")


def test_fields_are_case_insensitive() -> None:
    r = redactor()
    assert r.fields == frozenset({"email", "ssn", "authorization"})
    assert r.is_sensitive("EMAIL")
    assert not r.is_sensitive("name")
    assert not r.is_sensitive(3)


def test_tree_redacts_at_any_depth_without_mutating() -> None:
    value = {"email": "a@b.c", "user": {"SSN": 123, "items": [{"Email": None, "n": 1}]}, 5: "x"}
    out = redactor().tree(value)
    r = redactor()
    assert out == {
        "email": r.value("a@b.c"),
        "user": {"SSN": r.value(123), "items": [{"Email": r.value(None), "n": 1}]},
        5: "x",
    }
    assert value["email"] == "a@b.c"
    assert redactor().tree(("a", {"ssn": 1})) == ["a", {"ssn": r.value(1)}]
    assert redactor().tree("plain") == "plain"


def test_tree_never_raises() -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(100_000):
        cursor.append([])
        cursor = cursor[0]
    assert redactor().tree(deep) == UNAVAILABLE


def test_difference_with_sensitive_last_field() -> None:
    r = redactor()
    d = r.difference(Difference("body.users[2].email", "changed", "a@b.c", "d@e.f"))
    assert d == Difference("body.users[2].email", "changed", r.value("a@b.c"), r.value("d@e.f"))
    added = r.difference(Difference("emails[0]", "added", None, "x"))
    assert added == Difference("emails[0]", "added", None, "x")
    header = r.difference(Difference("headers.authorization", "changed", "Bearer a", "Bearer b"))
    assert header.primary == r.value("Bearer a")


def test_difference_redacts_inside_values() -> None:
    r = redactor()
    d = r.difference(Difference("users[id=1]", "removed", {"id": 1, "email": "a@b.c"}, None))
    assert d == Difference("users[id=1]", "removed", {"id": 1, "email": r.value("a@b.c")}, None)
    root = r.difference(Difference("$", "changed", [{"ssn": 1}], 2))
    assert root == Difference("$", "changed", [{"ssn": r.value(1)}], 2)


def test_difference_redacts_sensitive_keys_in_paths() -> None:
    r = redactor()
    d = r.difference(Difference('users[email="a@b.c"#2].name', "changed", "x", "y"))
    assert d.path == f"users[email={r.value('a@b.c')}#2].name"
    assert d.primary == "x"
    plain = r.difference(Difference('users[email="a#2"].name', "changed", "x", "y"))
    assert plain.path == f"users[email={r.value('a#2')}].name"
    numeric = r.difference(Difference("users[ssn=42]", "removed", {"ssn": 42}, None))
    assert numeric.path == f"users[ssn={r.value(42)}]"
    other = r.difference(Difference("users[id=42].email", "changed", "a", "b"))
    assert other.path == "users[id=42].email"


@pytest.mark.parametrize("path", ["a[", 3])
def test_difference_never_raises(path: Any) -> None:
    d = redactor().difference(Difference(path, "changed", "secret", "secret"))
    assert (d.primary, d.shadow) == (UNAVAILABLE, UNAVAILABLE)


def test_paths_without_a_field() -> None:
    r = redactor()
    d = r.difference(Difference("[0]", "changed", {"email": "a"}, "b"))
    assert d == Difference("[0]", "changed", {"email": r.value("a")}, "b")


def test_summarised_differences_pass_through() -> None:
    d = Difference("body.email", "summarised")
    assert redactor().difference(d) == d


def test_key_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        Redactor({"email"}, "text")  # type: ignore[arg-type]


def test_body_previews_become_keyed_tokens() -> None:
    body = b"<html>ssn 123-45-6789</html>"
    shown = redactor().difference(Difference("body", "changed", preview(body), None))
    assert isinstance(shown.primary, str)
    assert shown.primary.startswith(f"{len(body)} bytes html redacted:")
    assert shown.primary == redactor().tree([preview(body)])[0]
    other = Redactor(frozenset(), key=b"another key").difference(
        Difference("body", "changed", preview(body))
    )
    assert other.primary != shown.primary  # keyed: not the bare sha256 of the body
    assert hashlib.sha256(body).hexdigest()[:16] not in shown.primary


def test_a_multiset_element_of_a_sensitive_field_is_hashed() -> None:
    r = redactor()
    assert r.difference(Difference("ssn[]", "removed", "123", None)) == Difference(
        "ssn[]", "removed", r.value("123"), None
    )
    element = r.difference(Difference("users[]", "added", None, {"id": 1, "email": "a@b.c"}))
    assert element == Difference("users[]", "added", None, {"id": 1, "email": r.value("a@b.c")})


def test_a_drifted_value_is_redacted_like_any_value() -> None:
    """A drifted value is reported as ``{"malformed": raw, "reason": ...}``: hashed whole
    under a sensitive field, walked (its sensitive keys hashed) under any other."""
    r = redactor()
    drifted = {"malformed": ["a@b.c"], "reason": "expected S"}
    d = r.difference(Difference("email", "type_changed", "a@b.c", drifted))
    assert d == Difference("email", "type_changed", r.value("a@b.c"), r.value(drifted))
    inner = {"malformed": {"email": "a@b.c", "n": 1}, "reason": "expected an integer"}
    d = r.difference(Difference("prefs", "type_changed", None, inner))
    assert d.shadow == {
        "malformed": {"email": r.value("a@b.c"), "n": 1},
        "reason": "expected an integer",
    }
