"""Answers as a corpus keeps them, and live answers made comparable with them: redacted
(values of sensitive names as keyed hashes, a body that is not JSON as its size, kind and a
keyed digest), then written and read back as JSON, so both sides of a comparison took the
same path and a sensitive value is equal exactly when its hash is."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from comparators import HttpSnapshot, Redactor
from comparators.http import preview
from comparators.markers import Drifted
from proxy.store import exactjson

NEVER_KEPT = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


def http_answer(
    snapshot: HttpSnapshot, headers: Iterable[str], redactor: Redactor
) -> dict[str, Any]:
    """``{"status", "headers": [[name, value], ...], "json" | "preview"}``: only the headers
    the route compares."""
    names = {h.lower() for h in headers} - NEVER_KEPT
    kept = [
        [name, redactor.value(value) if redactor.is_sensitive(name) else value]
        for name, value in snapshot.headers
        if name in names
    ]
    return {"status": snapshot.status, "headers": kept, **_body(snapshot, redactor)}


def _body(snapshot: HttpSnapshot, redactor: Redactor) -> dict[str, Any]:
    body = snapshot.body or b""
    content_type = next((v for k, v in snapshot.headers if k == "content-type"), "")
    if body.lstrip()[:1] in (b"{", b"[") or "json" in content_type.lower():
        try:
            return {"json": plain(exactjson.loads(body), redactor)}
        except exactjson.JSONDecodeError:
            pass
    return {"preview": redactor.tree(preview(body))}


def snapshot_of(answer: Mapping[str, Any]) -> HttpSnapshot:
    """The answer a corpus recorded, as ``compare_http`` takes it."""
    headers = tuple((str(k).lower(), str(v)) for k, v in answer.get("headers") or ())
    if "json" in answer:
        body = exactjson.dumps(answer["json"])
    else:
        body = str(answer.get("preview", "")).encode()
    return HttpSnapshot(int(answer["status"]), headers, body)


def comparable(snapshot: HttpSnapshot, headers: Iterable[str], redactor: Redactor) -> HttpSnapshot:
    """A live answer made as a corpus would have recorded it (a body over the cap stays
    None: not compared)."""
    made = snapshot_of(http_answer(snapshot, headers, redactor))
    return made if snapshot.body is not None else HttpSnapshot(made.status, made.headers, None)


def plain(value: Any, redactor: Redactor) -> Any:
    """``value`` redacted, written and read back as JSON: a drifted value becomes the report
    form ``{"malformed": raw, "reason": why}``, its raw value redacted too."""

    def drifted(item: Any) -> Any:
        if isinstance(item, Drifted):
            return {"malformed": redactor.tree(item.raw), "reason": item.reason}
        return str(item)

    return exactjson.loads(exactjson.dumps(redactor.tree(value), default=drifted))
