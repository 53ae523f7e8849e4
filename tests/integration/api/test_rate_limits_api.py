"""Rate limits on the store-mode resource API: a refused request never reaches a store,
in process and through Redis."""

from __future__ import annotations

import uuid

import aiohttp
import orjson
import pytest

from tests.integration.api.conftest import StoreProxyFactory, stores, user
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration


async def create(http: aiohttp.ClientSession, url: str, i: int, who: str) -> tuple[int, str, bytes]:
    headers = {"X-Requester-ID": who}
    async with http.post(url + "/users", json=user(i), headers=headers) as r:
        return r.status, r.headers.get("Retry-After", ""), await r.read()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_over_the_limit_is_429_and_nothing_is_written(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession, store: str, prefix: str
) -> None:
    section = {
        "store": store,
        "redis_url": REDIS_URL,
        "prefix": prefix,
        "default": {"rate": 100, "burst": 100},
        "targets": {"users": {"requesters": {"importer": {"rate": 0.2, "burst": 2}}}},
    }
    proxy = await store_proxy(rate_limits=section, requesters={"known": ["importer"]})
    answers = [await create(http, proxy.url, i, "importer") for i in range(4)]
    assert [a[0] for a in answers] == [201, 201, 429, 429]
    _, retry_after, body = answers[2]
    assert 1 <= int(retry_after) <= 5
    assert orjson.loads(body)["error"]["code"] == "rate_limited"
    pg = stores(proxy)["postgres"]
    for i in (2, 3):
        assert await pg.get(uuid.UUID(user(i)["id"])) is None
    # Reads of the same requester take from the same resource bucket.
    headers = {"X-Requester-ID": "importer"}
    async with http.get(f"{proxy.url}/users/{user(0)['id']}", headers=headers) as r:
        assert r.status == 429
    # Another requester falls to the global default.
    assert (await create(http, proxy.url, 9, "web"))[0] == 201
    assert (
        proxy.value("shadowproxy_rate_limited_total", target="users", requester="importer") == 3.0
    )
