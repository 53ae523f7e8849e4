"""What the triage page gathers: filters, field matching, counters from a registry, records
shaped for the diff view, a failing verdict turned into a message."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict
from prometheus_client import CollectorRegistry

from proxy.control import triage_data as data
from proxy.control.triage import Csrf
from proxy.errors import BadRequest
from proxy.metrics import Metrics

ROUTES = {"users", "orders"}


def record(route: str = "users", *paths: str, **extra: Any) -> dict[str, Any]:
    differences = [{"path": p, "kind": "changed", "primary": 1, "shadow": 2} for p in paths]
    return {"route": route, "differences": differences, **extra}


def test_filters_default_to_everything() -> None:
    assert data.parse_filters(MultiDict(), ROUTES) == data.Filters(None, None, 20)
    empty = MultiDict({"route": "", "field": "", "limit": ""})
    assert data.parse_filters(empty, ROUTES) == data.Filters()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("route", "nope")], "no route or resource named 'nope' (known: orders, users)"),
        ([("route", "users"), ("route", "orders")], "more than once"),
        ([("sort", "x")], "unknown query parameter 'sort'"),
        ([("limit", "0")], "limit must be"),
        ([("limit", "1e3")], "limit must be"),
        ([("field", "a\x00b")], "field must be printable"),
        ([("field", "x" * 201)], "field must be printable"),
    ],
)
def test_bad_filters_are_refused(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.parse_filters(MultiDict(query), ROUTES)


@pytest.mark.parametrize(
    ("field", "paths", "kept"),
    [
        ("body.email", ["body.email"], True),
        ("body", ["body.email"], True),
        ("items", ["items[3].price"], True),
        ("items[].price", ["items[3].price"], True),
        ("items[].price", ["items[id=7].price"], True),
        ("body.e", ["body.email"], False),
        ("status", ["body.status"], False),
        ("body", [], False),
    ],
)
def test_a_field_keeps_itself_and_what_is_below_it(
    field: str, paths: list[str], kept: bool
) -> None:
    assert data.Filters(field=field).keeps(record("users", *paths)) is kept


def test_route_and_field_both_apply() -> None:
    f = data.Filters(route="orders", field="total")
    assert f.keeps(record("orders", "total"))
    assert not f.keeps(record("users", "total"))


@pytest.mark.parametrize("differences", [None, "x", [1, "a", None], [{"path": 3}]])
def test_odd_records_never_raise(differences: Any) -> None:
    odd = {"route": "users", "differences": differences}
    assert not data.Filters(field="x").keeps(odd)
    view = data.record_view(odd, data.Filters())
    assert view.route == "users" and view.requester == "none"


def test_record_view_sides_and_caps() -> None:
    raw = {
        "route": "users", "primary_store": "postgres", "shadow_store": "dynamodb",
        "differences": [
            {"path": "a", "kind": "added", "primary": None, "shadow": {"x": 1}},
            {"path": "b", "kind": "removed", "primary": "p", "shadow": None},
            {"path": "c", "kind": "changed", "primary": None, "shadow": 12345678901234567890123},
            {"path": "d", "kind": "changed", "primary": "y" * 5000, "shadow": ""},
        ] + [{"path": f"e{i}", "kind": "changed"} for i in range(data.MAX_DIFFERENCES)],
    }  # fmt: skip
    view = data.record_view(raw, data.Filters(field="c"))
    assert view.primary_label == "primary · postgres" and view.shadow_label == "shadow · dynamodb"
    a, b, c, d = view.differences[:4]
    assert (a.primary, a.shadow) == (None, '{"x":1}')
    assert (b.primary, b.shadow) == ('"p"', None)
    assert (c.primary, c.shadow, c.hit) == ("null", "12345678901234567890123", True)
    assert d.primary is not None and len(d.primary) == data.MAX_VALUE_CHARS + 2
    assert len(view.differences) == data.MAX_DIFFERENCES and view.more == 4


def test_counters_come_from_the_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    metrics.comparisons.labels("users", "get", "match").inc(3)
    metrics.comparisons.labels("users", "list", "match").inc(1)
    metrics.comparisons.labels("users", "get", "mismatch").inc(1)
    metrics.comparisons.labels("users", "get", "shadow_error").inc(5)
    for field, n in [("email", 4), ("name", 1), ("age", 4)]:
        metrics.mismatch_fields.labels("users", field).inc(n)
    (users,) = data.counters(registry)
    assert users.route == "users"
    assert dict(users.outcomes) == {"match": 4, "mismatch": 1, "shadow_error": 5}
    assert users.comparisons == 5 and users.mismatch_rate == pytest.approx(0.2)
    assert users.top_fields == (("age", 4), ("email", 4), ("name", 1))
    assert data.known_fields([users], [record("users", "items[2].x")]) == [
        "age", "email", "items[].x", "name",
    ]  # fmt: skip
    assert data.counters(CollectorRegistry()) == []


class FailingDecisions:
    targets = {"users": type("T", (), {"kind": "resource"})()}

    async def verdict(self, name: str) -> Any:
        raise ConnectionError("readiness Redis is down")


async def test_a_failing_verdict_is_a_message() -> None:
    (users,) = await data.readiness(FailingDecisions())  # type: ignore[arg-type]
    assert users.error == "ConnectionError: readiness Redis is down"
    assert users.reads is None and users.writes is None


def test_csrf_tokens_are_signed() -> None:
    csrf = Csrf(b"k" * 32)
    token = csrf.issue()
    assert csrf.valid(token) and token != csrf.issue()
    nonce, _, mac = token.partition(".")
    assert not csrf.valid(nonce) and not csrf.valid(f"{nonce}x.{mac}")
    assert not Csrf(b"j" * 32).valid(token)


def test_a_noise_record_is_marked_with_its_learned_fields() -> None:
    noise = data.record_view(
        {"route": "r", "outcome": "noise", "noise_fields": ["body.request_id", "body.at"]},
        data.Filters(),
    )
    assert noise.noise and noise.noise_fields == ("body.request_id", "body.at")
    plain = data.record_view({"route": "r", "outcome": "mismatch"}, data.Filters())
    assert not plain.noise and plain.noise_fields == ()
    odd = data.record_view({"route": "r", "outcome": "noise", "noise_fields": "x"}, data.Filters())
    assert odd.noise and odd.noise_fields == ()
