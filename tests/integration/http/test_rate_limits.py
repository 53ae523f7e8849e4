"""Rate limits on the HTTP drop-in path, with a real proxy: in process, shared through a real
Redis by two proxies, and with Redis down (open by default, closed on request)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from proxy.ratelimit.config import Rate
from proxy.ratelimit.redis_buckets import RedisBuckets
from tests.integration.conftest import REDIS_URL
from tests.integration.http.conftest import ProxyFactory, UpstreamFactory, json_ok
from tests.support.servers import RunningProxy, free_port

pytestmark = pytest.mark.integration

WEB = {"X-Requester-ID": "web"}


async def send(
    client: aiohttp.ClientSession,
    proxy: RunningProxy,
    headers: dict[str, str],
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    method = "GET" if data is None else "POST"
    async with client.request(method, proxy.url + "/users/1", headers=headers, data=data) as r:
        return r.status, dict(r.headers), await r.read()


def limited(proxy: RunningProxy, requester: str, target: str = "r") -> float:
    return proxy.value("shadowproxy_rate_limited_total", target=target, requester=requester)


async def test_over_the_burst_is_429_with_retry_after_and_the_primary_never_asked(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(
        primary,
        requesters={"known": ["web"]},
        rate_limits={"default": {"rate": 0.1, "burst": 3}},
        limits={"max_body_bytes": 16},
    )
    answers = [await send(client, proxy, WEB) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    assert len(primary.seen) == 3
    status, headers, body = answers[-1]
    assert 1 <= int(headers["Retry-After"]) <= 10
    error = orjson.loads(body)["error"]
    assert error["code"] == "rate_limited" and headers["X-Request-ID"] == error["request_id"]
    assert error["details"] == {"retry_after_seconds": int(headers["Retry-After"])}
    # Refused before the body is read: a body over the size cap is a 429, not a 413.
    status, _, _ = await send(client, proxy, WEB, data=b"x" * 100)
    assert status == 429 and len(primary.seen) == 3
    # Another requester has a bucket of its own; no header shares the empty id's bucket.
    assert (await send(client, proxy, {"X-Requester-ID": "mobile"}))[0] == 200
    assert (await send(client, proxy, {}))[0] == 200
    assert limited(proxy, "web") == 3.0
    assert (
        proxy.value(
            "shadowproxy_requests_total", route="r", method="GET", status="429", requester="web"
        )
        == 2.0
    )


async def test_a_route_entry_overrides_the_default(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(
        await upstream_factory(json_ok),
        rate_limits={
            "default": {"rate": 0.1, "burst": 1},
            "targets": {"r": {"requesters": {"web": {"rate": 0.1, "burst": 4}}}},
        },
    )
    statuses = [(await send(client, proxy, WEB))[0] for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    other = [(await send(client, proxy, {"X-Requester-ID": "x"}))[0] for _ in range(2)]
    assert other == [200, 429]


async def test_two_proxies_share_one_bucket_through_redis(
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
    prefix: str,
    redis: aioredis.Redis,
) -> None:
    primary = await upstream_factory(json_ok)
    section = {
        "store": "redis",
        "redis_url": REDIS_URL,
        "prefix": prefix,
        "default": {"rate": 0.1, "burst": 10},
    }
    proxies = [await proxy_factory(primary, rate_limits=section) for _ in range(2)]
    statuses = [(await send(client, proxies[i % 2], WEB))[0] for i in range(30)]
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    assert len(primary.seen) == 10
    assert sum(limited(p, "other") for p in proxies) == 20.0
    keys = sorted({k async for k in redis.scan_iter(match=f"{prefix}:*")})  # SCAN may repeat
    assert keys == [f"{prefix}:*:web".encode()]
    ttl = await redis.pttl(keys[0])
    assert 0 < ttl <= (10 / 0.1 + 1) * 1000  # gone once it would be full again


async def test_redis_down_lets_requests_through_and_counts_the_errors(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    section = {"store": "redis", "redis_url": dead, "default": {"rate": 0.1, "burst": 1}}
    proxy = await proxy_factory(await upstream_factory(json_ok), rate_limits=section)
    statuses = [(await send(client, proxy, WEB))[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert proxy.value("shadowproxy_rate_limit_store_errors_total") >= 1.0

    closed = await proxy_factory(
        await upstream_factory(json_ok), rate_limits={**section, "fail_closed": True}
    )
    status, headers, body = await send(client, closed, WEB)
    assert status == 503 and headers["Retry-After"] == "1"
    assert orjson.loads(body)["error"]["code"] == "unavailable"


async def test_the_redis_script_takes_refuses_and_refills(prefix: str) -> None:
    buckets = RedisBuckets(REDIS_URL, prefix, 1.0)
    rate = Rate(rate=20, burst=3)
    try:
        got = [await buckets.take("*:a", rate) for _ in range(4)]
        assert [d.allowed for d in got] == [True, True, True, False]
        assert 0 < got[3].retry_after <= 1 / 20
        await asyncio.sleep(got[3].retry_after + 0.01)
        assert (await buckets.take("*:a", rate)).allowed
        assert (await buckets.take("*:b", rate)).allowed  # another key, another bucket
    finally:
        await buckets.close()
