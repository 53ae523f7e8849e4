"""The dashboard and the rules against a real Prometheus scraping real proxies.

Prometheus (scrape and rule evaluation every second, the repo's ``prometheus.yml`` and
``alerts.yml``) scrapes two shadowproxy instances driven with traffic:

- the HTTP drop-in, as ``shadowproxy serve --workers 2`` (so ``/metrics`` is the multiprocess
  sum): routes that match, mismatch, fail on the primary (5xx), cannot reach their shadow,
  have a shadow too slow for its queue (drops), or only summarise their diffs;
- store mode, in this process: dual writes to PostgreSQL and DynamoDB with a Redis cache and
  repair log, shadow reads with planted mismatches, a forced read flip the guardrail rolls
  back, a readiness verdict, and DynamoDB cut off for a while (failed second writes, then
  repairs).

Then every PromQL expression of the dashboard (panel targets, annotations, variables) and of
``alerts.yml`` (recording rules and alerts) goes through ``/api/v1/query``: each must be
valid, and each must return a finite value at some point, except the few in ``QUIET``, which
this traffic must leave empty; for those the metric names they use must be in Prometheus's
metadata of the scrape. A metric renamed in ``proxy/`` but not in ``dashboards/`` fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

import proxy
from proxy.tasks import spawn
from tests.integration.api.conftest import StoreProxyFactory, stores, user
from tests.integration.conftest import REDIS_URL
from tests.support import dashboards
from tests.support.dashboards import METRIC, RECORDED, Query, strip_strings
from tests.support.prometheus import BINARY, Prometheus, running_prometheus
from tests.support.servers import RunningProxy, Upstream, free_port
from tests.support.tcpproxy import CuttableLink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(BINARY is None, reason="no prometheus (scripts/services.sh installs it)"),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "live-dashboards"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Rate windows of 5 minutes rather than the unit checks' 1: the whole run fits in them, so a
# flip made early still shows in the flip annotation when the queries are evaluated.
VARIABLES = {**dashboards.GRAFANA_VARIABLES, "$__rate_interval": "5m", "$__interval": "5m"}
# How long the queries may take, all told, to return data: generous, never a speed check.
SETTLE_SECONDS = 300.0

# Expressions this traffic leaves empty on purpose, and why. Each must still be valid and
# name only metrics Prometheus scraped.
QUIET = {
    "panel 'Internal errors by operation' A": "nothing on the secondary path raises",
    "panel 'Dual-write failures' B": "the repair log (Redis) takes every failed write's key",
    "panel 'Cache lookups, invalidations and errors' C": "Redis, the cache, stays up",
    "alert ShadowproxyDown": "both targets are up",
    "alert ShadowproxyRepairLogNotEmpty": "the repairer empties the log within seconds",
    "alert ShadowproxyRepairLogGrowing": "the depth's 15m slope depends on when (may show)",
    "alert ShadowproxyRepairLogStuck": "no entry reaches max_attempts",
    "alert ShadowproxyRepairsFailing": "repairs fail only while DynamoDB is cut (may show)",
    "alert ShadowproxyRepairAppendFailures": "the repair log takes every key",
    "alert ShadowproxyRepairLogErrors": "the repair log never fails",
    "alert ShadowproxySinkErrors": "the mismatch sink (a file) never fails or fills",
    "alert ShadowproxyInternalErrors": "nothing on the secondary path raises",
    "alert ShadowproxyCacheErrors": "Redis, the cache, stays up",
    "alert ShadowproxyFlagStoreDown": "the flag stores (memory) are always up",
}
# Of those, the ones that may also return data, depending on when the outage fell.
MAYBE = {"alert ShadowproxyRepairsFailing", "alert ShadowproxyRepairLogGrowing"}


# ---------------------------------------------------------------- the HTTP drop-in


def _number(request: web.Request) -> int:
    return int(request.path.rsplit("/", 1)[-1])


def _person(n: int, name: str = "Ada") -> dict[str, Any]:
    return {"id": n, "name": name, "email": f"person{n}@example.com", "tags": ["a", "b"]}


async def _primary(request: web.Request) -> web.StreamResponse:
    n = _number(request)
    if request.path.startswith("/flaky/") and n % 2:
        return web.json_response({"error": "down"}, status=500)
    return web.json_response(_person(n))


async def _shadow(request: web.Request) -> web.StreamResponse:
    n = _number(request)
    if request.path.startswith("/slow/"):
        await asyncio.sleep(0.3)
    differs = request.path.startswith("/big/") or (
        request.path.startswith("/accounts/") and n % 5 == 0
    )
    return web.json_response(_person(n, "Grace" if differs else "Ada"))


def _http_config(tmp: Path, primary: str, shadow: str) -> tuple[Path, int, int]:
    port, admin, dead = free_port(), free_port(), free_port()
    fast = {"kind": "http", "timeout_seconds": 5, "connect_timeout_seconds": 0.5}
    routes = [
        {"name": "accounts", "path": "/accounts/*", "primary": "a", "shadow": "b"},
        {"name": "flaky", "path": "/flaky/*", "primary": "a", "shadow": "b"},
        {"name": "broken", "path": "/broken/*", "primary": "a", "shadow": "dead"},
        {"name": "slow", "path": "/slow/*", "primary": "a", "shadow": "b"},
        # Any diff is over the size cap: only the differing top-level fields are counted.
        {"name": "big", "path": "/big/*", "primary": "a", "shadow": "b",
         "compare": {"max_diff_bytes": 1}},
    ]  # fmt: skip
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "logging": {"format": "json", "access_log": False},
        "backends": {
            "a": {**fast, "url": primary},
            "b": {**fast, "url": shadow},
            "dead": {**fast, "url": f"http://127.0.0.1:{dead}"},  # nothing listens
        },
        "routes": routes,
        # Small per worker, so a burst to the slow shadow overflows it (queue_full drops);
        # a comparison CPU budget so small that most differences go unjudged (cpu_budget
        # skips) while a few are still judged every second (mismatches, summarised diffs).
        "shadow": {
            "queue_size": 2,
            "concurrency": 2,
            "compare_cpu_share": 0.0005,
            "compare_cpu_burst_seconds": 0.001,
        },
        "sink": {"kind": "jsonl", "path": str(tmp / "http-mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp / "http-audit.jsonl")},
    }
    path = tmp / "http.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, admin


@contextlib.asynccontextmanager
async def _serve_workers(config: Path, admin: int, log: Path) -> AsyncIterator[None]:
    """``shadowproxy serve --workers 2``, stopped by its PID (SIGTERM, which it forwards)."""
    process = _start_serve(config, log)
    try:
        await _until(lambda: _answers(f"http://127.0.0.1:{admin}/healthz"), 60, log)
        yield
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group it leads: its workers
                process.wait(timeout=10)


def _start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHADOWPROXY_REDACTION_KEY": "live-dashboards"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "-c", str(config), "--workers", "2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log is not None else ""


async def _answers(url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            return r.status == 200
    return False


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s {_tail(log)}")
        await asyncio.sleep(0.2)


async def _http_round(session: aiohttp.ClientSession, url: str, i: int) -> None:
    paths = [f"/accounts/{n}" for n in range(10)] + [f"/flaky/{n}" for n in range(4)]
    paths += [f"/broken/{i}", f"/big/{i}"]
    # One by one: a burst of these would overflow the small shadow queue too.
    statuses = [await _get(session, url + path) for path in paths]
    assert set(statuses) <= {200, 500}, statuses
    await asyncio.sleep(0.05)  # their shadows finish before the burst takes the queue
    burst = await asyncio.gather(*(_get(session, f"{url}/slow/{n}") for n in range(24)))
    assert set(burst) == {200}, burst


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        await r.read()
        return r.status


# ---------------------------------------------------------------- store mode

USERS = [user(i) for i in range(30)]
PLANTED = USERS[:10]  # DynamoDB holds another first_name for these


async def _store_proxy(
    store_proxy: StoreProxyFactory, link: CuttableLink, prefix: str
) -> RunningProxy:
    return await store_proxy(
        "postgres",
        env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN},
        dynamo_url=link.url,
        dynamo={"sdk_max_attempts": 1, "connect_timeout_seconds": 0.5, "timeout_seconds": 1},
        # A generous socket timeout: "the cache stays up" must not depend on how busy the
        # machine is (the default 0.25 s is what a loaded CI box can take for one reply).
        cache={"url": REDIS_URL, "prefix": f"{prefix}:cache", "socket_timeout_seconds": 5},
        repair={
            "kind": "redis",
            "url": REDIS_URL,
            "stream": f"{prefix}:repair",
            "interval_seconds": 0.2,
            "retry_after_seconds": 0.2,
            "late_write_seconds": 0.5,
        },
        resource={
            "new_store": "dynamodb",
            "cache_ttl_seconds": 2,
            "breaker_cooldown_seconds": 0.3,
            "secondary_write_timeout_seconds": 1,
            "guardrail": {
                "watch_seconds": 600,
                "min_comparisons": 5,
                "max_mismatch_rate": 0.1,
                "max_primary_error_rate": 0.5,
            },
        },
    )


async def _plant(proxy: RunningProxy, http: aiohttp.ClientSession) -> None:
    async with http.post(proxy.url + "/users/batch", json={"items": USERS}) as r:
        assert r.status == 200, await r.text()
    writer = proxy.apps.resources.services["users"].writes
    await proxy.wait_for(lambda: writer.pending == 0, timeout=60)
    schema = proxy.apps.resources.services["users"].schema
    for u in PLANTED:
        record = schema.validate(u, partial=False)
        await stores(proxy)["dynamodb"].put({**record, "first_name": "Planted"})


async def _store_round(session: aiohttp.ClientSession, url: str, i: int) -> None:
    reads = [USERS[(6 * i + k) % len(USERS)] for k in range(6)]
    calls = [_get(session, f"{url}/users/{u['id']}") for u in reads]
    calls.append(_get(session, f"{url}/users?email={USERS[i % len(USERS)]['email']}"))
    assert set(await asyncio.gather(*calls)) == {200}
    assert await _get(session, f"{url}/users/{reads[0]['id']}") == 200  # from the cache
    async with session.post(url + "/users", json=user(1000 + i)) as r:
        assert r.status == 201, await r.text()
    changed = USERS[20 + i % 10]  # never a planted one: a write would copy it over
    async with session.patch(f"{url}/users/{changed['id']}", json={"last_name": f"n{i}"}) as r:
        assert r.status == 200, await r.text()


async def _flag(http: aiohttp.ClientSession, proxy: RunningProxy, name: str, value: Any) -> None:
    body = {"value": value, "reason": "live dashboard test", "force": True}
    async with http.put(f"{proxy.admin_url}/flags/{name}", json=body, headers=AUTH) as r:
        assert r.status == 200, await r.text()


# ---------------------------------------------------------------- traffic


@dataclass
class Traffic:
    failures: list[BaseException] = field(default_factory=list)
    # Held by every store round: a phase holding it knows no store request is in flight.
    store: asyncio.Lock = field(default_factory=asyncio.Lock)


@contextlib.asynccontextmanager
async def _traffic(http_url: str, store_url: str) -> AsyncIterator[Traffic]:
    """Both proxies driven round after round until the block ends; what failed is kept."""
    traffic = Traffic()
    stop = asyncio.Event()

    async def store_round(session: aiohttp.ClientSession, i: int) -> None:
        async with traffic.store:
            await _store_round(session, store_url, i)

    async def drive() -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while not stop.is_set():
                done = await asyncio.gather(
                    _http_round(session, http_url, i), store_round(session, i),
                    return_exceptions=True,
                )  # fmt: skip
                traffic.failures.extend(e for e in done if isinstance(e, BaseException))
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.7)  # the slow shadows drain

    task = spawn(drive(), name="live-dashboard-traffic")
    try:
        yield traffic
    finally:
        stop.set()
        await task


# ---------------------------------------------------------------- Prometheus


def _prometheus_config(targets: list[str]) -> dict[str, Any]:
    """The repo's prometheus.yml with a 1 s interval, these targets and alerts.yml by path."""
    config = yaml.safe_load(dashboards.PROMETHEUS.read_text(encoding="utf-8"))
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s",
                        "evaluation_interval": "1s"}  # fmt: skip
    config["rule_files"] = [str(dashboards.DASHBOARDS / f) for f in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": targets, "labels": {"env": "test"}}]
    return config


def _queries() -> list[Query]:
    variables = [
        Query(f"variable {name}", f"count by ({label}) ({series})")
        for name, series, label in dashboards.variable_queries()
    ]
    return (
        dashboards.panel_queries()
        + dashboards.annotation_queries()
        + variables
        + dashboards.rule_queries()
    )


def _finite(series: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in series)


async def _returns_data(
    prom: Prometheus, session: aiohttp.ClientSession, expr: str, timeout: float
) -> None:
    async def check() -> bool:
        error, series = await prom.query(session, expr)
        assert error is None, error
        return _finite(series)

    await _until(check, timeout, prom.log)


def _names(expr: str) -> set[str]:
    """The metrics ``expr`` reads, through the recording rules it uses."""
    bare = strip_strings(expr)
    names = set(METRIC.findall(bare))
    for recorded in RECORDED.findall(bare):
        names |= _names(dashboards.recording_rules()[recorded])
    return names


def _families(name: str) -> set[str]:
    """The metadata names a series name may be listed under (text or OpenMetrics)."""
    out = {name}
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            out.add(name.removesuffix(suffix))
    return out


# ---------------------------------------------------------------- the test


async def test_every_dashboard_and_rule_expression_against_a_live_prometheus(
    dynamo_link: CuttableLink,
    store_proxy: StoreProxyFactory,
    http: aiohttp.ClientSession,
    prefix: str,
    tmp_path: Path,
) -> None:
    assert set(QUIET) <= {q.where for q in _queries()}, "QUIET names a query that is gone"
    primary = await Upstream(_primary).start()
    shadow = await Upstream(_shadow).start()
    config, http_port, http_admin = _http_config(tmp_path, primary.url, shadow.url)
    store = await _store_proxy(store_proxy, dynamo_link, prefix)
    await _plant(store, http)
    store_admin = store.admin_url.removeprefix("http://")
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    prom_config = _prometheus_config([f"127.0.0.1:{http_admin}", store_admin])
    try:
        async with (
            _serve_workers(config, http_admin, tmp_path / "serve.log"),
            running_prometheus(prom_config, prom_dir) as prom,
            _traffic(f"http://127.0.0.1:{http_port}", store.url) as traffic,
        ):
            await _until(lambda: _all_up(prom, http), 60, prom.log)
            await _drive_the_store_through_a_flip_and_an_outage(
                prom, store, http, dynamo_link, traffic
            )
            outcome = await _evaluate_everything(prom, http)
            metadata = await prom.api(http, "metadata")
            rules = await prom.api(http, "rules")
            created = await prom.query(http, 'count by (__name__) ({__name__=~".+_created"})')
            builds = await prom.query(http, "shadowproxy_build_info")
            processes = await prom.query(
                http, 'count by (instance) (process_cpu_seconds_total{job="shadowproxy"})'
            )
            openmetrics = await _scrape(http, store.admin_url, openmetrics=True)
        assert not traffic.failures, traffic.failures[:3]
    finally:
        dynamo_link.restore()
        await primary.stop()
        await shadow.stop()

    missing, noisy, invalid = outcome
    assert not invalid, invalid
    assert not missing, f"returned no data under traffic: {missing}"
    assert not noisy, f"allowed to be empty, but returned data every time: {noisy}"
    for query in _queries():
        if query.where not in QUIET:
            continue
        for name in _names(query.expr):
            assert _families(name) & set(metadata), f"{query.where}: {name} was never scraped"
    evaluated = [r for group in rules["groups"] for r in group["rules"]]
    assert len(evaluated) == len(dashboards.all_rules())
    assert {r["health"] for r in evaluated} == {"ok"}, [r for r in evaluated if r["health"] != "ok"]
    assert created == (None, []), created  # no *_created series, with workers or without
    assert "_created" not in openmetrics
    versions = {(s["metric"]["version"], s["metric"]["python"]) for s in builds[1]}
    assert versions == {(proxy.__version__, platform.python_version())}
    assert len(builds[1]) == 2  # one series per instance, also summed over the workers
    assert len(processes[1]) == 2


async def _all_up(prom: Prometheus, session: aiohttp.ClientSession) -> bool:
    error, series = await prom.query(session, 'up{job="shadowproxy"} == 1')
    assert error is None, error
    return len(series) == 2


async def _drive_the_store_through_a_flip_and_an_outage(
    prom: Prometheus,
    store: RunningProxy,
    http: aiohttp.ClientSession,
    link: CuttableLink,
    traffic: Traffic,
) -> None:
    # A readiness verdict (not ready: too few comparisons) sets shadowproxy_readiness_ready.
    async with http.get(store.admin_url + "/readiness?target=users", headers=AUTH) as r:
        assert r.status == 200, await r.text()
    await _returns_data(prom, http, 'shadowproxy_comparisons_total{outcome="mismatch"}', 120)
    # Reads flipped to DynamoDB mismatch on every planted user: the guardrail rolls back.
    # No store read until Prometheus has seen the flip, or it could miss it altogether.
    async with traffic.store:
        await _flag(http, store, "users.read_from", "dynamodb")
        flipped = 'shadowproxy_flag_state{target="users", flag="read_from", value="dynamodb"} == 1'
        await _returns_data(prom, http, flipped, 120)
    await store.wait_for(
        lambda: store.value("shadowproxy_guardrail_rollbacks_total", target="users") == 1,
        timeout=120,
        interval=0.1,
    )
    assert store.apps.flag_store.snapshot().resources["users"].read_from == "postgres"
    # DynamoDB cut off: second writes fail (their keys go to the repair log) until
    # Prometheus has seen the failures grow; then it is back and the keys are repaired.
    link.cut()
    try:
        await _returns_data(
            prom, http, "sum(increase(shadowproxy_dual_write_failures_total[5m])) > 0", 120
        )
    finally:
        link.restore()
    await store.wait_for(
        lambda: (
            store.value("shadowproxy_repairs_total", resource="users", result="repaired") > 0
            and store.value("shadowproxy_repair_log_depth") == 0
        ),
        timeout=120,
        interval=0.1,
    )


async def _evaluate_everything(
    prom: Prometheus, session: aiohttp.ClientSession
) -> tuple[list[str], list[str], list[str]]:
    """``(no data, data though QUIET, invalid)``, evaluating every query once a second until
    each has answered as expected once (traffic goes on, but windows move) or time is up."""
    pending = {q.where: dashboards.render(q.expr, VARIABLES) for q in _queries()}
    invalid: list[str] = []
    deadline = time.monotonic() + SETTLE_SECONDS
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            error, series = await prom.query(session, expr)
            if error is not None:
                invalid.append(f"{where}: {error}")
            elif not _as_expected(where, series):
                continue
            del pending[where]
        await asyncio.sleep(1.0)
    return (
        sorted(w for w in pending if w not in QUIET),
        sorted(w for w in pending if w in QUIET),
        invalid,
    )


def _as_expected(where: str, series: list[dict[str, Any]]) -> bool:
    if where in MAYBE:
        return True
    return not series if where in QUIET else _finite(series)


async def _scrape(session: aiohttp.ClientSession, admin_url: str, *, openmetrics: bool) -> str:
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    async with session.get(admin_url + "/metrics", headers={"Accept": accept}) as r:
        assert r.status == 200
        return await r.text()
