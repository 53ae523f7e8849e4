"""The Redis read-through cache behind get-by-key and index lookups."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from tests.integration.api.conftest import StoreProxyFactory, stores, user
from tests.integration.conftest import REDIS_URL
from tests.support.servers import RunningProxy, free_port

pytestmark = pytest.mark.integration


def cache(proxy: RunningProxy, result: str) -> float:
    name = "shadowproxy_cache_requests_total"
    return proxy.registry.get_sample_value(name, {"resource": "users", "result": result}) or 0.0


async def cached_proxy(store_proxy: StoreProxyFactory, prefix: str, url: str = REDIS_URL):
    return await store_proxy(
        "postgres",
        cache={"url": url, "prefix": prefix, "fill_guard_seconds": 0.2},
        resource={"cache_ttl_seconds": 60},
    )


async def test_get_is_cached_and_every_write_path_invalidates(
    store_proxy: StoreProxyFactory, prefix: str, http: aiohttp.ClientSession
) -> None:
    import asyncio

    proxy = await cached_proxy(store_proxy, prefix)
    u = user(1)
    url = f"{proxy.url}/users/{u['id']}"
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    await asyncio.sleep(0.3)  # past the fill guard a write leaves behind
    for _ in range(3):
        async with http.get(url) as r:
            assert (await r.json())["first_name"] == "Grace"
    assert cache(proxy, "hit") == 2 and cache(proxy, "miss") == 1

    async def read_after(method: str, path: str, body: object) -> dict[str, object]:
        async with http.request(method, proxy.url + path, json=body) as r:
            assert r.status < 300, await r.text()
        async with http.get(url) as r:
            return await r.json()

    assert (await read_after("PATCH", f"/users/{u['id']}", {"first_name": "A"}))[
        "first_name"
    ] == "A"
    assert (await read_after("PUT", f"/users/{u['id']}", {**u, "first_name": "B"}))[
        "first_name"
    ] == "B"
    batch = {"items": [{**u, "first_name": "C"}]}
    assert (await read_after("POST", "/users/batch", batch))["first_name"] == "C"
    async with http.delete(url) as r:
        assert r.status == 204
    async with http.get(url) as r:
        assert r.status == 404
    # comparisons read the stores, never the cache: all of them matched
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)


async def test_index_lookup_cache_follows_email_changes(
    store_proxy: StoreProxyFactory, prefix: str, http: aiohttp.ClientSession
) -> None:
    import asyncio

    proxy = await cached_proxy(store_proxy, prefix)
    u = user(2)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    await asyncio.sleep(0.3)

    async def by_email(email: str) -> list[str]:
        async with http.get(f"{proxy.url}/users?email={email}") as r:
            assert r.status == 200
            return [i["id"] for i in (await r.json())["items"]]

    assert await by_email(u["email"]) == [u["id"]]
    assert await by_email(u["email"]) == [u["id"]]
    assert cache(proxy, "hit") >= 1
    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"email": "new@x.io"}) as r:
        assert r.status == 200
    assert await by_email(u["email"]) == []
    assert await by_email("new@x.io") == [u["id"]]


async def test_redis_down_keeps_serving_and_counts(
    store_proxy: StoreProxyFactory, prefix: str, http: aiohttp.ClientSession
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    proxy = await cached_proxy(store_proxy, prefix, url=dead)
    u = user(3)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    for _ in range(3):
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert r.status == 200
    async with http.get(f"{proxy.url}/users?email={u['email']}") as r:
        assert r.status == 200
    errors = sum(
        proxy.registry.get_sample_value(
            "shadowproxy_cache_errors_total", {"resource": "users", "operation": op}
        )
        or 0.0
        for op in ("get", "set", "invalidate")
    )
    assert errors >= 1
    record = await stores(proxy)["dynamodb"].get(uuid.UUID(u["id"]))
    assert record is not None  # the dual write still happened
