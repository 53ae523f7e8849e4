"""Window stores: where recorders add per-bucket deltas and verdicts read window sums.

Time is cut into buckets of ``bucket_seconds``: bucket ``n`` covers
``[n * bucket_seconds, (n + 1) * bucket_seconds)`` of Unix time (wall clock, so instances
agree). ``read(target, now)`` sums the buckets whose START is later than
``now - window_seconds`` — the current, partial bucket included — so a window covers between
``window_seconds - bucket_seconds`` and ``window_seconds`` of history.

``MemoryWindow`` serves one process. ``RedisWindow`` aggregates every instance sharing a
``prefix``: one hash per target per bucket,

    key    {prefix}:{target}:{bucket_seconds}s:{bucket start, Unix seconds}
    fields c|<operation>|<outcome>      comparison outcomes
           l|<old|new>|<bucket index>   latency samples (proxy.readiness.histogram layout)

written with HINCRBY and given an EXPIRE of ``window_seconds + bucket_seconds + 60`` on every
write (one pipelined MULTI per flush). Instances sharing a prefix must share ``bucket_seconds``
(a different one just reads other keys) and the latency layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.readiness.config import ReadinessConfig
from proxy.readiness.totals import WindowTotals

EXPIRE_MARGIN_SECONDS = 60

#: ``(target, bucket number)`` → field → increment
Deltas = Mapping[tuple[str, int], Mapping[str, int]]


def bucket_number(now: float, bucket_seconds: int) -> int:
    return math.floor(now / bucket_seconds)


def window_buckets(now: float, window_seconds: int, bucket_seconds: int) -> range:
    """Bucket numbers inside the window ending at ``now`` (oldest first)."""
    first = math.floor((now - window_seconds) / bucket_seconds) + 1
    return range(first, bucket_number(now, bucket_seconds) + 1)


class Window(Protocol):
    window_seconds: int
    bucket_seconds: int

    async def add(self, deltas: Deltas) -> None:
        """Add increments; all or nothing as far as the store allows."""

    async def read(self, target: str, now: float) -> WindowTotals: ...

    async def close(self) -> None: ...


class MemoryWindow:
    """Buckets in a dict, for one instance. Buckets that fell out of the window are dropped
    on ``add``."""

    def __init__(self, *, window_seconds: int, bucket_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.bucket_seconds = bucket_seconds
        self._span = math.ceil(window_seconds / bucket_seconds) + 1
        self._buckets: dict[str, dict[int, dict[str, int]]] = {}

    async def add(self, deltas: Deltas) -> None:
        touched: set[str] = set()
        for (target, number), fields in deltas.items():
            bucket = self._buckets.setdefault(target, {}).setdefault(number, {})
            for name, value in fields.items():
                bucket[name] = bucket.get(name, 0) + value
            touched.add(target)
        for target in touched:
            buckets = self._buckets[target]
            oldest = max(buckets) - self._span
            for number in [n for n in buckets if n < oldest]:
                del buckets[number]

    async def read(self, target: str, now: float) -> WindowTotals:
        buckets = self._buckets.get(target, {})
        wanted = window_buckets(now, self.window_seconds, self.bucket_seconds)
        fields = [
            item for number in wanted if number in buckets for item in buckets[number].items()
        ]
        return WindowTotals.from_fields(target, fields, start=now - self.window_seconds, end=now)

    def bucket_count(self, target: str) -> int:
        """Buckets held for ``target`` (tests: pruning)."""
        return len(self._buckets.get(target, {}))

    async def close(self) -> None:
        return None


class RedisWindow:
    """See the module docstring. ``close()`` closes the client only if this window made it."""

    def __init__(
        self,
        client: aioredis.Redis | str,
        *,
        prefix: str,
        window_seconds: int,
        bucket_seconds: int,
        timeout_seconds: float = 1.0,
    ) -> None:
        self._owned = isinstance(client, str)
        self._redis = (
            aioredis.Redis.from_url(
                client,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                retry=Retry(NoBackoff(), 0),
            )
            if isinstance(client, str)
            else client
        )
        self.prefix = prefix
        self.window_seconds = window_seconds
        self.bucket_seconds = bucket_seconds
        self.ttl_seconds = window_seconds + bucket_seconds + EXPIRE_MARGIN_SECONDS

    def key(self, target: str, number: int) -> str:
        return f"{self.prefix}:{target}:{self.bucket_seconds}s:{number * self.bucket_seconds}"

    async def add(self, deltas: Deltas) -> None:
        if not any(deltas.values()):
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for (target, number), fields in deltas.items():
                if not fields:
                    continue
                key = self.key(target, number)
                for name, value in fields.items():
                    pipe.hincrby(key, name, value)
                pipe.expire(key, self.ttl_seconds)
            await pipe.execute()

    async def read(self, target: str, now: float) -> WindowTotals:
        numbers = window_buckets(now, self.window_seconds, self.bucket_seconds)
        async with self._redis.pipeline(transaction=False) as pipe:
            for number in numbers:
                pipe.hgetall(self.key(target, number))
            replies: list[Any] = await pipe.execute()
        fields = [(_text(name), int(value)) for reply in replies for name, value in reply.items()]
        return WindowTotals.from_fields(target, fields, start=now - self.window_seconds, end=now)

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def make_window(config: ReadinessConfig) -> MemoryWindow | RedisWindow:
    if config.store == "redis":
        return RedisWindow(
            config.redis_url,
            prefix=config.prefix,
            window_seconds=config.window_seconds,
            bucket_seconds=config.bucket_seconds,
            timeout_seconds=config.timeout_seconds,
        )
    return MemoryWindow(window_seconds=config.window_seconds, bucket_seconds=config.bucket_seconds)
