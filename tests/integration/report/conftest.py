"""Mismatch records for ``shadowproxy report``, written as ``serve`` writes them: experiments
published by the real ``Publisher`` (which redacts) into the real sinks (``make_sink``: the
JSON-lines file or the Redis stream), with sensitive values planted in them; and a running
proxy in front of two real HTTP services that disagree, for the live counters and verdicts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from comparators.model import Comparison, Difference, Outcome
from proxy import cli
from proxy.experiment.publish import Experiment, Publisher
from proxy.experiment.sinks import make_sink
from proxy.metrics import Metrics
from proxy.settings import Settings, settings_from_mapping
from proxy.shared import redactor
from tests.support.servers import RunningProxy, Upstream, start_proxy

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "docs" / "report.schema.json"
TOKEN = "report-admin-t0ken-never-shown"
KEY = "report-redaction-key"
ENV = {"SHADOWPROXY_ADMIN_TOKEN": TOKEN, "SHADOWPROXY_REDACTION_KEY": KEY}

# Every one of these is planted in the test data and must never appear in a report.
EMAIL_OLD = "ada.lovelace@example.com"
EMAIL_NEW = "ada.byron@example.org"
QUERY_EMAIL = "grace.hopper@example.com"
TOKEN_VALUE = "tok-5up3r-s3cr3t-value"
PHONE_OLD = "+44 20 7946 0018"
PHONE_NEW = "+44 20 7946 0019"
KEYED_EMAIL = "alan.turing@example.com"
NESTED_SSN = "078-05-1120"
LEGACY_PASSWORD = "hunter2-in-clear"
LEGACY_EMAIL = "clear.legacy@example.net"
SECRETS = (
    EMAIL_OLD, EMAIL_NEW, QUERY_EMAIL, TOKEN_VALUE, PHONE_OLD, PHONE_NEW, KEYED_EMAIL,
    NESTED_SSN, LEGACY_PASSWORD, LEGACY_EMAIL, TOKEN,
)  # fmt: skip


def base_config(sink: dict[str, Any]) -> dict[str, Any]:
    """Two shadowed HTTP routes and one without a shadow."""
    return {
        "backends": {
            "legacy": {"kind": "http", "url": "http://127.0.0.1:9", "timeout_seconds": 5},
            "modern": {"kind": "http", "url": "http://127.0.0.1:9", "timeout_seconds": 5},
        },
        "routes": [
            {"name": "users-get", "path": "/users/*", "methods": ["GET"],
             "primary": "legacy", "shadow": "modern"},
            {"name": "orders-get", "path": "/orders/*", "methods": ["GET"],
             "primary": "legacy", "shadow": "modern"},
            {"name": "health", "path": "/health", "methods": ["GET"], "primary": "legacy"},
        ],
        "sink": sink,
        "readiness": {"min_comparisons": 10},
    }  # fmt: skip


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def users_experiment(i: int) -> Experiment:
    differences = (
        Difference("body.email", "changed", EMAIL_OLD, EMAIL_NEW),
        Difference("body.session", "changed", {"token": TOKEN_VALUE, "n": 1}, {"n": 2}),
        Difference(f'body.contacts[email="{KEYED_EMAIL}"].phone', "changed", PHONE_OLD, PHONE_NEW),
        Difference(f"body.items[{i}].profile", "changed", {"ssn": NESTED_SSN, "age": 36}, None),
        Difference("body.name", "changed", "Ada <b>|</b>", "Ada `x`"),
    )
    return Experiment(
        route="users-get",
        operation="GET",
        method="GET",
        path=f"/users/{i}?email={QUERY_EMAIL}&page=2",
        request_id=f"req-users-{i}",
        requester=None,
        primary_status=200,
        shadow_status=200,
        primary_seconds=0.0012,
        shadow_seconds=0.0034,
        comparison=Comparison(Outcome.MISMATCH, differences),
    )


def orders_experiment(i: int) -> Experiment:
    return Experiment(
        route="orders-get",
        operation="GET",
        method="GET",
        path=f"/orders/{i}",
        request_id=f"req-orders-{i}",
        requester=None,
        primary_status=200,
        shadow_status=200,
        primary_seconds=0.002,
        shadow_seconds=0.001,
        comparison=Comparison(Outcome.MISMATCH, (Difference("body.total", "changed", 10, 11),)),
    )


def legacy_record(minutes_ago: float) -> dict[str, Any]:
    """A record as an older writer may have left it: sensitive values in clear."""
    return {
        "time": iso(time.time() - minutes_ago * 60),
        "route": "users-get",
        "operation": "GET",
        "method": "GET",
        "path": f"/users/legacy?email={LEGACY_EMAIL}",
        "request_id": "req-legacy",
        "outcome": "mismatch",
        "primary_status": 200,
        "shadow_status": 200,
        "primary_ms": 1.5,
        "shadow_ms": 2.5,
        "summarised": False,
        "detail": "",
        "differences": [
            {"path": "body.password", "kind": "changed", "primary": LEGACY_PASSWORD,
             "shadow": None},
            {"path": "body.owner", "kind": "changed", "primary": {"email": LEGACY_EMAIL},
             "shadow": {"email": None}},
        ],
    }  # fmt: skip


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@dataclass(frozen=True)
class Planted:
    """What was written: records per route inside the window, and outside it."""

    users: int
    orders: int
    legacy: int
    old: int


async def plant(settings: Settings, *, minutes: list[float] | None = None) -> Planted:
    """Publish mismatches through the real Publisher into the configured sink: users-get
    records spread over the last hours (``minutes`` ago), orders-get ones now, one legacy
    record in clear and two records older than a day (outside a 24h window)."""
    metrics = Metrics.create(CollectorRegistry())
    sink = make_sink(settings.sink, metrics)
    publisher = Publisher(metrics=metrics, sink=sink, redactor=redactor(settings, ENV))
    spread = minutes if minutes is not None else [5, 5, 65, 130, 130, 130, 600]
    for i, ago in enumerate(spread):
        record = publisher.record(users_experiment(i))
        sink.submit({**record, "time": iso(time.time() - ago * 60)})
    for i in range(3):
        publisher.publish(orders_experiment(i))
    sink.submit(legacy_record(20))
    for i in range(2):
        record = publisher.record(users_experiment(100 + i))
        sink.submit({**record, "time": iso(time.time() - 30 * 3600)})
    await sink.close()
    return Planted(users=len(spread) + 1, orders=3, legacy=1, old=2)


def run_report(*argv: str) -> int:
    return cli.main(["report", *argv])


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} is in the report"
    # JSON and HTML may escape characters: look for the unescaped bodies too
    assert "hunter2" not in text
    assert "lovelace" not in text and "turing" not in text and "hopper" not in text


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def report_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    yield


# --- a running instance ----------------------------------------------------------------------

USERS_DIFFER_EVERY = 4  # users/<n> with n % 4 == 0 differ


async def legacy_answer(request: web.Request) -> web.Response:
    n = int(request.path.rsplit("/", 1)[1])
    return web.json_response({"id": n, "email": EMAIL_OLD, "name": "Ada", "total": 10})


async def modern_answer(request: web.Request) -> web.Response:
    n = int(request.path.rsplit("/", 1)[1])
    if request.path.startswith("/users/") and n % USERS_DIFFER_EVERY == 0:
        await asyncio.sleep(0.003)
        return web.json_response({"id": n, "email": EMAIL_NEW, "name": "Ada L.", "total": 10})
    return web.json_response({"id": n, "email": EMAIL_OLD, "name": "Ada", "total": 10})


@dataclass
class Instance:
    proxy: RunningProxy
    raw: dict[str, Any]
    users: int = 0
    orders: int = 0

    @property
    def mismatches(self) -> int:
        return len([n for n in range(self.users) if n % USERS_DIFFER_EVERY == 0])

    async def drive(self, users: int, orders: int) -> None:
        """``users`` more GETs of users-get, ``orders`` of orders-get; returns when every
        comparison is counted and every mismatch record written."""
        paths = [f"/users/{n}?email={QUERY_EMAIL}" for n in range(self.users, self.users + users)]
        paths += [f"/orders/{n}" for n in range(self.orders, self.orders + orders)]
        async with aiohttp.ClientSession() as client:
            for path in paths:
                async with client.get(self.proxy.url + path) as response:
                    assert response.status == 200
        self.users += users
        self.orders += orders
        proxy, compared = self.proxy, {"route": "users-get", "operation": "GET"}
        await proxy.wait_for(
            lambda: (
                proxy.value("shadowproxy_comparisons_total", **compared, outcome="match")
                + proxy.value("shadowproxy_comparisons_total", **compared, outcome="mismatch")
                == self.users
            )
        )
        written = {"sink": self.raw["sink"]["kind"], "result": "written"}
        await proxy.wait_for(
            lambda: proxy.value("shadowproxy_sink_records_total", **written) >= self.mismatches
        )


@contextlib.asynccontextmanager
async def running_instance(
    sink: dict[str, Any], users: int = 24, orders: int = 6
) -> AsyncIterator[Instance]:
    """A proxy with the two routes in front of real services that disagree on every fourth
    user, driven with ``users`` and ``orders`` requests."""
    legacy = await Upstream(legacy_answer).start()
    modern = await Upstream(modern_answer).start()
    raw = base_config(sink)
    raw["backends"]["legacy"]["url"] = legacy.url
    raw["backends"]["modern"]["url"] = modern.url
    proxy = await start_proxy(raw, env=ENV)
    try:
        instance = Instance(proxy, raw)
        await instance.drive(users, orders)
        raw["admin"] = {"port": 1}  # the report gets --admin-url; nothing listens here
        yield instance
    finally:
        await proxy.stop()
        await legacy.stop()
        await modern.stop()


def config_for(tmp_path: Path, raw: dict[str, Any]) -> str:
    return str(write_config(tmp_path / "report.yaml", raw))


def parse(raw: dict[str, Any]) -> Settings:
    return settings_from_mapping(raw, env=dict(os.environ))
