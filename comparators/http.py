"""``compare_http``: status, allowlisted headers, then the body (JSON-aware when it parses).

Paths: ``status``, ``headers.<lower-cased name>``, ``body`` / ``body.items[2].email``.
A header's values are a string when it came once, else the list of values in order.
A non-JSON body that differs is one ``changed`` difference at ``body`` whose values are
:class:`BodyPreview` s (size, kind, digest: never the bytes, which may hold PII).

Bodies that differ in bytes are parsed and compared only while the budget's comparison CPU
lasts (``DiffBudget(cpu_share=...)``); past it the body is not judged: the outcome is
``skipped`` (:data:`~comparators.comparison.UNJUDGED`), or a ``mismatch`` of status and headers
alone when those already differ. Bodies that differ in bytes and are equal once parsed (key
order, spacing) are a match, :data:`EQUAL_ONCE_PARSED`: with the mismatches it is the sample
of judged differences that readiness estimates from when some were not judged.

Unless ``rules.compare_server_errors``, a 5xx is not compared at all: the primary's makes the
outcome ``primary_error``, the shadow's (against a primary below 500) ``shadow_error``.
"""

from __future__ import annotations

import hashlib
import re

import orjson

from comparators.budget import DiffBudget
from comparators.comparison import (
    MATCH,
    NO_DIFFERENCES,
    UNJUDGED,
    UNJUDGED_DETAIL,
    Partial,
    compare_values,
    finish,
)
from comparators.model import BodyPreview, Comparison, Difference, HttpSnapshot, Outcome
from comparators.rules import Rules

BODY = "body"
SNIFF_BYTES = 512
OVER_CAP = Comparison(Outcome.SKIPPED, detail="body over cap")
EQUAL_ONCE_PARSED = Comparison(Outcome.MATCH, detail="bodies differ in bytes, equal once parsed")
_JSON_START = re.compile(rb"\s*[\[{]")
_NOT_JSON: object = object()


def compare_http(
    primary: HttpSnapshot, shadow: HttpSnapshot, rules: Rules, *, budget: DiffBudget | None = None
) -> Comparison:
    """Compare two HTTP answers under ``rules``.

    Byte-equal bodies are never parsed. When a body is ``None`` (over the proxy's cap) the
    comparison is ``SKIPPED`` unless status or headers already differ: that is a ``MISMATCH``
    whose detail says the body was not compared.
    """
    if not rules.compare_server_errors:
        if primary.status >= 500:
            return Comparison(Outcome.PRIMARY_ERROR, detail=f"primary answered {primary.status}")
        if shadow.status >= 500:
            return Comparison(Outcome.SHADOW_ERROR, detail=f"shadow answered {shadow.status}")
    head = _head_differences(primary, shadow, rules)
    if primary.body is None or shadow.body is None:
        if not head:
            return OVER_CAP
        found = Partial(head, len(head), reason="body over cap, not compared")
        return finish(found, rules)
    body = NO_DIFFERENCES
    differed = primary.body != shadow.body
    if differed:
        bodies = (primary, shadow, primary.body, shadow.body, rules, budget)
        if budget is None:
            body = _compare_bodies(*bodies)
        elif budget.may_compare():
            body = budget.spend(lambda: _compare_bodies(*bodies))
        elif not head:
            return UNJUDGED
        else:
            return finish(Partial(head, len(head), reason="body " + UNJUDGED_DETAIL), rules)
    if not head and body is NO_DIFFERENCES:
        return EQUAL_ONCE_PARSED if differed else MATCH
    found = Partial(head + body.differences, len(head) + body.total, body.summarised, body.reason)
    return finish(found, rules)


def preview(body: bytes) -> BodyPreview:
    return BodyPreview(len(body), _kind(body), hashlib.sha256(body).hexdigest())


def _kind(body: bytes) -> str:
    if not body:
        return "empty"
    start = body[:SNIFF_BYTES]
    if _JSON_START.match(start):
        return "json (unparseable)"
    if b"<html" in start.lower() or start.lstrip()[:9].lower() == b"<!doctype":
        return "html"
    try:
        start.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(start) - 3:  # not just a character cut at the sniff boundary
            return "binary"
    return "text" if b"\x00" not in start else "binary"


def _head_differences(
    primary: HttpSnapshot, shadow: HttpSnapshot, rules: Rules
) -> tuple[Difference, ...]:
    found: list[Difference] = []
    if rules.compare_status and primary.status != shadow.status:
        found.append(Difference("status", "changed", primary.status, shadow.status))
    for name in rules.headers:
        ours, theirs = _header(primary, name), _header(shadow, name)
        if ours != theirs:
            kind = "added" if not ours else "removed" if not theirs else "changed"
            found.append(Difference(f"headers.{name}", kind, _shown(ours), _shown(theirs)))
    return tuple(found)


def _header(snapshot: HttpSnapshot, name: str) -> list[str]:
    return [value for key, value in snapshot.headers if key.lower() == name]


def _shown(values: list[str]) -> str | list[str] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _compare_bodies(
    primary: HttpSnapshot,
    shadow: HttpSnapshot,
    primary_body: bytes,
    shadow_body: bytes,
    rules: Rules,
    budget: DiffBudget | None,
) -> Partial:
    ours, theirs = _json(primary, primary_body), _json(shadow, shadow_body)
    if ours is _NOT_JSON or theirs is _NOT_JSON:
        change = Difference(BODY, "changed", preview(primary_body), preview(shadow_body))
        return Partial((change,), 1)
    return compare_values(ours, theirs, rules, budget=budget, prefix=BODY, charged=True)


def _json(snapshot: HttpSnapshot, body: bytes) -> object:
    if not (_JSON_START.match(body) or "json" in _content_type(snapshot)):
        return _NOT_JSON
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _content_type(snapshot: HttpSnapshot) -> str:
    for key, value in snapshot.headers:
        if key.lower() == "content-type":
            return value.lower()
    return ""
