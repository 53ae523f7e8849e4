"""Redis read-through cache for get-by-key and index lookups; a failing Redis is a miss.

    cache = RecordCache.from_config(CacheConfig(), CacheMetrics.create(registry))
    body = await cache.get("users", key_text)            # canonical JSON bytes or None
    if body is None:
        record = await store.get(key)                    # the store stays the truth
        if record is not None:
            await cache.set("users", key_text, schema.dumps(record), ttl_seconds=60)
    ...
    await store.put(record)                              # every write path, batches too
    await cache.invalidate("users", [key_text], {"email": [old_email, new_email]})
    await cache.close()

Keys (``{prefix}`` from config, ``{resource}`` and ``{index}`` are identifiers, so the
last component may hold any character)::

    {prefix}:{resource}:r:{key}             canonical JSON of one record
    {prefix}:{resource}:i:{index}:{value}   JSON list: the records an equality lookup found

An index entry is stale once ANY record holding the old or the new value changes, so the
caller passes both (the same value twice for an update that keeps it).

Invalidation overwrites an entry with an empty tombstone that lives ``fill_guard_seconds``,
and fills only ``SET ... NX``. That closes the classic read-through race: a reader that
read the store before a write and fills after the write's invalidation finds the tombstone
and does not put the old value back (unless its store read took longer than the guard).
The price is that a key written within the guard is served from the store, uncached.

Failures never reach the caller: every Redis error is counted
(``shadowproxy_cache_errors_total``) and logged at most once per ``ERROR_LOG_SECONDS``.
A lookup that fails is a miss; after a failure lookups and fills skip Redis for
``retry_after_seconds`` so a dead Redis costs one socket timeout per interval, not per
request. Invalidations are always attempted; one that fails leaves the entry stale for at
most its TTL — keep TTLs short where that matters. Negative results are never cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from proxy.logs import Throttle
from proxy.redis_client import redis_client
from proxy.resources.cache_config import CacheConfig

log = logging.getLogger("shadowproxy.cache")

ERROR_LOG_SECONDS = 10.0
_TOMBSTONE = b""


@dataclass(frozen=True)
class CacheMetrics:
    requests: Counter
    invalidations: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CacheMetrics:
        return cls(
            requests=Counter(
                "shadowproxy_cache_requests",
                "Cache lookups (by key and by index) by resource and result: hit, miss, error.",
                ("resource", "result"),
                registry=registry,
            ),
            invalidations=Counter(
                "shadowproxy_cache_invalidations",
                "Cache entries (records and index lookups) invalidated, by resource.",
                ("resource",),
                registry=registry,
            ),
            errors=Counter(
                "shadowproxy_cache_errors",
                "Cache operations that failed or skipped an unreachable Redis, by operation.",
                ("resource", "operation"),
                registry=registry,
            ),
        )


class RecordCache:
    """See the module docstring. ``close()`` closes the client only if this cache made it."""

    def __init__(
        self,
        client: aioredis.Redis | str,
        metrics: CacheMetrics,
        *,
        prefix: str = "shadowproxy:cache",
        socket_timeout_seconds: float = 0.25,
        fill_guard_seconds: float = 2.0,
        retry_after_seconds: float = 1.0,
    ) -> None:
        self._owned = isinstance(client, str)
        self._redis = (
            redis_client(client, socket_timeout_seconds) if isinstance(client, str) else client
        )
        self._metrics = metrics
        self._prefix = prefix
        self._guard_ms = max(1, round(fill_guard_seconds * 1000))
        self._retry_after = retry_after_seconds
        self._skip_until = 0.0
        self._log_throttle = Throttle(ERROR_LOG_SECONDS)

    @classmethod
    def from_config(cls, config: CacheConfig, metrics: CacheMetrics) -> RecordCache:
        return cls(
            config.url,
            metrics,
            prefix=config.prefix,
            socket_timeout_seconds=config.socket_timeout_seconds,
            fill_guard_seconds=config.fill_guard_seconds,
            retry_after_seconds=config.retry_after_seconds,
        )

    def record_key(self, resource: str, key: str) -> str:
        return f"{self._prefix}:{resource}:r:{key}"

    def index_key(self, resource: str, index: str, value: str) -> str:
        return f"{self._prefix}:{resource}:i:{index}:{value}"

    async def get(self, resource: str, key: str) -> bytes | None:
        return await self._lookup(resource, self.record_key(resource, key))

    async def set(self, resource: str, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._fill(resource, self.record_key(resource, key), value, ttl_seconds)

    async def get_index(self, resource: str, index: str, value: str) -> bytes | None:
        return await self._lookup(resource, self.index_key(resource, index, value))

    async def set_index(
        self, resource: str, index: str, value: str, payload: bytes, ttl_seconds: float
    ) -> None:
        await self._fill(resource, self.index_key(resource, index, value), payload, ttl_seconds)

    async def invalidate(
        self,
        resource: str,
        keys: Iterable[str],
        index_values: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Tombstone the records' entries and the lookups of every given index value."""
        names = {self.record_key(resource, key) for key in keys}
        for index, values in (index_values or {}).items():
            names.update(self.index_key(resource, index, value) for value in values)
        if not names:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.set(name, _TOMBSTONE, px=self._guard_ms)
                await pipe.execute()
        except (RedisError, OSError) as e:
            self._failed(resource, "invalidate", e)
            return
        self._metrics.invalidations.labels(resource).inc(len(names))

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()

    async def _lookup(self, resource: str, name: str) -> bytes | None:
        if self._skipping():
            self._metrics.requests.labels(resource, "error").inc()
            self._metrics.errors.labels(resource, "get").inc()
            return None
        try:
            value = await self._redis.get(name)
        except (RedisError, OSError) as e:
            self._metrics.requests.labels(resource, "error").inc()
            self._failed(resource, "get", e)
            return None
        if not value:  # absent or a tombstone
            self._metrics.requests.labels(resource, "miss").inc()
            return None
        self._metrics.requests.labels(resource, "hit").inc()
        return value if isinstance(value, bytes) else value.encode()

    async def _fill(self, resource: str, name: str, value: bytes, ttl_seconds: float) -> None:
        if not value:
            raise ValueError("an empty value is the invalidation tombstone; nothing to cache")
        ttl_ms = round(ttl_seconds * 1000)
        if ttl_ms <= 0:
            return
        if self._skipping():
            self._metrics.errors.labels(resource, "set").inc()
            return
        try:
            await self._redis.set(name, value, px=ttl_ms, nx=True)
        except (RedisError, OSError) as e:
            self._failed(resource, "set", e)

    def _skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def _failed(self, resource: str, operation: str, error: Exception) -> None:
        self._metrics.errors.labels(resource, operation).inc()
        self._skip_until = time.monotonic() + self._retry_after
        if self._log_throttle.ready():
            log.warning(
                "cache unavailable, serving from the store: %s: %s",
                type(error).__name__,
                error,
                extra={"resource": resource, "operation": operation},
            )
