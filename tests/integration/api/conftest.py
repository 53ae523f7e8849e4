from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest

from proxy.resources.admin_ops import init_stores
from proxy.store.base import Store
from tests.integration.conftest import PG_DSN
from tests.support.servers import RunningProxy, start_proxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration

USERS: dict[str, Any] = {
    "prefix": "/users",
    "key": "id",
    "fields": {
        "id": {"type": "uuid"},
        "email": {"type": "string", "sensitive": True, "nullable": False, "required": True},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "is_active": {"type": "bool", "nullable": False, "required": True},
        "created_at": {"type": "datetime", "nullable": False, "required": True},
        "updated_at": {"type": "datetime"},
        "preferences": {"type": "json"},
        "roles": {"type": "set<string>"},
    },
    "indexes": {"email": {"field": "email", "dynamodb_index": "email-index"}},
    "recheck_delay_seconds": 0.1,
}

StoreProxyFactory = Callable[..., Awaitable[RunningProxy]]


def user(i: int = 0, **over: Any) -> dict[str, Any]:
    base = {
        "id": str(uuid.UUID(int=i + 1)),
        "email": f"user{i}@example.com",
        "first_name": ["Ada", "Grace", "Linus"][i % 3],
        "last_name": "Test",
        "is_active": True,
        "created_at": "2024-01-01T00:00:00Z",
        "preferences": {"theme": "dark", "n": i},
        "roles": ["viewer"] if i % 2 else ["admin", "viewer"],
    }
    return {**base, **over}


def stores(proxy: RunningProxy) -> dict[str, Store]:
    return dict(proxy.apps.resources.services["users"].parts.stores)


def outcomes(proxy: RunningProxy) -> dict[str, float]:
    """``shadowproxy_comparisons_total`` of one in-process proxy, by outcome."""
    found: dict[str, float] = {}
    for metric in proxy.registry.collect():
        if metric.name == "shadowproxy_comparisons":
            for s in metric.samples:
                if s.name.endswith("_total") and s.value:
                    found[s.labels["outcome"]] = found.get(s.labels["outcome"], 0) + s.value
    return found


async def mirrored(proxy: RunningProxy, timeout: float = 30.0) -> None:
    """Wait until no secondary write is still running (the client is answered after at most
    ``secondary_write_budget_seconds``; the write to the other store may go on)."""
    writer = proxy.apps.resources.services["users"].writes
    await proxy.wait_for(lambda: writer.pending == 0, timeout=timeout)


@pytest.fixture
async def store_proxy(moto_endpoint: str, tmp_path: Any) -> AsyncIterator[StoreProxyFactory]:
    started: list[RunningProxy] = []

    async def make(
        read_from: str = "postgres",
        *,
        write_to: tuple[str, ...] = ("postgres", "dynamodb"),
        shadow_reads: float = 1.0,
        env: dict[str, str] | None = None,
        dynamo_url: str | None = None,
        pg_dsn: str | None = None,
        dynamo: dict[str, Any] | None = None,
        pg: dict[str, Any] | None = None,
        **extra: Any,
    ) -> RunningProxy:
        table = f"users_{uuid.uuid4().hex[:10]}"
        resource = copy.deepcopy(USERS)
        resource["stores"] = {
            "postgres": {"backend": "pg", "table": table},
            "dynamodb": {"backend": "ddb", "table": table},
        }
        resource["flags"] = {
            "read_from": read_from, "write_to": list(write_to), "shadow_reads": shadow_reads,
        }  # fmt: skip
        # Sampled write verification adds comparisons at random: off unless a test asks.
        resource["write_verify"] = 0
        resource.update(extra.pop("resource", {}))
        raw: dict[str, Any] = {
            "backends": {
                "pg": {"kind": "postgres", "dsn": pg_dsn or PG_DSN, "pool_max": 5, **(pg or {})},
                "ddb": {
                    "kind": "dynamodb",
                    "endpoint_url": dynamo_url or moto_endpoint,
                    "region": "us-east-1",
                    "max_attempts": 3,
                    **(dynamo or {}),
                },
            },
            "resources": {"users": resource},
            "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
            **extra,
        }
        proxy = await start_proxy(raw, env=env)
        await init_stores(proxy.settings)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        pg = stores(proxy)["postgres"]
        ddb = stores(proxy)["dynamodb"]
        async with pg._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(f'DROP TABLE IF EXISTS "{pg.table}"')  # type: ignore[attr-defined]
        await ddb._client.call("DeleteTable", {"TableName": ddb.table})  # type: ignore[attr-defined]
        await proxy.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def dynamo_link(moto_endpoint: str) -> AsyncIterator[CuttableLink]:
    """A cuttable link to the DynamoDB endpoint. Request it before ``store_proxy`` so it
    outlives the proxy's table cleanup."""
    target = urlparse(moto_endpoint)
    link = await CuttableLink(target.hostname or "127.0.0.1", target.port or 80).start()
    yield link
    await link.stop()


@pytest.fixture
async def pg_link() -> AsyncIterator[CuttableLink]:
    """A cuttable link to the local PostgreSQL."""
    link = await CuttableLink("127.0.0.1", 5432).start()
    yield link
    await link.stop()
