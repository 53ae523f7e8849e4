"""The guardrail's counts, summed over every instance through Redis (``readiness.store:
redis``, under ``readiness.prefix``).

A *watch* is one episode of reads served by the new store: reads flipped to it, or a
canary. Every instance watching the same episode must add to the same counts, so the watch
in force is named in Redis, and its counts live next to it::

    {prefix}:guardrail:{resource}        hash signature, id, until: the watch in force
    {prefix}:guardrail:{resource}:{id}   hash comparisons, mismatches, primary_errors

- ``join(resource, signature, until)``: an instance arming a watch takes the one in force
  when it has the same signature (``read_from=dynamodb``, ``canary=0.5``) and has not ended;
  otherwise it starts a new one (a fresh id, ``until``). One script, so instances arming at
  the same moment share one watch, and an instance started later joins it (and its end).
- ``add(resource, id, delta, until)``: HINCRBY of each count and an expiry, in one MULTI; the
  replies are the fleet's totals, which the guardrail judges.
- ``end(resource, id)``: forget the watch in force if it is still this one (after a
  rollback, or when reads left the new store), so a later flip to the same state starts
  counting from zero.

Both keys expire ``EXPIRE_MARGIN_SECONDS`` after the watch's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.readiness.config import ReadinessConfig
from proxy.redis_client import redis_client

EXPIRE_MARGIN_SECONDS = 60

_JOIN = """
local cur = redis.call('HMGET', KEYS[1], 'signature', 'id', 'until')
if cur[1] == ARGV[1] and cur[3] and tonumber(cur[3]) > tonumber(ARGV[3]) then
  return {cur[2], cur[3]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'signature', ARGV[1], 'id', ARGV[2], 'until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {ARGV[2], ARGV[4]}
"""

_END = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Tally:
    """Reads served by the new store that the guardrail judges."""

    comparisons: int = 0
    mismatches: int = 0
    primary_errors: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.comparisons + other.comparisons,
            self.mismatches + other.mismatches,
            self.primary_errors + other.primary_errors,
        )

    def __bool__(self) -> bool:
        return bool(self.comparisons or self.mismatches or self.primary_errors)

    @property
    def reads(self) -> int:
        """Comparisons plus primary errors."""
        return self.comparisons + self.primary_errors


@dataclass(frozen=True)
class Joined:
    id: str
    until: float


class FleetTally(Protocol):
    async def join(
        self, resource: str, signature: str, *, id: str, until: float, now: float
    ) -> Joined: ...

    async def add(
        self, resource: str, id: str, delta: Tally, *, until: float, now: float
    ) -> Tally: ...

    async def end(self, resource: str, id: str) -> None: ...

    async def close(self) -> None: ...


class RedisTally:
    """See the module docstring. ``now`` and ``until`` are the caller's wall clock (Unix
    seconds); instances' clocks should agree within a second or so."""

    def __init__(self, url: str, *, prefix: str, timeout_seconds: float = 1.0) -> None:
        self._redis = redis_client(url, timeout_seconds)
        self.prefix = prefix
        self._join = self._redis.register_script(_JOIN)
        self._end = self._redis.register_script(_END)

    def watch_key(self, resource: str) -> str:
        return f"{self.prefix}:guardrail:{resource}"

    def counts_key(self, resource: str, id: str) -> str:
        return f"{self.prefix}:guardrail:{resource}:{id}"

    async def join(
        self, resource: str, signature: str, *, id: str, until: float, now: float
    ) -> Joined:
        args: list[str | int] = [signature, id, repr(now), repr(until), _ttl_ms(until, now)]
        reply: Any = await self._join(keys=[self.watch_key(resource)], args=args)
        return Joined(_text(reply[0]), float(_text(reply[1])))

    async def add(self, resource: str, id: str, delta: Tally, *, until: float, now: float) -> Tally:
        key = self.counts_key(resource, id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "comparisons", delta.comparisons)
            pipe.hincrby(key, "mismatches", delta.mismatches)
            pipe.hincrby(key, "primary_errors", delta.primary_errors)
            pipe.pexpire(key, _ttl_ms(until, now))
            replies: list[Any] = await pipe.execute()
        return Tally(int(replies[0]), int(replies[1]), int(replies[2]))

    async def end(self, resource: str, id: str) -> None:
        await self._end(keys=[self.watch_key(resource)], args=[id])

    async def close(self) -> None:
        await self._redis.aclose()


def _ttl_ms(until: float, now: float) -> int:
    return max(1, math.ceil((until - now + EXPIRE_MARGIN_SECONDS) * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def fleet_tally(config: ReadinessConfig) -> RedisTally | None:
    """Counts summed over the fleet with ``readiness.store: redis``; None: this process's."""
    if config.store != "redis":
        return None
    return RedisTally(
        config.redis_url, prefix=config.prefix, timeout_seconds=config.timeout_seconds
    )
