from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from comparators import (
    EQUAL_ONCE_PARSED,
    UNJUDGED,
    Comparison,
    DiffBudget,
    Difference,
    HttpSnapshot,
    Outcome,
    RuleSpec,
    compare_http,
    compile_rules,
)
from comparators.comparison import MATCH
from comparators.http import preview
from comparators.model import BodyPreview

JSON = (("content-type", "application/json"),)


def rules(**spec: Any) -> Any:
    return compile_rules(RuleSpec(**spec))


def snap(body: bytes | None, status: int = 200, headers: tuple[tuple[str, str], ...] = JSON) -> Any:
    return HttpSnapshot(status, headers, body)


def test_byte_equal_bodies_are_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(orjson, "loads", boom)
    body = b'{"a": 1}'
    assert compare_http(snap(body), snap(body), rules()) == Comparison(Outcome.MATCH)
    assert compare_http(snap(b"not json"), snap(b"not json"), rules()).outcome is Outcome.MATCH


def test_equal_after_parse_matches() -> None:
    result = compare_http(snap(b'{"a": 1, "b": [1]}'), snap(b'{"b":[1],"a":1}'), rules())
    assert result.outcome is Outcome.MATCH


def test_json_differences_are_prefixed_body() -> None:
    result = compare_http(
        snap(b'{"items": [{"e": "a"}]}'), snap(b'{"items": [{"e": "b"}]}'), rules()
    )
    assert result.differences == (Difference("body.items[0].e", "changed", "a", "b"),)
    root = compare_http(snap(b"[1]"), snap(b"[2]", headers=()), rules(max_diff_bytes=1))
    assert root.differences == (Difference("body", "summarised"),)


def test_rules_apply_to_the_body_root() -> None:
    result = compare_http(
        snap(b'{"updated_at": "1", "a": 1}'),
        snap(b'{"updated_at": "2", "a": 1}'),
        rules(ignore=("updated_at",)),
    )
    assert result.outcome is Outcome.MATCH


def test_json_by_content_type_even_for_scalars() -> None:
    result = compare_http(snap(b'"a"'), snap(b' "b"'), rules())
    assert result.differences == (Difference("body", "changed", "a", "b"),)


def test_non_json_bodies_compare_bytewise_with_previews() -> None:
    primary, shadow = b"hello " * 20, b"world"
    result = compare_http(snap(primary, headers=()), snap(shadow, headers=()), rules())
    assert result.outcome is Outcome.MISMATCH
    (difference,) = result.differences
    assert (difference.path, difference.kind) == ("body", "changed")
    digest = hashlib.sha256(primary).hexdigest()
    assert difference.primary == BodyPreview(120, "text", digest)
    assert difference.shadow == preview(shadow)
    assert str(difference.primary) == "120 bytes text"


def test_previews_never_hold_the_body() -> None:
    secret = b"<html><body>ssn 123-45-6789 a@example.com</body></html>"
    shown = preview(secret)
    assert shown.kind == "html"
    assert b"123-45" not in repr(shown).encode() and "example" not in str(shown)
    assert preview(b'{"email": "a@example.com", "ss').kind == "json (unparseable)"
    assert preview(bytes(range(256))).kind == "binary"
    assert preview("grüß".encode() * 200).kind == "text"  # a character cut at the sniff edge


def test_body_that_looks_like_json_but_is_not() -> None:
    result = compare_http(snap(b"{nope"), snap(b'{"a": 1}'), rules())
    assert [d.path for d in result.differences] == ["body"]
    empty = compare_http(snap(b""), snap(b"{}"), rules())
    assert empty.differences[0].primary == preview(b"")
    assert empty.differences[0].primary.kind == "empty"


def test_server_errors_are_errors_not_mismatches() -> None:
    down = compare_http(snap(b"<html>oops</html>", 503), snap(b"{}", 200), rules())
    assert (down.outcome, down.detail) == (Outcome.PRIMARY_ERROR, "primary answered 503")
    flapping = compare_http(snap(b"{}", 200), snap(b"{}", 502), rules())
    assert (flapping.outcome, flapping.detail) == (Outcome.SHADOW_ERROR, "shadow answered 502")
    both = compare_http(snap(b"{}", 500), snap(b"{}", 500), rules())
    assert both.outcome is Outcome.PRIMARY_ERROR
    assert compare_http(snap(b"{}", 404), snap(b"{}", 499), rules()).outcome is Outcome.MISMATCH


def test_server_errors_compared_when_asked() -> None:
    compared = rules(compare_server_errors=True)
    result = compare_http(snap(b"{}", 200), snap(b"{}", 500), compared)
    assert result.differences == (Difference("status", "changed", 200, 500),)
    assert compare_http(snap(b"{}", 503), snap(b"{}", 503), compared).outcome is Outcome.MATCH


def test_status() -> None:
    result = compare_http(snap(b"{}", 200), snap(b"{}", 404), rules())
    assert result.differences == (Difference("status", "changed", 200, 404),)
    assert compare_http(snap(b"{}", 200), snap(b"{}", 404), rules(compare_status=False)) == (
        Comparison(Outcome.MATCH)
    )


def test_allowlisted_headers_case_insensitively_and_in_order() -> None:
    primary = snap(b"", headers=(("ETag", "1"), ("vary", "a"), ("Vary", "b"), ("x-only-p", "p")))
    shadow = snap(b"", headers=(("etag", "2"), ("vary", "b"), ("vary", "a"), ("x-only-s", "s")))
    result = compare_http(
        primary, shadow, rules(headers=("etag", "Vary", "x-only-p", "x-only-s", "x-none"))
    )
    assert result.differences == (
        Difference("headers.etag", "changed", "1", "2"),
        Difference("headers.vary", "changed", ["a", "b"], ["b", "a"]),
        Difference("headers.x-only-p", "removed", "p", None),
        Difference("headers.x-only-s", "added", None, "s"),
    )


def test_headers_not_allowlisted_are_ignored() -> None:
    primary = snap(b"{}", headers=(("date", "a"),))
    assert compare_http(primary, snap(b"{}", headers=(("date", "b"),)), rules()).outcome is (
        Outcome.MATCH
    )


def test_body_over_cap_is_skipped() -> None:
    assert compare_http(snap(None), snap(b"{}"), rules()) == Comparison(
        Outcome.SKIPPED, detail="body over cap"
    )
    assert compare_http(snap(b"{}"), snap(None), rules()).outcome is Outcome.SKIPPED


def test_body_over_cap_with_a_status_difference_is_still_a_mismatch() -> None:
    result = compare_http(snap(None, 200), snap(None, 404), rules())
    assert result.outcome is Outcome.MISMATCH
    assert result.differences == (Difference("status", "changed", 200, 404),)
    assert result.detail == "body over cap, not compared"


def test_head_and_body_differences_together_are_capped() -> None:
    result = compare_http(
        snap(b'{"a": 1, "b": 1}', 200),
        snap(b'{"a": 2, "b": 2}', 201),
        rules(max_differences=2),
    )
    assert [d.path for d in result.differences] == ["status", "body.a"]
    assert result.detail == "1 more differences not shown (max_differences=2)"


def test_budget_summarises_bodies() -> None:
    budget = DiffBudget(per_second=0, burst=0)
    result = compare_http(snap(b'{"a": 1}'), snap(b'{"a": 2}'), rules(), budget=budget)
    assert result.summarised
    assert result.differences == (Difference("body.a", "summarised"),)
    assert result.detail == "structured diff skipped: diff budget exhausted"
    assert budget.summarised_total == 1


def test_past_the_cpu_budget_differing_bodies_are_not_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = DiffBudget(per_second=1, burst=1, cpu_share=0, cpu_burst_seconds=0)

    def boom(*args: object) -> None:
        raise AssertionError("parsed a body the budget cannot afford")

    monkeypatch.setattr(orjson, "loads", boom)
    assert compare_http(snap(b'{"a": 1}'), snap(b'{"a": 2}'), rules(), budget=budget) is UNJUDGED
    same = compare_http(snap(b'{"a": 1}'), snap(b'{"a": 1}'), rules(), budget=budget)
    assert same.outcome is Outcome.MATCH
    # A status that differs needs no parsing: still a mismatch, saying the body was not compared.
    result = compare_http(snap(b'{"a": 1}'), snap(b'{"a": 2}', 404), rules(), budget=budget)
    assert result.outcome is Outcome.MISMATCH
    assert [d.path for d in result.differences] == ["status"]
    assert result.detail == "body not compared: comparison CPU budget spent"
    assert budget.unjudged_total == 2


def test_bodies_equal_once_parsed_are_a_match_that_says_so() -> None:
    """Readiness counts them as judged differences (its estimate's sample), so they must be
    told from byte-equal ones; a head difference still makes a mismatch."""
    reordered = (snap(b'{"a": 1, "b": 2}'), snap(b'{ "b": 2, "a": 1 }'))
    assert compare_http(*reordered, rules()) is EQUAL_ONCE_PARSED
    assert EQUAL_ONCE_PARSED.outcome is Outcome.MATCH
    assert compare_http(snap(b'{"a": 1}'), snap(b'{"a": 1}'), rules()) is MATCH
    with_status = compare_http(snap(b'{"a": 1}'), snap(b'{"a":1}', 201), rules())
    assert with_status.outcome is Outcome.MISMATCH


def test_parsing_a_differing_body_is_charged_to_the_cpu_budget() -> None:
    # A still clock: the bucket never refills, so the charge shows.
    budget = DiffBudget(
        per_second=1, burst=1, cpu_share=0.5, cpu_burst_seconds=10, clock=lambda: 0.0
    )
    result = compare_http(snap(b'{"a": 1}'), snap(b'{"a": 2}'), rules(), budget=budget)
    assert result.outcome is Outcome.MISMATCH
    assert budget.cpu_seconds < 10
