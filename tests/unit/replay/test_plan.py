"""Records become one case per distinct request, and a request whose redacted or unrecorded
parts matter is not replayable, with the reason."""

from __future__ import annotations

import time
from typing import Any

import pytest

from comparators import Redactor
from proxy.errors import ConfigError
from proxy.replay.model import Request
from proxy.replay.plan import keep_filter, parse_duration, plan, unreplayable
from proxy.settings import Settings, settings_from_mapping

REDACTOR = Redactor(frozenset({"email", "token"}), key=b"k")


def settings() -> Settings:
    return settings_from_mapping(
        {
            "backends": {
                "a": {"kind": "http", "url": "http://127.0.0.1:1"},
                "b": {"kind": "http", "url": "http://127.0.0.1:2"},
            },
            "routes": [{"name": "get", "path": "/users/{id}", "primary": "a", "shadow": "b"}],
        }
    )


def http(method: str = "GET", path: str = "/users/1", route: str = "get") -> Request:
    return Request("http", route, method, path)


def reason(request: Request, *, allow_unsafe: bool = False) -> str | None:
    return unreplayable(request, settings(), REDACTOR, allow_unsafe=allow_unsafe)


def test_idempotent_requests_are_replayable() -> None:
    assert reason(http()) is None
    assert reason(http("HEAD")) is None
    assert reason(http("OPTIONS", "/users/1?full=1")) is None


@pytest.mark.parametrize(
    ("request_", "allow", "expected"),
    [
        (http("DELETE"), False, "DELETE is not idempotent: re-sent only with --allow-unsafe"),
        (http("POST"), True, "the body of a POST is not recorded"),
        (http(path="/users/1?email=redacted:0011"), False, "the query value of 'email' is"),
        (http(path="/users/1?q=redacted:0011"), False, "the query value of 'q' is redacted"),
        (http(route="gone"), False, "route 'gone' is not in the config"),
        (http(path=""), False, "no request path in the record"),
    ],
)
def test_what_cannot_be_sent_faithfully_says_why(
    request_: Request, allow: bool, expected: str
) -> None:
    found = reason(request_, allow_unsafe=allow)
    assert found is not None and found.startswith(expected)


def test_allow_unsafe_lets_a_bodyless_method_through() -> None:
    assert reason(http("DELETE"), allow_unsafe=True) is None


def test_a_store_case_of_an_unknown_resource() -> None:
    assert reason(Request("store", "users", "GET", "/users/1", "get")) == (
        "resource 'users' is not in the config"
    )


def test_identical_requests_make_one_case_with_their_record_count() -> None:
    records: list[dict[str, Any]] = [
        {"route": "get", "method": "GET", "path": "/users/1", "request_id": "a"},
        {"route": "get", "method": "get", "path": "/users/1", "request_id": "b"},
        {"route": "get", "method": "GET", "path": "/users/2", "request_id": "c"},
    ]
    cases = plan(records, settings(), REDACTOR, allow_unsafe=False)
    assert [(c.request.path, c.records, c.request_ids) for c in cases] == [
        ("/users/1", 2, ("a", "b")),
        ("/users/2", 1, ("c",)),
    ]
    assert cases[0].request.ident == cases[0].request.ident and len(cases[0].request.ident) == 12


def test_keep_filter_by_target_and_age() -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    keep = keep_filter(settings(), "get", parse_duration("1h"))
    assert keep({"route": "get", "time": now})
    assert not keep({"route": "get", "time": "2020-01-01T00:00:00Z"})
    assert not keep({"route": "other", "time": now})
    with pytest.raises(ConfigError, match="'nope': not in the config"):
        keep_filter(settings(), "nope", None)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
