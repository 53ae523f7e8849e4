from __future__ import annotations

import pytest

from proxy.http.routing import Router, compile_pattern


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/users/{id}", "/users/42", True),
        ("/users/{id}", "/users/42/orders", False),
        ("/users/{id}", "/users/", False),
        ("/users/*", "/users/42/orders", True),
        ("/users*", "/users", True),
        ("/users*", "/users/1", True),
        ("/*", "/", True),
        ("/a.b", "/aXb", False),
    ],
)
def test_patterns(pattern: str, path: str, matches: bool) -> None:
    assert (compile_pattern(pattern).fullmatch(path) is not None) is matches


@pytest.mark.parametrize("bad", ["users", "/a/*/b"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError, match="route path"):
        compile_pattern(bad)


def test_first_match_wins_and_405_is_told_apart() -> None:
    router = Router([("/users/{id}", ["GET"], "get"), ("/users*", ["POST", "GET"], "other")])
    assert router.match("GET", "/users/1") == ("get", True)
    assert router.match("POST", "/users") == ("other", True)
    assert router.match("DELETE", "/users/1") == (None, True)
    assert router.match("GET", "/orders") == (None, False)
    assert Router([("/*", ["*"], "all")]).match("PATCH", "/x") == ("all", True)
