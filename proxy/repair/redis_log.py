"""The repair log as a Redis stream read through a consumer group (the default)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from proxy.redis_client import redis_client
from proxy.repair.batching import TickBatch
from proxy.repair.log import RECENT_SECONDS, RepairEntry, Unsettled, report_stuck

log = logging.getLogger("shadowproxy.repair")

# Deleting a consumer drops its pending entries (the group would never deliver them again),
# so it is deleted only when it holds none, atomically.
_DELETE_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""

# Intents: ``{stream}:intents`` (id -> due time in ms, by Redis's clock, so instances' clocks
# do not matter), ``{stream}:intent`` (id -> JSON fields) and one small hash per key,
# ``{stream}:busy:<resource>\x1f<key>``: a field per held intent id plus ``last``, the id of
# the key's latest write. A busy hash with no held id expires RECENT_SECONDS later.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function release(busy, id, recent)
    redis.call('HDEL', busy, id)
    if redis.call('HLEN', busy) <= 1 then redis.call('PEXPIRE', busy, recent) end
end
"""

# KEYS: intents, intent, seq, busy per key; ARGV: grace_ms, safety_ms, then per key:
# resource, op, key (writes of several callers, resources and operations in one call)
_INTEND = (
    _NOW
    + """
local ids = {}
for i = 4, #KEYS do
    local a = 3 * (i - 4) + 3
    local id = tostring(redis.call('INCR', KEYS[3]))
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    redis.call('HSET', KEYS[2], id, cjson.encode(
        {resource = ARGV[a], op = ARGV[a + 1], key = ARGV[a + 2], reason = '', busy = KEYS[i]}))
    redis.call('HSET', KEYS[i], id, '1', 'last', id)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    ids[#ids + 1] = id
end
return ids
"""
)

# KEYS: intents, intent; ARGV: recent_ms, id...
_SETTLE = (
    _NOW
    + """
for i = 2, #ARGV do
    local raw = redis.call('HGET', KEYS[2], ARGV[i])
    if raw and redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
        redis.call('HDEL', KEYS[2], ARGV[i])
        release(cjson.decode(raw).busy, ARGV[i], ARGV[1])
    end
end
return 0
"""
)

# An escalated intent moves to ``{stream}:escalated`` (id -> due time): a failed write,
# counted in the depth, repaired once due.
# Returns the ids that were no longer intents (taken by a repairer, or settled).
# KEYS: intents, intent, escalated; ARGV: delay_ms, reason, id...
_ESCALATE = (
    _NOW
    + """
local gone = {}
for i = 3, #ARGV do
    local raw = redis.call('HGET', KEYS[2], ARGV[i])
    if raw and redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
        local fields = cjson.decode(raw)
        fields.reason = ARGV[2]
        redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(fields))
        redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), ARGV[i])
    else
        gone[#gone + 1] = ARGV[i]
    end
end
return gone
"""
)

# Due intents and escalations become stream entries (their writer died, stalled or failed).
# KEYS: intents, intent, stream, escalated, attempts, errors; ARGV: limit
_PROMOTE = (
    _NOW
    + """
local moved = 0
for _, zset in ipairs({KEYS[4], KEYS[1]}) do
    local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
    for _, id in ipairs(due) do
        local raw = redis.call('HGET', KEYS[2], id)
        if raw then
            local f = cjson.decode(raw)
            local reason = f.reason
            if reason == '' then reason = f.op .. ': write not confirmed in time' end
            local entry = redis.call('XADD', KEYS[3], '*', 'resource', f.resource,
                'key', f.key, 'reason', reason, 'op', f.op, 'hold', f.hold or id)
            if f.attempts then  -- a repair deferred by failed(late): its count goes on
                redis.call('HSET', KEYS[5], entry, f.attempts)
                redis.call('HSET', KEYS[6], entry, f.last_error or '')
            end
            redis.call('HDEL', KEYS[2], id)
        end
        redis.call('ZREM', zset, id)
        moved = moved + 1
    end
end
return moved
"""
)

# KEYS: busy; ARGV: id, recent_ms
_RELEASE = _NOW + "release(KEYS[1], ARGV[1], ARGV[2])\nreturn 0\n"

HOLD_SAFETY_SECONDS = 7 * 24 * 3600.0
"""A busy hash outlives its last intent by at most this, whatever went wrong."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRepairLog:
    """A stream read through a consumer group. Failure counts live in ``{stream}:attempts``
    and ``{stream}:errors`` (hashes by entry id); stuck entries move to ``{stream}:stuck``.

    New entries are read with ``XREADGROUP >``; failed entries and those of a consumer that
    died are taken back with ``XAUTOCLAIM`` once idle for ``retry_after_seconds``. ``done``
    acks and deletes, so the stream's length is the number of pending entries.
    """

    def __init__(
        self,
        client: aioredis.Redis | str,
        *,
        stream: str = "shadowproxy:repair",
        group: str = "shadowproxy-repairers",
        consumer: str | None = None,
        max_attempts: int = 100,
        retry_after_seconds: float = 5.0,
        intent_grace_seconds: float = 30.0,
        late_write_seconds: float = 30.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        self._owned = isinstance(client, str)
        self._redis = redis_client(client, timeout_seconds) if isinstance(client, str) else client
        self.stream = stream
        self.group = group
        # Unique per object: two logs in one process must not share (and delete) a consumer.
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.max_attempts = max_attempts
        self._retry_ms = max(1, round(retry_after_seconds * 1000))
        self._attempts = f"{stream}:attempts"
        self._errors = f"{stream}:errors"
        self._stuck = f"{stream}:stuck"
        self._intents = f"{stream}:intents"
        self._intent = f"{stream}:intent"
        self._seq = f"{stream}:seq"
        self._escalated = f"{stream}:escalated"
        self.intent_grace_seconds = intent_grace_seconds
        self._grace_ms = max(1, round(intent_grace_seconds * 1000))
        self._late_ms = max(1, round(late_write_seconds * 1000))
        self._recent_ms = round(RECENT_SECONDS * 1000)
        self._intend = self._redis.register_script(_INTEND)
        self._settle = self._redis.register_script(_SETTLE)
        self._escalate = self._redis.register_script(_ESCALATE)
        self._promote = self._redis.register_script(_PROMOTE)
        self._release = self._redis.register_script(_RELEASE)
        self._intend_batch = TickBatch(self._send_intents, name="repair-log-intents")
        self._settle_batch = TickBatch(self._send_settles, name="repair-log-settles")

    def _busy(self, resource: str, key: str) -> str:
        return f"{self.stream}:busy:{resource}\x1f{key}"

    async def init(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        fields = {"resource": resource, "key": key, "reason": reason, "op": op}
        await self._redis.xadd(self.stream, fields)  # type: ignore[arg-type]

    async def intend(self, resource: str, keys: Sequence[str], *, op: str) -> list[str]:
        return await self._intend_batch([(resource, op, key) for key in keys])

    async def _send_intents(self, writes: list[tuple[str, str, str]]) -> list[str]:
        busy = [self._busy(resource, key) for resource, _, key in writes]
        safety_ms = round(HOLD_SAFETY_SECONDS * 1000)
        ids = await self._intend(
            keys=[self._intents, self._intent, self._seq, *busy],
            args=[self._grace_ms, safety_ms, *(part for write in writes for part in write)],
        )
        return [_text(i) for i in ids]

    async def settle(self, ids: Sequence[str]) -> None:
        await self._settle_batch(ids)

    async def _send_settles(self, ids: list[str]) -> list[None]:
        await self._settle(keys=[self._intents, self._intent], args=[self._recent_ms, *ids])
        return [None] * len(ids)

    async def escalate(self, ids: Sequence[str], reason: str, *, late: bool = False) -> list[str]:
        if not ids:
            return []
        gone = await self._escalate(
            keys=[self._intents, self._intent, self._escalated],
            args=[self._late_ms if late else self._retry_ms, reason, *ids],
        )
        return [_text(i) for i in gone]

    async def unsettled(self, resource: str, keys: Sequence[str]) -> Unsettled:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self._busy(resource, key))
            found: list[dict[bytes, bytes]] = await pipe.execute()
        held = sum(len(h) - (b"last" in h) for h in found)
        return Unsettled(held, "|".join(_text(h.get(b"last", b"")) for h in found))

    async def claim(self, limit: int) -> list[RepairEntry]:
        await self._promote(
            keys=[
                self._intents, self._intent, self.stream, self._escalated,
                self._attempts, self._errors,
            ],
            args=[limit],
        )  # fmt: skip
        try:
            raw = await self._claim(limit)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.init()  # the stream was deleted under us
            raw = await self._claim(limit)
        if not raw:
            return []
        ids = [entry_id for entry_id, _ in raw]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._attempts, ids)
            pipe.hmget(self._errors, ids)
            attempts, errors = await pipe.execute()
        return [
            self._entry(entry_id, fields, int(n or 0), None if err is None else _text(err))
            for (entry_id, fields), n, err in zip(raw, attempts, errors, strict=True)
        ]

    async def _claim(self, limit: int) -> list[tuple[str, dict[bytes, bytes]]]:
        out: list[tuple[str, dict[bytes, bytes]]] = []
        start: Any = "0-0"
        while len(out) < limit:
            reply = await self._redis.xautoclaim(
                self.stream, self.group, self.consumer, self._retry_ms, start, limit - len(out)
            )
            start, claimed = reply[0], reply[1]
            gone = reply[2] if len(reply) > 2 else [i for i, f in claimed if f is None]
            if gone:  # deleted from the stream while pending: nothing left to repair
                await self._redis.xack(self.stream, self.group, *gone)
            out.extend((_text(i), f) for i, f in claimed if f)
            if _text(start) == "0-0":
                break
        if len(out) < limit:
            read: Any = await self._redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=limit - len(out)
            )
            streams = read.items() if isinstance(read, dict) else read or []
            for _, entries in streams:
                out.extend((_text(i), f) for i, f in entries if f)
        return out

    def _entry(
        self, entry_id: str, fields: Mapping[bytes, bytes], attempts: int, error: str | None
    ) -> RepairEntry:
        return RepairEntry(
            id=entry_id,
            resource=_text(fields.get(b"resource", b"")),
            key=_text(fields.get(b"key", b"")),
            reason=_text(fields.get(b"reason", b"")),
            attempts=attempts,
            op=_text(fields.get(b"op", b"")),
            last_error=error,
            hold=_text(fields.get(b"hold", b"")),
        )

    async def done(self, entry: RepairEntry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            pipe.hdel(self._attempts, entry.id)
            pipe.hdel(self._errors, entry.id)
            await pipe.execute()
        await self._unhold(entry)

    async def _unhold(self, entry: RepairEntry) -> None:
        if entry.hold:
            busy = self._busy(entry.resource, entry.key)
            await self._release(keys=[busy], args=[entry.hold, self._recent_ms])

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._attempts, entry.id, 1)
            pipe.hset(self._errors, entry.id, error)
            attempts, _ = await pipe.execute()
        if attempts < self.max_attempts:
            if late:
                await self._defer(entry, attempts, error)
            return
        stuck = {
            "resource": entry.resource,
            "key": entry.key,
            "reason": entry.reason,
            "op": entry.op,
            "attempts": str(attempts),
            "last_error": error,
            "logged_id": entry.id,
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._stuck, stuck)  # type: ignore[arg-type]
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            pipe.hdel(self._attempts, entry.id)
            pipe.hdel(self._errors, entry.id)
            await pipe.execute()
        await self._unhold(entry)  # a stuck key is a known difference, not a write in flight
        report_stuck(entry, attempts, error)

    async def _defer(self, entry: RepairEntry, attempts: int, error: str) -> None:
        """Take the entry off the stream until ``late_write_seconds`` from now (a stream entry
        comes back after ``retry_after_seconds``, too soon for a write that may still land),
        keeping its attempts and hold."""
        fields = {
            "resource": entry.resource, "key": entry.key, "op": entry.op,
            "reason": entry.reason, "hold": entry.hold,
            "attempts": attempts, "last_error": error,
        }  # fmt: skip
        now_s, now_us = await self._redis.time()
        due = now_s * 1000 + now_us // 1000 + self._late_ms
        deferred = f"d{entry.id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._intent, deferred, orjson.dumps(fields).decode())
            pipe.zadd(self._escalated, {deferred: due})
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            pipe.hdel(self._attempts, entry.id)
            pipe.hdel(self._errors, entry.id)
            await pipe.execute()

    async def depth(self) -> int:
        """Stream, escalated and stuck entries; intents still within their grace are writes
        in flight (those past it are counted once a claim moved them onto the stream)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.zcard(self._escalated)
            pipe.xlen(self._stuck)
            pending, escalated, stuck = await pipe.execute()
        return int(pending) + int(escalated) + int(stuck)

    async def in_flight(self) -> int:
        return int(await self._redis.zcard(self._intents))

    async def stuck_count(self) -> int:
        return int(await self._redis.xlen(self._stuck))

    async def stuck(self, limit: int = 100) -> list[RepairEntry]:
        rows: Any = await self._redis.xrange(self._stuck, count=limit)
        return [
            self._entry(_text(i), f, int(f.get(b"attempts", 0)), _text(f.get(b"last_error", b"")))
            for i, f in rows
        ]

    async def retry_stuck(self) -> int:
        moved = 0
        while True:
            rows: Any = await self._redis.xrange(self._stuck, count=1000)
            if not rows:
                return moved
            async with self._redis.pipeline(transaction=True) as pipe:
                for stuck_id, f in rows:
                    fields = {k: f.get(k, b"") for k in (b"resource", b"key", b"reason", b"op")}
                    pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
                    pipe.xdel(self._stuck, stuck_id)
                await pipe.execute()
            moved += len(rows)

    async def close(self) -> None:
        try:
            await self._redis.eval(_DELETE_IDLE_CONSUMER, 1, self.stream, self.group, self.consumer)
        except Exception as e:
            log.debug("repair log consumer not removed: %s", e)
        if self._owned:
            await self._redis.aclose()


# --- PostgreSQL ----------------------------------------------------------------------------
