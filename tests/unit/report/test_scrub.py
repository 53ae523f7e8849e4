"""The report's second guard: a sensitive value the sink left in clear is hashed; tokens the
sink wrote stay as they are, so equal values still look equal."""

from __future__ import annotations

from comparators import Redactor
from proxy.report import scrub

R = Redactor(frozenset({"email", "token"}), b"k")


def test_values_under_sensitive_names_are_hashed_once() -> None:
    token = R.value("a@example.com")
    data = {"email": "a@example.com", "nested": [{"token": "t0k"}], "name": "Ada", "e2": token}
    got = scrub.value(R, data)
    assert got == {
        "email": token,
        "nested": [{"token": R.value("t0k")}],
        "name": "Ada",
        "e2": token,
    }
    assert scrub.value(R, {"email": token}) == {"email": token}
    assert scrub.value(R, "a@example.com", sensitive=True) == token
    assert scrub.value(R, None, sensitive=True) is None


def test_paths_and_queries() -> None:
    path, sensitive = scrub.difference_path(R, 'body.users[email="a@example.com"].phone')
    assert "a@example.com" not in path and path.startswith("body.users[email=redacted:")
    assert sensitive is False
    assert scrub.difference_path(R, "body.email") == ("body.email", True)
    assert scrub.difference_path(R, "body.items[3].name") == ("body.items[3].name", False)
    shown = scrub.request_path(R, "/users?email=a%40example.com&page=2")
    assert "example" not in shown and shown.endswith("&page=2")
    token = R.value("a@example.com")
    assert (
        scrub.request_path(R, f"/users?email={token}")
        == f"/users?email={token.replace(':', '%3A')}"
    )
