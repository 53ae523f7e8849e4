"""The admin token check: header tokens, sessions derived from the token, keys, closed when
no token is configured."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.control.admin_token import SESSION_SECONDS, AdminToken, Forbidden, Unauthorized

COOKIE = "session"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(headers: dict[str, str] | None = None, cookie: str | None = None):  # type: ignore[no-untyped-def]
    headers = dict(headers or {})
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    return make_mocked_request("GET", "/", headers=headers)


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, False),
        ({"X-Admin-Token": "tok"}, True),
        ({"Authorization": "Bearer tok"}, True),
        ({"Authorization": "bearer  tok "}, True),
        ({"Authorization": "Bearer wrong", "X-Admin-Token": "tok"}, False),  # bearer wins
        ({"Authorization": "Basic dG9rOg==", "X-Admin-Token": "tok"}, True),
        ({"X-Admin-Token": "tök"}, False),
    ],
)
def test_header_tokens(headers: dict[str, str], allowed: bool) -> None:
    problem = AdminToken("tok").request_problem(request(headers))
    assert (problem is None) is allowed
    if not allowed:
        assert isinstance(problem, Unauthorized)


def test_a_session_works_until_it_expires_and_is_not_the_token() -> None:
    clock = Clock()
    auth = AdminToken("tok", clock=clock)
    value, max_age = auth.session()
    assert max_age == SESSION_SECONDS and "tok" not in value
    assert auth.request_problem(request(cookie=value), cookie=COOKIE) is None
    assert isinstance(auth.request_problem(request(cookie=value)), Unauthorized)  # not opted in
    clock.now += SESSION_SECONDS
    assert isinstance(auth.request_problem(request(cookie=value), cookie=COOKIE), Unauthorized)


@pytest.mark.parametrize("forged", ["", "tok", ".", "x.y", "99999999999.abc", "-1.abc"])
def test_forged_sessions_fail(forged: str) -> None:
    assert not AdminToken("tok").session_valid(forged)


def test_a_session_of_another_token_fails() -> None:
    value, _ = AdminToken("old").session()
    assert not AdminToken("new").session_valid(value)
    expires, _, mac = value.partition(".")
    assert not AdminToken("old").session_valid(f"{int(expires) + 1}.{mac}")


def test_a_header_token_is_checked_before_the_cookie() -> None:
    auth = AdminToken("tok")
    value, _ = auth.session()
    wrong = request({"X-Admin-Token": "wrong"}, cookie=value)
    assert isinstance(auth.request_problem(wrong, cookie=COOKIE), Unauthorized)


def test_without_a_token_everything_is_closed() -> None:
    auth = AdminToken(None)
    assert not auth.configured
    assert isinstance(auth.request_problem(request({"X-Admin-Token": ""})), Forbidden)
    assert isinstance(auth.request_problem(request(cookie="1.a"), cookie=COOKIE), Forbidden)
    assert auth.key(b"csrf") is None and not auth.session_valid("1.a")
    with pytest.raises(ValueError, match="no admin token"):
        auth.session()


def test_keys_differ_by_purpose_and_token() -> None:
    assert AdminToken("tok").key(b"a") == AdminToken("tok").key(b"a")
    assert AdminToken("tok").key(b"a") != AdminToken("tok").key(b"b")
    assert AdminToken("tok").key(b"a") != AdminToken("tok2").key(b"a")
