"""Verify results in the real Redis on this machine (``readiness.store: redis``): what one
process saves another reads, the key layout, and clear errors for bad or missing data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from proxy.readiness import ReadinessConfig, VerifyResultsError, open_verify_results
from proxy.readiness.verify_results import RedisVerifyResults, VerifyResult
from tests.integration.conftest import REDIS_URL
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def result(segment: int, total: int, *, at: float = T0, differing: int = 0) -> VerifyResult:
    return VerifyResult("users", "postgres", "dynamodb", segment, total, at, at + 60,
                        1000, 1000 - differing, 0, 0, differing)  # fmt: skip


@pytest.fixture
async def open_results(prefix: str) -> AsyncIterator[Callable[[], RedisVerifyResults]]:
    """Each call is another process's view (its own client) of the same prefix."""
    made: list[RedisVerifyResults] = []

    def make() -> RedisVerifyResults:
        config = ReadinessConfig(store="redis", redis_url=REDIS_URL, prefix=prefix)
        results = open_verify_results(config)
        assert isinstance(results, RedisVerifyResults)
        made.append(results)
        return results

    yield make
    for results in made:
        await results.close()


async def test_segments_saved_by_several_processes_prove_the_table_clean(
    open_results: Callable[[], RedisVerifyResults], redis: aioredis.Redis, prefix: str
) -> None:
    proxy, pod0, pod1 = open_results(), open_results(), open_results()
    assert await proxy.clean_at("users") is None
    await pod0.save(result(0, 2, at=T0 + 30))
    assert await proxy.clean_at("users") is None  # half the table
    await pod1.save(result(1, 2, at=T0))
    assert await proxy.clean_at("users") == T0
    assert [r.segment for r in await proxy.last("users")] == [0, 1]

    stored = await redis.hgetall(f"{prefix}:verify:users")
    assert sorted(stored) == [b"2/0", b"2/1"]
    assert json.loads(stored[b"2/1"])["started_at"] == T0
    assert await redis.ttl(f"{prefix}:verify:users") == -1  # kept until replaced

    await pod1.save(result(1, 2, at=T0 + 90, differing=3))  # a re-run found differences
    assert await proxy.clean_at("users") is None
    await pod0.save(result(0, 1, at=T0 + 200))  # then a whole-table run, clean
    assert await proxy.clean_at("users") == T0 + 200


async def test_a_malformed_field_is_a_clear_error(
    open_results: Callable[[], RedisVerifyResults], redis: aioredis.Redis, prefix: str
) -> None:
    results = open_results()
    await redis.hset(f"{prefix}:verify:users", "1/0", b"{broken")
    with pytest.raises(VerifyResultsError, match=rf"{prefix}:verify:users field '1/0'"):
        await results.clean_at("users")
    await redis.hset(f"{prefix}:verify:users", "1/0", json.dumps({"resource": "users"}))
    with pytest.raises(VerifyResultsError, match="lacks"):
        await results.last("users")


async def test_an_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    results = open_verify_results(
        ReadinessConfig(store="redis", redis_url=url, timeout_seconds=0.5)
    )
    try:
        with pytest.raises(VerifyResultsError, match="cannot read verify results from Redis"):
            await results.clean_at("users")
        with pytest.raises(VerifyResultsError, match="cannot save the verify result to Redis"):
            await results.save(result(0, 1))
    finally:
        await results.close()
