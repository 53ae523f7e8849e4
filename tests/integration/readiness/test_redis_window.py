"""Readiness counters aggregated across instances in the real Redis on this machine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from proxy.readiness import (
    RESOURCE_OPERATIONS,
    Readiness,
    ReadinessConfig,
    ReadinessRecorder,
    RedisWindow,
)
from proxy.readiness.histogram import OVERFLOW, bucket_index
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
WINDOW, BUCKET = 60, 10


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    """Overrides the shared client: these tests read hashes back as text."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def make_window(prefix: str) -> AsyncIterator[Callable[[], RedisWindow]]:
    """Each call is another proxy instance's window (its own client)."""
    made: list[RedisWindow] = []

    def make() -> RedisWindow:
        window = RedisWindow(REDIS_URL, prefix=prefix, window_seconds=WINDOW, bucket_seconds=BUCKET)
        made.append(window)
        return window

    yield make
    for window in made:
        await window.close()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_two_instances_add_up_and_keys_expire(
    make_window: Callable[[], RedisWindow], redis: aioredis.Redis, prefix: str
) -> None:
    clock = Clock()
    one = ReadinessRecorder(make_window(), clock=clock)
    two = ReadinessRecorder(make_window(), clock=clock)
    for _ in range(3):
        one.record("users", "get", "match", 0.004, 0.020, new_side="shadow")
    one.record("users", "list", "timeout", 0.004, None, new_side="shadow")
    two.record("users", "get", "match", 0.004, 0.020, new_side="shadow")
    two.record("users", "get", "mismatch", 0.004, 0.020, new_side="shadow")
    clock.now = T0 + 15  # the next bucket
    two.record("users", "batch_get", "transient", 0.004, 0.020, new_side="shadow")
    two.record("orders", "GET", "match", 0.004, 0.020, new_side="shadow")
    assert await one.flush() and await two.flush()

    reader = make_window()
    totals = await reader.read("users", clock())
    assert totals.counts == {
        ("get", "match"): 4,
        ("get", "mismatch"): 1,
        ("list", "timeout"): 1,
        ("batch_get", "transient"): 1,
    }
    assert totals.latency["old"] == {bucket_index(0.004): 7}
    assert totals.latency["new"] == {bucket_index(0.020): 6, OVERFLOW: 1}
    assert (await reader.read("orders", clock())).counts == {("GET", "match"): 1}

    first = f"{prefix}:users:10s:{int(T0)}"
    second = f"{prefix}:users:10s:{int(T0) + 10}"
    assert reader.key("users", int(T0) // 10) == first
    # SCAN may return a key more than once (while Redis rehashes): compare the set of keys.
    assert sorted({key async for key in redis.scan_iter(match=f"{prefix}:users:*")}) == [
        first,
        second,
    ]
    assert await redis.hgetall(first) == {
        "c|get|match": "4",
        "c|get|mismatch": "1",
        "c|list|timeout": "1",
        f"l|old|{bucket_index(0.004)}": "6",
        f"l|new|{bucket_index(0.020)}": "5",
        f"l|new|{OVERFLOW}": "1",
    }
    for key in (first, second, f"{prefix}:orders:10s:{int(T0) + 10}"):
        ttl = await redis.ttl(key)
        assert WINDOW < ttl <= WINDOW + BUCKET + 60, (key, ttl)

    # the window moves on: the first bucket drops out, the second stays
    later = await reader.read("users", T0 + WINDOW)
    assert later.counts == {("batch_get", "transient"): 1}


async def test_flushing_again_adds_not_overwrites(make_window: Callable[[], RedisWindow]) -> None:
    clock = Clock()
    recorder = ReadinessRecorder(make_window(), clock=clock)
    for _ in range(2):
        recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
        await recorder.flush()
    assert await recorder.flush()  # nothing pending: no write
    assert (await make_window().read("users", clock())).comparisons == 2


async def test_redis_down_keeps_the_counts() -> None:
    window = RedisWindow("redis://127.0.0.1:1/0", prefix="unused", window_seconds=WINDOW,
                         bucket_seconds=BUCKET, timeout_seconds=0.2)  # fmt: skip
    recorder = ReadinessRecorder(window, clock=Clock())
    recorder.record("users", "get", "match", 0.001, 0.001, new_side="shadow")
    assert not await recorder.flush()
    assert recorder.pending_buckets == 1
    await window.close()


async def test_readiness_over_redis(prefix: str) -> None:
    config = ReadinessConfig(
        store="redis", redis_url=REDIS_URL, prefix=prefix, window_seconds=WINDOW,
        bucket_seconds=BUCKET, min_comparisons=8, max_mismatch_rate=0.5,
    )  # fmt: skip
    instances = [Readiness(config), Readiness(config)]
    for readiness in instances:
        readiness.start()
        for op in RESOURCE_OPERATIONS:
            readiness.record("users", op, "match", 0.002, 0.003, new_side="shadow")
    # each instance flushes its own counts before reading; the other's arrive within ~1 s
    await instances[1].close()
    v = await instances[0].evaluate("users", required_operations=RESOURCE_OPERATIONS)
    assert v.stats["comparisons"] == 8
    assert v.ready, v
    await instances[0].close()
