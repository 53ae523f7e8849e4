"""Scenario d: the Redis that holds the live flags and the cache goes away and comes back.
Serving goes on from the stores, the flags keep their last values, the cache is bypassed
(no hits while it is gone, its failures counted); once Redis is back the cache serves again
and a new flag change is seen."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.faults.client import Admin, metric, poll
from tests.faults.relay import Mode
from tests.faults.store import get, new_user, put
from tests.faults.targets import StoreTarget

pytestmark = pytest.mark.needs("redis")

RECORDS = 20
READS = 300


@pytest.fixture
def restore_redis(store_target: StoreTarget) -> Iterator[None]:
    yield
    assert store_target.redis is not None
    store_target.redis.set(Mode.PASS)


async def test_redis_down_and_back(
    store_target: StoreTarget, http: aiohttp.ClientSession, restore_redis: None
) -> None:
    target = store_target
    assert target.redis is not None
    admin = Admin(target.admin_url, target.token)
    resource = target.resource

    async def cache(result: str) -> float:
        return await metric(
            http, target.admin_url, "shadowproxy_cache_requests_total",
            resource=resource, result=result,
        )  # fmt: skip

    async def store_healthy(want: bool) -> bool:
        return bool((await admin.flags(http))["store"]["healthy"]) is want

    records = [new_user("redis") for _ in range(RECORDS)]
    for record in records:
        assert await put(http, target, record) in (200, 201)
    answers = {}
    hits_before = await cache("hit")

    async def cached() -> bool:  # reads fill the cache, then hit it (a write's tombstone ages)
        for record in records:
            status, body = await get(http, target, record["id"])
            assert status == 200, body
            answers[record["id"]] = body
        return await cache("hit") > hits_before

    await poll("reads served from the cache", cached, interval=0.5)
    flags_before = (await admin.flags(http))["flags"]

    await asyncio.to_thread(target.redis.set, Mode.DOWN)
    await poll("the flag store reported unhealthy", lambda: store_healthy(False))
    hits, errors = await cache("hit"), await cache("error")
    for i in range(READS):
        record = records[i % RECORDS]
        status, body = await get(http, target, record["id"])
        assert (status, body) == (200, answers[record["id"]]), f"Redis down: {status} {body}"
    shown = await admin.flags(http)
    assert shown["flags"] == flags_before, "flags changed while their store was down"
    assert await cache("hit") == hits, "cache hits while Redis was down"
    assert await cache("error") > errors, "cache failures not counted"
    name = f"{resource}.shadow_reads"
    status, text = await admin.set_flag(http, name, 0.5, "fault suite: Redis down")
    assert status == 503, f"a flag change with its store down: {status} {text}"

    await asyncio.to_thread(target.redis.set, Mode.PASS)
    await poll("the flag store healthy again", lambda: store_healthy(True))
    hits = await cache("hit")

    async def cache_back() -> bool:
        for record in records:
            status, body = await get(http, target, record["id"])
            assert (status, body) == (200, answers[record["id"]])
        return await cache("hit") > hits

    await poll("the cache serving again", cache_back, interval=0.5)
    old = flags_before[name]
    new = 0.5 if old != 0.5 else 0.25
    status, text = await admin.set_flag(http, name, new, "fault suite: Redis is back")
    assert status == 200, text
    try:

        async def seen() -> bool:
            value = await metric(
                http, target.admin_url, "shadowproxy_flag_state",
                target=resource, flag="shadow_reads", value="fraction",
            )  # fmt: skip
            return value == new and (await admin.flags(http))["flags"][name] == new

        await poll(f"{name} = {new} seen", seen)
    finally:
        status, text = await admin.set_flag(http, name, old, "fault suite: restore")
        assert status == 200, text
