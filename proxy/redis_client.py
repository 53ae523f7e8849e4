"""One way to make a Redis client for the secondary path: fail fast, never retry."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def redis_client(url: str, timeout_seconds: float) -> aioredis.Redis:
    """redis-py retries 10 times with backoff by default, which would break every timeout
    bound we promise (cache lookups, flag polls, repair log appends): no retries here."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
