"""The live parts of a report, each optional: a running instance's counters (``GET
/metrics`` on its admin port) or Prometheus' (instant queries of increases over the window),
and the instance's readiness verdicts (``GET /readiness``, with the admin token). A source
that cannot be reached comes back as an unavailable ``Source`` saying why; it never fails the
report."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from proxy.cli_admin import AdminClient, AdminError
from proxy.report.counters import (
    COMPARISONS,
    FIELDS,
    LATENCY_BUCKETS,
    PARSED,
    SKIPS,
    Counters,
    from_exposition,
)
from proxy.report.model import Source, Window
from proxy.settings import Settings

TIMEOUT = 10.0
INSTANCE_SPAN = "totals since the instance started (not limited to the window)"


def admin_url(settings: Settings, url: str | None) -> str:
    host = settings.admin.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return (url or f"http://{host}:{settings.admin.port}").rstrip("/")


def _get(url: str, token: str = "") -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return bytes(response.read())


def _why(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def instance_counters(settings: Settings, url: str | None) -> tuple[Counters, Source]:
    where = admin_url(settings, url) + "/metrics"
    token = os.environ.get(settings.admin.token_env, "")
    try:
        text = _get(where, token).decode("utf-8", "replace")
        counters = from_exposition(text)
    except (OSError, ValueError) as e:
        why = f"cannot read the instance's counters: {_why(e)}"
        return Counters(), Source("instance", where, False, why, INSTANCE_SPAN)
    return counters, Source("instance", where, True, None, INSTANCE_SPAN)


QUERIES = (
    (COMPARISONS, "sum by (route, operation, outcome) (increase({name}{{{match}}}[{range}]))"),
    (LATENCY_BUCKETS, "sum by (route, role, backend, le) (increase({name}{{{match}}}[{range}]))"),
    (FIELDS, "sum by (route, field) (increase({name}{{{match}}}[{range}]))"),
    (SKIPS, "sum by (route, reason) (increase({name}{{{match}}}[{range}]))"),
    (PARSED, "sum by (route) (increase({name}{{{match}}}[{range}]))"),
)


def prometheus_counters(base: str, win: Window, target: str | None) -> tuple[Counters, Source]:
    """Each family as an instant query at the window's end over the whole window."""
    base = base.rstrip("/")
    span = f"increases over the window from Prometheus ({_range(win)})"
    match = "" if target is None else f"route={json.dumps(target)}"
    counters = Counters()
    try:
        for name, template in QUERIES:
            query = template.format(name=name, match=match, range=_range(win))
            for item in _instant(base, query, win.end):
                labels = {k: str(v) for k, v in item["metric"].items()}
                counters.add(name, labels, _number(item["value"][1]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"cannot query Prometheus: {_why(e)}"
        return Counters(), Source("prometheus", base, False, why, span)
    return counters, Source("prometheus", base, True, None, span)


def _range(win: Window) -> str:
    return f"{max(1, math.ceil(win.seconds))}s"


def _number(text: Any) -> float:
    value = float(text)
    return value if math.isfinite(value) else 0.0


def _instant(base: str, query: str, at: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    try:
        body = json.loads(_get(f"{base}/api/v1/query?{params}"))
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = e.reason
        raise ValueError(f"HTTP {e.code}: {message} (query {query})") from e
    if body.get("status") != "success":
        raise ValueError(f"{body.get('error', 'query failed')} (query {query})")
    if body["data"]["resultType"] != "vector":
        raise ValueError(f"expected a vector for {query}")
    return list(body["data"]["result"])


def noise(settings: Settings, url: str | None) -> dict[str, Any]:
    """``GET /noise`` of the instance: route -> learned noise; {} when no route has a noise
    backend or the instance cannot be asked (the report then shows none)."""
    if not any(r.noise is not None for r in settings.routes):
        return {}
    try:
        client = AdminClient.from_settings(settings, admin_url(settings, url))
        data = client.call("GET", "/noise")
    except (AdminError, ValueError):
        return {}
    routes = data.get("routes") if isinstance(data, dict) else None
    return routes if isinstance(routes, dict) else {}


def readiness(settings: Settings, url: str | None) -> tuple[dict[str, Any], Source]:
    """``GET /readiness`` of the instance: ``{"verdicts": [...], "stop_old_writes": [...]}``."""
    where = admin_url(settings, url) + "/readiness"
    try:
        client = AdminClient.from_settings(settings, admin_url(settings, url))
        data = client.call("GET", "/readiness")
    except (AdminError, ValueError) as e:
        return {}, Source("instance", where, False, f"readiness not known: {e}")
    if not isinstance(data, dict):
        return {}, Source("instance", where, False, "readiness not known: not a JSON object")
    return data, Source("instance", where, True)
