"""Store mode: a recorded path parsed back into the read it was, or why it cannot be read
again (before any store is asked)."""

from __future__ import annotations

import pytest

from comparators import Redactor
from proxy.replay.model import Request
from proxy.replay.plan import unreplayable
from proxy.replay.store_side import parse_read, store_pair
from proxy.resources.parts import ResourceParts
from proxy.resources.wiring import build_parts
from proxy.settings import Settings, settings_from_mapping

KEY = "00000000-0000-0000-0000-000000000001"
REDACTOR = Redactor(frozenset({"email"}), key=b"k")


def settings() -> Settings:
    fields = {
        "id": {"type": "uuid"},
        "email": {"type": "string", "sensitive": True},
        "first_name": {"type": "string"},
    }
    return settings_from_mapping(
        {
            "backends": {
                "pg": {"kind": "postgres"},
                "ddb": {
                    "kind": "dynamodb",
                    "endpoint_url": "http://127.0.0.1:1",
                    "region": "eu-west-1",
                },
            },
            "resources": {
                "users": {
                    "prefix": "/users",
                    "key": "id",
                    "fields": fields,
                    "indexes": {"email": {"field": "email"}, "name": {"field": "first_name"}},
                    "stores": {
                        "postgres": {"backend": "pg", "table": "u"},
                        "dynamodb": {"backend": "ddb", "table": "u"},
                    },
                    "flags": {"read_from": "postgres", "write_to": ["postgres", "dynamodb"]},
                }
            },
        }
    )


def parts() -> ResourceParts:
    s = settings()
    return build_parts(s.resources["users"], s, {})


def request(path: str, operation: str = "get", method: str = "GET") -> Request:
    return Request("store", "users", method, path, operation)


def test_reads_parse_back() -> None:
    p = parts()
    got = parse_read(p, request(f"/users/{KEY}?fields=first_name"))
    assert not isinstance(got, str)
    assert (got.operation, str(got.key), got.fields) == ("get", KEY, ("id", "first_name"))
    lookup = parse_read(p, request("/users?first_name=Ada&limit=5", "lookup"))
    assert not isinstance(lookup, str)
    assert (lookup.index, lookup.value, lookup.limit) == ("name", "Ada", 5)
    listed = parse_read(p, request("/users?first_name=Ada&id=" + KEY, "list"))
    assert not isinstance(listed, str) and set(listed.filters) == {"first_name", "id"}
    assert store_pair(p) == ("postgres", "dynamodb")


@pytest.mark.parametrize(
    ("path", "operation", "expected"),
    [
        ("/users/not-a-uuid", "get", "the request no longer fits the resource schema (id)"),
        ("/users/a/b", "get", "the path is not a users key path"),
        ("/other", "list", "the path is neither"),
        ("/users?first_name=Ada&cursor=abc", "list", "a list page's cursor belongs"),
        ("/users?first_name=Ada&limit=0", "list", "limit '0' is outside"),
    ],
)
def test_what_cannot_be_read_again(path: str, operation: str, expected: str) -> None:
    got = parse_read(parts(), request(path, operation))
    assert isinstance(got, str) and got.startswith(expected)


@pytest.mark.parametrize(
    ("operation", "method", "path", "expected"),
    [
        ("write_verify", "", "", "a write_verify comparison names no request"),
        ("batch_get", "POST", "/users/batch-get", "the keys of a batch get are in its body"),
        ("put", "PUT", f"/users/{KEY}", "PUT put: only reads are replayed"),
        ("lookup", "GET", "/users?email=redacted:00ff", "the query value of 'email' is redacted"),
    ],
)
def test_store_cases_that_are_not_replayable(
    operation: str, method: str, path: str, expected: str
) -> None:
    found = unreplayable(request(path, operation, method), settings(), REDACTOR, allow_unsafe=True)
    assert found is not None and found.startswith(expected)
