"""RecordCache against the real Redis on this machine, and against a dead and a mute one."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from proxy.resources.cache import CacheMetrics, RecordCache
from proxy.resources.cache_config import CacheConfig
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration

CacheFactory = Callable[..., Awaitable[RecordCache]]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def make_cache(prefix: str, registry: CollectorRegistry) -> AsyncIterator[CacheFactory]:
    made: list[RecordCache] = []

    async def make(url: str = REDIS_URL, **overrides: object) -> RecordCache:
        config = CacheConfig.model_validate({"url": url, "prefix": prefix, **overrides})
        cache = RecordCache.from_config(config, CacheMetrics.create(registry))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def lookups(registry: CollectorRegistry, result: str, resource: str = "users") -> float:
    return sample(registry, "shadowproxy_cache_requests_total", resource=resource, result=result)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_miss_then_hit(make_cache: CacheFactory, registry: CollectorRegistry) -> None:
    cache = await make_cache()
    assert await cache.get("users", "1") is None
    await cache.set("users", "1", b'{"id":1}', ttl_seconds=30)
    assert await cache.get("users", "1") == b'{"id":1}'
    assert await cache.get("orders", "1") is None  # resources do not share entries

    assert lookups(registry, "miss") == 1
    assert lookups(registry, "hit") == 1


async def test_key_scheme(make_cache: CacheFactory, prefix: str, redis: aioredis.Redis) -> None:
    cache = await make_cache()
    await cache.set("users", "a:b", b"[1]", ttl_seconds=30)
    await cache.set_index("users", "email", "x:y@z", b"[2]", ttl_seconds=30)
    assert await redis.get(f"{prefix}:users:r:a:b") == b"[1]"
    assert await redis.get(f"{prefix}:users:i:email:x:y@z") == b"[2]"
    assert 0 < await redis.pttl(f"{prefix}:users:r:a:b") <= 30_000


async def test_entries_expire(make_cache: CacheFactory) -> None:
    cache = await make_cache()
    await cache.set("users", "1", b"{}", ttl_seconds=0.05)
    await cache.set_index("users", "email", "a@x", b"[]", ttl_seconds=0.05)
    assert await cache.get("users", "1") == b"{}"
    await asyncio.sleep(0.1)
    assert await cache.get("users", "1") is None
    assert await cache.get_index("users", "email", "a@x") is None


async def test_invalidate_records_and_old_and_new_index_values(
    make_cache: CacheFactory, registry: CollectorRegistry
) -> None:
    cache = await make_cache()
    await cache.set("users", "1", b'{"email":"a@x"}', ttl_seconds=30)
    await cache.set("users", "2", b'{"email":"c@x"}', ttl_seconds=30)
    await cache.set_index("users", "email", "a@x", b"[1]", ttl_seconds=30)
    await cache.set_index("users", "email", "b@x", b"[]", ttl_seconds=30)
    await cache.set_index("users", "email", "c@x", b"[2]", ttl_seconds=30)

    # user 1 changes email a@x -> b@x
    await cache.invalidate("users", ["1"], {"email": ["a@x", "b@x"]})

    assert await cache.get("users", "1") is None
    assert await cache.get_index("users", "email", "a@x") is None
    assert await cache.get_index("users", "email", "b@x") is None
    assert await cache.get("users", "2") == b'{"email":"c@x"}'
    assert await cache.get_index("users", "email", "c@x") == b"[2]"
    assert sample(registry, "shadowproxy_cache_invalidations_total", resource="users") == 3


async def test_invalidate_a_large_batch(make_cache: CacheFactory) -> None:
    cache = await make_cache()
    keys = [str(i) for i in range(1000)]
    for key in keys[:50]:
        await cache.set("users", key, b"{}", ttl_seconds=30)
    await cache.invalidate("users", keys, {"email": [f"{k}@x" for k in keys]})
    assert [await cache.get("users", key) for key in keys[:50]] == [None] * 50
    await cache.invalidate("users", [])  # nothing to do, no round trip


async def test_a_fill_racing_an_invalidation_is_refused(make_cache: CacheFactory) -> None:
    cache = await make_cache(fill_guard_seconds=0.1)
    # A reader missed and read the old record from the store; then a write landed and
    # invalidated; now the reader fills: the old value must not come back.
    await cache.invalidate("users", ["1"], {"email": ["a@x"]})
    await cache.set("users", "1", b'{"v":"old"}', ttl_seconds=30)
    await cache.set_index("users", "email", "a@x", b"[old]", ttl_seconds=30)
    assert await cache.get("users", "1") is None
    assert await cache.get_index("users", "email", "a@x") is None

    await asyncio.sleep(0.15)  # after the guard, fills work again
    await cache.set("users", "1", b'{"v":"new"}', ttl_seconds=30)
    assert await cache.get("users", "1") == b'{"v":"new"}'


async def test_given_client_is_not_closed(
    prefix: str, registry: CollectorRegistry, redis: aioredis.Redis
) -> None:
    cache = RecordCache(redis, CacheMetrics.create(registry), prefix=prefix)
    await cache.set("users", "1", b"{}", ttl_seconds=30)
    await cache.close()
    assert await redis.exists(f"{prefix}:users:r:1") == 1


async def test_redis_down_is_a_fast_miss(
    make_cache: CacheFactory, registry: CollectorRegistry
) -> None:
    cache = await make_cache(url=f"redis://127.0.0.1:{closed_port()}/0", retry_after_seconds=0)
    started = time.monotonic()
    assert await cache.get("users", "1") is None
    assert await cache.get_index("users", "email", "a@x") is None
    await cache.set("users", "1", b"{}", ttl_seconds=30)
    await cache.invalidate("users", ["1"], {"email": ["a@x"]})
    assert time.monotonic() - started < 1.0

    assert lookups(registry, "error") == 2
    for operation, count in (("get", 2), ("set", 1), ("invalidate", 1)):
        assert (
            sample(
                registry, "shadowproxy_cache_errors_total", resource="users", operation=operation
            )
            == count
        )
    assert sample(registry, "shadowproxy_cache_invalidations_total", resource="users") == 0


async def test_mute_redis_costs_one_socket_timeout_then_is_skipped(
    make_cache: CacheFactory, registry: CollectorRegistry
) -> None:
    async def accept_and_say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cache = await make_cache(
            url=f"redis://127.0.0.1:{port}/0", socket_timeout_seconds=0.1, retry_after_seconds=60
        )
        started = time.monotonic()
        assert await cache.get("users", "1") is None  # waits one socket timeout, no retries
        first = time.monotonic() - started
        for i in range(20):  # skipped while Redis is considered down
            assert await cache.get("users", str(i)) is None
            await cache.set("users", str(i), b"{}", ttl_seconds=30)
        rest = time.monotonic() - started - first
        await cache.close()
    finally:
        server.close()
        await server.wait_closed()

    assert 0.05 <= first < 0.5
    assert rest < 0.05
    assert lookups(registry, "error") == 21
