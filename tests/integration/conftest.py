"""Session-wide real services for integration tests: one DynamoDB endpoint (moto's server on
a free loopback port) shared by every test; PostgreSQL and Redis run on this machine."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from proxy.store.embedded import start_moto_server

PG_DSN = os.environ.get("SHADOWPROXY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHADOWPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server, endpoint_url = start_moto_server()
    yield endpoint_url
    server.stop()


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key namespace of the test's own; every key under it is deleted afterwards."""
    name = f"test:{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
