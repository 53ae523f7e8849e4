"""The check both modes make once a request is routed, before its body is read or the primary
is touched:

    limiter = RateLimiter.from_settings(settings.rate_limits, registry, known)  # None: no limits
    if limiter is not None:
        await limiter.check("users", requester)   # TooManyRequests (429) / Unavailable (503)

Which bucket a request takes from, first match: the target's (route's or resource's) entry
for the requester, the target's ``default``, the global entry for the requester, the global
``default``. A target entry is a bucket of that target alone; a global one is shared by every
target. No match: the request is not limited. Without the requester header the request takes
from the bucket of the empty id (everyone without the header shares it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from proxy.errors import TooManyRequests, Unavailable
from proxy.ratelimit.bucket import Decision, MemoryBuckets
from proxy.ratelimit.config import Rate, RateLimitConfig
from proxy.ratelimit.redis_buckets import RedisBuckets
from proxy.request import requester_label

log = logging.getLogger("shadowproxy.ratelimit")

GLOBAL = "*"
LOG_EVERY_SECONDS = 10.0
_PLAIN_ID = 64  # longer ids are hashed into the key, so a huge header cannot grow memory


class Buckets(Protocol):
    async def take(self, key: str, rate: Rate) -> Decision: ...


class _Memory:
    """``MemoryBuckets`` behind the async protocol the Redis buckets speak."""

    def __init__(self, buckets: MemoryBuckets) -> None:
        self.buckets = buckets

    async def take(self, key: str, rate: Rate) -> Decision:
        return self.buckets.take(key, rate)


@dataclass(frozen=True)
class RateLimitMetrics:
    limited: Counter
    store_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RateLimitMetrics:
        return cls(
            limited=Counter(
                "shadowproxy_rate_limited_total",
                "Requests refused with 429 for being over their requester's rate limit, by "
                "target (route or resource) and requester (a named one, other or none).",
                ("target", "requester"),
                registry=registry,
            ),
            store_errors=Counter(
                "shadowproxy_rate_limit_store_errors_total",
                "Rate-limit checks the Redis buckets could not answer (the request was let "
                "through, or refused with 503 under fail_closed).",
                registry=registry,
            ),
        )


def bucket_id(requester: str | None) -> str:
    value = requester or ""
    if len(value) <= _PLAIN_ID:
        return value
    return "h:" + hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


class RateLimiter:
    def __init__(
        self,
        config: RateLimitConfig,
        buckets: Buckets,
        metrics: RateLimitMetrics,
        known: frozenset[str],
    ) -> None:
        self._config = config
        self._buckets = buckets
        self._metrics = metrics
        # Label values: the requesters named anywhere in the config (and requesters.known).
        named = set(known) | set(config.requesters)
        for target in config.targets.values():
            named |= set(target.requesters)
        self._known = frozenset(named)
        self._counters: dict[tuple[str, str], Any] = {}  # bounded: targets x labels
        self._down_until = 0.0
        self._unlogged = 0
        self._logged_at = -math.inf

    @classmethod
    def from_settings(
        cls,
        config: RateLimitConfig | None,
        registry: CollectorRegistry,
        known: frozenset[str] = frozenset(),
    ) -> RateLimiter | None:
        if config is None or not config.configured():
            return None
        buckets: Buckets
        if config.store == "redis":
            buckets = RedisBuckets(config.redis_url, config.prefix, config.timeout_seconds)
        else:
            buckets = _Memory(MemoryBuckets(max_buckets=config.max_buckets))
        return cls(config, buckets, RateLimitMetrics.create(registry), known)

    def rate_for(self, target: str, requester: str | None) -> tuple[str, Rate] | None:
        """(scope, rate) of the bucket this request takes from, or None: not limited."""
        config = self._config
        name = requester or ""
        own = config.targets.get(target)
        if own is not None:
            found = own.requesters.get(name) or own.default
            if found is not None:
                return target, found
        found = config.requesters.get(name) or config.default
        return (GLOBAL, found) if found is not None else None

    async def check(self, target: str, requester: str | None) -> None:
        """Take a token, or raise ``TooManyRequests`` with ``Retry-After``."""
        chosen = self.rate_for(target, requester)
        if chosen is None:
            return
        scope, rate = chosen
        now = time.monotonic()
        if now < self._down_until:
            return self._store_down()
        try:
            decision = await self._buckets.take(f"{scope}:{bucket_id(requester)}", rate)
        except Exception as e:  # Redis unreachable, slow or answering garbage
            self._down_until = now + self._config.retry_after_seconds
            self._metrics.store_errors.inc()
            self._log_failure(e, now)
            return self._store_down()
        if decision.allowed:
            return
        labels = (target, requester_label(requester, self._known))
        counter = self._counters.get(labels)
        if counter is None:
            counter = self._counters[labels] = self._metrics.limited.labels(*labels)
        counter.inc()
        seconds = max(1, math.ceil(decision.retry_after))
        raise TooManyRequests(
            f"over the rate limit of {rate.rate:g}/s (burst {rate.burst}); retry in {seconds} s",
            details={"retry_after_seconds": seconds},
            headers={"Retry-After": str(seconds)},
        )

    def _store_down(self) -> None:
        if self._config.fail_closed:
            seconds = max(1, math.ceil(self._config.retry_after_seconds))
            raise Unavailable(
                "the rate-limit store is unavailable", headers={"Retry-After": str(seconds)}
            )

    def _log_failure(self, error: Exception, now: float) -> None:
        """At most one line every ``LOG_EVERY_SECONDS``, with the count of those left out."""
        if now - self._logged_at < LOG_EVERY_SECONDS:
            self._unlogged += 1
            return
        closed = self._config.fail_closed
        mode = "refusing requests (fail_closed)" if closed else "letting requests through"
        log.error(
            "rate-limit store Redis unreachable, %s: %s: %s (%d failures since the last line)",
            mode,
            type(error).__name__,
            str(error)[:200],
            self._unlogged,
        )
        self._logged_at = now
        self._unlogged = 0

    async def close(self) -> None:
        if isinstance(self._buckets, RedisBuckets):
            await self._buckets.close()
