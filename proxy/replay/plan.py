"""From mismatch records to cases: one case per distinct request, and for each whether it
can be re-sent faithfully. A record is redacted (query values of sensitive names hashed,
no headers, no body): a request whose redacted or unrecorded parts matter is *not
replayable*, with the reason, rather than sent with a hash in place of its value."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import parse_qsl

from comparators import Redactor
from comparators.redact import PREFIX
from proxy.errors import ConfigError
from proxy.replay.model import SAFE_METHODS, Case, Request
from proxy.replay.records import Keep, Record
from proxy.settings import Settings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
STORE_READS = frozenset({"get", "lookup", "list"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` in seconds (as argparse ``type=``)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration such as 30m, 24h or 7d, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def keep_filter(settings: Settings, target: str | None, since: float | None) -> Keep:
    """Records of ``target`` (a route or resource) newer than ``since`` seconds ago, except
    those of outcome ``noise`` (docs/noise.md)."""
    if target is not None and target not in _targets(settings):
        known = ", ".join(sorted(_targets(settings))) or "none"
        raise ConfigError(f"--route/--resource {target!r}: not in the config (known: {known})")
    cutoff = None if since is None else time.time() - since

    def keep(record: Record) -> bool:
        if record.get("outcome") == "noise":  # only learned noise differed: nothing to fix
            return False
        if target is not None and _target(record) != target:
            return False
        return cutoff is None or _epoch(record.get("time")) >= cutoff

    return keep


def _targets(settings: Settings) -> set[str]:
    return {r.name for r in settings.routes} | set(settings.resources)


def _target(record: Record) -> str:
    resource = record.get("resource")
    return resource if isinstance(resource, str) and resource else str(record["route"])


def _epoch(value: object) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def request_of(record: Record) -> Request:
    resource = record.get("resource")
    requester = record.get("requester")
    method = str(record["method"]).upper()
    return Request(
        kind="store" if isinstance(resource, str) and resource else "http",
        target=_target(record),
        method=method,
        path=str(record["path"]),
        operation=str(record.get("operation") or method),
        requester=requester if isinstance(requester, str) else None,
    )


def plan(
    records: Iterable[Record], settings: Settings, redactor: Redactor, *, allow_unsafe: bool
) -> list[Case]:
    """One case per distinct request (in the order first seen), with why it cannot be
    replayed when it cannot."""
    groups: dict[Request, list[Record]] = {}
    for record in records:
        groups.setdefault(request_of(record), []).append(record)
    cases = []
    for request, group in groups.items():
        ids = dict.fromkeys(str(r.get("request_id") or "") for r in group)
        cases.append(
            Case(
                request,
                records=len(group),
                request_ids=tuple(i for i in ids if i)[:20],
                unreplayable=unreplayable(request, settings, redactor, allow_unsafe=allow_unsafe),
            )
        )
    return cases


def unreplayable(
    request: Request, settings: Settings, redactor: Redactor, *, allow_unsafe: bool
) -> str | None:
    """Why ``request`` cannot be re-sent as it was, or None."""
    if request.kind == "store":
        return _store_reason(request, settings, redactor)
    if request.target not in {r.name for r in settings.routes}:
        return f"route {request.target!r} is not in the config"
    if not request.path.startswith("/"):
        return "no request path in the record"
    if request.method not in SAFE_METHODS and not allow_unsafe:
        return f"{request.method} is not idempotent: re-sent only with --allow-unsafe"
    if request.method in BODY_METHODS:
        return f"the body of a {request.method} is not recorded"
    return _redacted(request.path, redactor)


def _store_reason(request: Request, settings: Settings, redactor: Redactor) -> str | None:
    if request.target not in settings.resources:
        return f"resource {request.target!r} is not in the config"
    if request.operation == "write_verify":
        return (
            "a write_verify comparison names no request: compare its key with "
            "'shadowproxy verify --keys'"
        )
    if request.operation == "batch_get":
        return "the keys of a batch get are in its body, which is not recorded"
    if request.operation not in STORE_READS or request.method != "GET":
        return f"{request.method} {request.operation}: only reads are replayed in store mode"
    return _redacted(request.path, redactor)


def _redacted(path: str, redactor: Redactor) -> str | None:
    _, sep, query = path.partition("?")
    if not sep:
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if redactor.is_sensitive(name) or value.startswith(PREFIX):
            return f"the query value of {name!r} is redacted in the record"
    return None
