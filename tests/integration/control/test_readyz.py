"""``GET /readyz`` on a live admin port, with the real PostgreSQL and the moto DynamoDB
endpoint behind cuttable links: ready with the stores up, 503 naming the store a resource
reads from when it is unreachable (and ready again once it is back), still ready when only
the shadow store is gone, 503 when a Redis flag store was never reached; no token needed, no
secret in the body, and at most one round of store checks a second. An admin port bound to
0.0.0.0 keeps the token rule."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from proxy.app import build
from proxy.control.readyz import READYZ, Probe, Readyz
from proxy.resources.admin_ops import init_stores
from proxy.settings import settings_from_mapping
from tests.support.servers import RunningProxy, free_port, start_proxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration

TOKEN = "readyz-admin-token-0123456789"
PASSWORD = "pg-secret-password-9876"  # in the DSN; the local PostgreSQL trusts loopback
USERS: dict[str, Any] = {
    "prefix": "/users",
    "key": "id",
    "fields": {
        "id": {"type": "uuid"},
        "email": {"type": "string", "required": True, "nullable": False},
    },
}


@pytest.fixture
async def pg_link() -> AsyncIterator[CuttableLink]:
    link = await CuttableLink("127.0.0.1", 5432).start()
    yield link
    await link.stop()


@pytest.fixture
async def dynamo_link(moto_endpoint: str) -> AsyncIterator[CuttableLink]:
    target = urlparse(moto_endpoint)
    link = await CuttableLink(target.hostname or "127.0.0.1", target.port or 80).start()
    yield link
    await link.stop()


Factory = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def store_proxy(
    pg_link: CuttableLink, dynamo_link: CuttableLink, tmp_path: Any
) -> AsyncIterator[Factory]:
    started: list[RunningProxy] = []

    async def make(**extra: Any) -> RunningProxy:
        table = f"readyz_{uuid.uuid4().hex[:10]}"
        raw: dict[str, Any] = {
            "backends": {
                "pg": {
                    "kind": "postgres",
                    "dsn": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg_link.port}/test",
                    "pool_max": 2,
                    "connect_timeout_seconds": 0.5,
                },
                "ddb": {
                    "kind": "dynamodb",
                    "endpoint_url": dynamo_link.url,
                    "region": "us-east-1",
                    "max_attempts": 1,
                    "connect_timeout_seconds": 0.5,
                },
            },
            "resources": {
                "users": {
                    **USERS,
                    "stores": {
                        "postgres": {"backend": "pg", "table": table},
                        "dynamodb": {"backend": "ddb", "table": table},
                    },
                    "flags": {"read_from": "postgres", "write_to": ["postgres", "dynamodb"]},
                    "write_verify": 0,
                }
            },
            "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
            **extra,
        }
        proxy = await start_proxy(raw, env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN})
        await init_stores(proxy.settings)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


async def readyz(proxy: RunningProxy) -> tuple[int, dict[str, Any], str]:
    async with (
        aiohttp.ClientSession() as http,  # no token, no cookie
        http.get(f"{proxy.admin_url}/readyz") as response,
    ):
        text = await response.text()
        assert response.content_type == "application/json"
        return response.status, await response.json(), text


async def until_status(proxy: RunningProxy, status: int) -> tuple[dict[str, Any], str]:
    deadline = time.monotonic() + 10
    while True:
        got, body, text = await readyz(proxy)
        if got == status:
            return body, text
        assert time.monotonic() < deadline, f"/readyz stayed {got}: {body}"
        await asyncio.sleep(0.2)


def no_secret(text: str, proxy: RunningProxy) -> None:
    for secret in (TOKEN, PASSWORD, "postgresql://", str(urlparse(proxy.admin_url).port)):
        assert secret not in text


async def test_ready_with_the_stores_up_and_no_token(store_proxy: Factory) -> None:
    proxy = await store_proxy()

    status, body, text = await readyz(proxy)

    assert status == 200, body
    assert body["status"] == "ready" and body["not_ready"] == []
    assert body["checks"] == {
        "flags": {"ok": True, "required": True, "detail": None},
        "store:users.postgres": {"ok": True, "required": True, "detail": None},
        "store:users.dynamodb": {"ok": True, "required": False, "detail": None},
    }
    no_secret(text, proxy)
    # The guarded endpoints still want the token.
    async with aiohttp.ClientSession() as http, http.get(f"{proxy.admin_url}/flags") as r:
        assert r.status == 401


async def test_503_naming_postgres_while_it_is_unreachable(
    store_proxy: Factory, pg_link: CuttableLink
) -> None:
    proxy = await store_proxy()
    await until_status(proxy, 200)

    await pg_link.refuse()
    body, text = await until_status(proxy, 503)

    assert body["status"] == "not_ready"
    assert body["not_ready"] == ["store:users.postgres"]
    check = body["checks"]["store:users.postgres"]
    assert check["ok"] is False and check["required"] is True
    assert check["detail"].startswith(("unreachable", "no answer"))
    assert body["checks"]["store:users.dynamodb"]["ok"] is True
    no_secret(text, proxy)

    await pg_link.listen()
    await until_status(proxy, 200)


async def test_still_ready_without_the_shadow_store(
    store_proxy: Factory, dynamo_link: CuttableLink
) -> None:
    proxy = await store_proxy()
    await dynamo_link.refuse()

    deadline = time.monotonic() + 10
    while True:
        status, body, _ = await readyz(proxy)
        assert status == 200, body
        if not body["checks"]["store:users.dynamodb"]["ok"]:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert body["checks"]["store:users.dynamodb"]["required"] is False
    assert body["not_ready"] == []


async def test_503_while_the_flags_were_never_loaded(tmp_path: Any) -> None:
    """A Redis flag store nothing answers: the config's defaults are not the fleet's flags."""
    raw = {
        "flags": {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"},
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
    }
    proxy = await start_proxy(raw)
    try:
        status, body, text = await readyz(proxy)
        assert status == 503
        assert body["not_ready"] == ["flags"]
        assert body["checks"]["flags"]["detail"] == "flag store not reachable since start"
        assert "redis://" not in text
        # /healthz stays 200 (degraded): alive, not ready.
        async with aiohttp.ClientSession() as http, http.get(f"{proxy.admin_url}/healthz") as r:
            assert r.status == 200
    finally:
        await proxy.stop()


class Flags:
    """Just what Readyz asks of a flag store."""

    healthy = True

    def on_health(self, callback: object) -> Callable[[], None]:
        return lambda: None


async def test_the_store_checks_run_at_most_once_per_interval() -> None:
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)

    now = [100.0]
    ready = Readyz(Flags(), clock=lambda: now[0])
    ready.add(Probe("store:x.a", check, lambda: True))

    await asyncio.gather(*(ready.results() for _ in range(20)))
    assert calls == 1
    now[0] += 0.5
    await ready.results()
    assert calls == 1
    now[0] += 0.6
    await ready.results()
    assert calls == 2


async def test_a_hanging_store_is_cut_at_the_timeout() -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    ready = Readyz(Flags(), timeout_seconds=0.1)
    ready.add(Probe("store:x.a", hang, lambda: True))
    started = time.monotonic()
    results = await ready.results()
    assert time.monotonic() - started < 1
    assert results["store:x.a"].detail == "no answer within 0.1 s"


def test_the_composition_root_registers_the_store_probes(tmp_path: Any) -> None:
    raw = {
        "backends": {
            "pg": {"kind": "postgres"},
            "ddb": {
                "kind": "dynamodb",
                "endpoint_url": "http://127.0.0.1:1",
                "region": "us-east-1",
            },
        },
        "resources": {
            "users": {
                **USERS,
                "stores": {
                    "postgres": {"backend": "pg", "table": "t"},
                    "dynamodb": {"backend": "ddb", "table": "t"},
                },
                "flags": {"read_from": "postgres", "write_to": ["postgres", "dynamodb"]},
            }
        },
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
    }
    apps = build(settings_from_mapping(raw, env={}), registry=CollectorRegistry(), env={})
    assert apps.admin[READYZ].probe_names() == ["store:users.postgres", "store:users.dynamodb"]


async def test_an_admin_port_on_every_interface_still_wants_the_token(tmp_path: Any) -> None:
    """``admin.host: 0.0.0.0`` (as in a container) is accepted, and nothing about the token
    rule depends on the address: the same app, served here on loopback (tests never listen
    beyond it), answers the open endpoints and refuses the guarded ones without the token."""
    raw: dict[str, Any] = {
        "admin": {"host": "0.0.0.0"},
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
    }
    assert settings_from_mapping(raw, env={}).admin.host == "0.0.0.0"
    raw["admin"]["host"] = "127.0.0.1"
    proxy = await start_proxy(raw, env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN})
    try:
        base = proxy.admin_url
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for path in ("/readyz", "/healthz", "/metrics", "/openapi.json"):
                async with http.get(base + path) as r:
                    assert r.status == 200, path
            for path in ("/flags", "/mismatches", "/readiness", "/flags/history"):
                async with http.get(base + path) as r:
                    assert r.status == 401, path
                async with http.get(base + path, headers={"X-Admin-Token": "wrong"}) as r:
                    assert r.status == 401, path
                async with http.get(base + path, headers=bearer) as r:
                    assert r.status == 200, path
    finally:
        await proxy.stop()
