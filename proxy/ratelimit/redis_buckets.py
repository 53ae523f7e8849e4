"""The fleet's buckets in Redis: one atomic Lua script per check, keys that expire when idle.

Each bucket is a hash ``<prefix>:<scope>:<requester>`` with the tokens left (``t``) and
when they were counted (``s``, Redis's own clock, so instances with skewed clocks share one
bucket honestly). The key lives as long as the bucket takes to refill whole: a bucket gone
idle that long is full again, which is what a missing key means, so idle buckets vanish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from proxy.ratelimit.bucket import ALLOWED, Decision
from proxy.ratelimit.config import Rate
from proxy.redis_client import redis_client

# The arithmetic of ``proxy.ratelimit.bucket.Bucket.take``, atomically on the server.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
local elapsed = now - stamp
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
if now < stamp then now = stamp end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
-- full again after burst / rate seconds; capped so the number stays an integer literal
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(burst / rate * 1000) + 1000, 1e12))
return {allowed, tostring(wait)}
"""


class RedisBuckets:
    """Buckets every instance shares. Any failure (unreachable, slow past
    ``timeout_seconds``) is raised to the caller, which decides open or closed."""

    def __init__(self, url: str, prefix: str, timeout_seconds: float) -> None:
        self._redis: aioredis.Redis = redis_client(url, timeout_seconds)
        self._prefix = prefix
        self._timeout = timeout_seconds
        self._script: Any = self._redis.register_script(TAKE)

    def key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def take(self, key: str, rate: Rate) -> Decision:
        # The socket timeouts bound each read and connect; this bounds the whole call.
        async with asyncio.timeout(self._timeout):
            allowed, wait = await self._script(keys=[self.key(key)], args=[rate.rate, rate.burst])
        if int(allowed) == 1:
            return ALLOWED
        return Decision(False, float(wait))

    async def close(self) -> None:
        await self._redis.aclose()
