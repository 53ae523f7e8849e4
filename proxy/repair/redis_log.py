"""The repair log as a Redis stream read through a consumer group (the default)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

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

# Whoever acks an entry first repaired it; a second ``done`` (another claimer's repair of
# the same entry) finds it gone and releases nothing.
# KEYS: stream, attempts, errors, busy; ARGV: group, id, hold, recent_ms
_DONE = (
    _NOW
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[3] ~= '' then release(KEYS[4], ARGV[3], ARGV[4]) end
return 1
"""
)

# A failed repair, by who holds the entry now (its consumer in the group's pending list):
# this claimer: attempts + 1, stuck at max_attempts, deferred when late; another claimer
# (it took the entry over): nothing counted, but a late failure still defers the entry,
# since this claimer's write may land after the other's copy; nobody (repaired, deferred
# or stuck meanwhile): a late failure logs the key again as a deferral holding the key.
# A deferral ``d<id>`` waits in ``{stream}:escalated`` until late_ms from now, keeping its
# attempts and hold; two deferrals of one entry merge (the later due time wins).
# KEYS: stream, attempts, errors, stuck, intent, escalated, busy
# ARGV: group, consumer, id, error, max_attempts, late_ms (0: not late), recent_ms,
#       safety_ms, resource, key, reason, op, hold, attempts claimed with
# Returns {what, attempts}: what is 'failed', 'stuck', 'deferred' or 'ignored'.
_FAILED = (
    _NOW
    + """
local stream, group, id, err = KEYS[1], ARGV[1], ARGV[3], ARGV[4]
local late_ms, hold = tonumber(ARGV[6]), ARGV[13]
local pending = redis.call('XPENDING', stream, group, id, id, 1)
local owner = pending[1] and pending[1][2]
local function drop()
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
end
local function defer(attempts)
    local deferred, due = 'd' .. id, now + late_ms
    local current = redis.call('ZSCORE', KEYS[6], deferred)
    if current then
        if tonumber(current) < due then redis.call('ZADD', KEYS[6], due, deferred) end
        return
    end
    redis.call('HSET', KEYS[5], deferred, cjson.encode({
        resource = ARGV[9], key = ARGV[10], reason = ARGV[11], op = ARGV[12], hold = hold,
        attempts = attempts, last_error = err}))
    redis.call('ZADD', KEYS[6], due, deferred)
end
if owner == ARGV[2] then
    local attempts = redis.call('HINCRBY', KEYS[2], id, 1)
    redis.call('HSET', KEYS[3], id, err)
    if attempts >= tonumber(ARGV[5]) then
        redis.call('XADD', KEYS[4], '*', 'resource', ARGV[9], 'key', ARGV[10],
            'reason', ARGV[11], 'op', ARGV[12], 'attempts', tostring(attempts),
            'last_error', err, 'logged_id', id)
        drop()
        -- a stuck key is a known difference, not a write in flight
        if hold ~= '' then release(KEYS[7], hold, ARGV[7]) end
        return {'stuck', attempts}
    end
    if late_ms == 0 then return {'failed', attempts} end
    defer(attempts)
    drop()
    return {'deferred', attempts}
end
if late_ms == 0 then return {'ignored', 0} end
if owner then
    local attempts = tonumber(redis.call('HGET', KEYS[2], id) or '0')
    defer(attempts)
    drop()
    return {'deferred', attempts}
end
local attempts = tonumber(ARGV[14]) + 1
if not redis.call('ZSCORE', KEYS[6], 'd' .. id) and hold ~= '' then
    redis.call('HSET', KEYS[7], hold, '1')
    redis.call('PEXPIRE', KEYS[7], ARGV[8])
end
defer(attempts)
return {'deferred', attempts}
"""
)

HOLD_SAFETY_SECONDS = 7 * 24 * 3600.0
"""A busy hash outlives its last intent by at most this, whatever went wrong."""

TAKE_OVER_PAGE = 500
"""Pending entries read per XPENDING call when taking entries over."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRepairLog:
    """A stream read through a consumer group. Failure counts live in ``{stream}:attempts``
    and ``{stream}:errors`` (hashes by entry id); stuck entries move to ``{stream}:stuck``.

    New entries are read with ``XREADGROUP >``; failed entries and those of a consumer that
    died are taken back with ``XAUTOCLAIM`` once idle for ``retry_after_seconds``, and a
    take-over (reconcile) claims those of every other consumer with ``XCLAIM`` at once.
    ``done`` acks and deletes, so the stream's length is the number of pending entries;
    ``done`` and ``failed`` look up who holds the entry now in the same script that changes
    it, so a repairer whose entry was taken over cannot count or release it twice.
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
        self._done = self._redis.register_script(_DONE)
        self._failed = self._redis.register_script(_FAILED)
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

    async def claim(self, limit: int, *, take_over: bool = False) -> list[RepairEntry]:
        await self._promote(
            keys=[
                self._intents, self._intent, self.stream, self._escalated,
                self._attempts, self._errors,
            ],
            args=[limit],
        )  # fmt: skip
        try:
            raw = await self._claim(limit, take_over=take_over)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.init()  # the stream was deleted under us
            raw = await self._claim(limit, take_over=take_over)
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

    async def _claim(self, limit: int, *, take_over: bool) -> list[tuple[str, dict[bytes, bytes]]]:
        out = await self._take_over(limit) if take_over else []
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
        return list(dict(out).items())  # once each, should XAUTOCLAIM meet a taken-over one

    async def _take_over(self, limit: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """Every entry pending on another consumer, idle or not (XAUTOCLAIM would only take
        those idle for ``retry_after_seconds``, and a live claimer that keeps failing claims
        them again before that). Entries deferred for a late write are not on the stream."""
        out: list[tuple[str, dict[bytes, bytes]]] = []
        start = "-"
        while len(out) < limit:
            rows: Any = await self._redis.xpending_range(
                self.stream, self.group, min=start, max="+", count=TAKE_OVER_PAGE
            )
            theirs = [r["message_id"] for r in rows if _text(r["consumer"]) != self.consumer]
            if theirs:
                claimed: Any = await self._redis.xclaim(
                    self.stream, self.group, self.consumer, 0, theirs[: limit - len(out)]
                )
                gone = [i for i, f in claimed if not f]  # deleted while pending (Redis < 7)
                if gone:
                    await self._redis.xack(self.stream, self.group, *gone)
                out.extend((_text(i), f) for i, f in claimed if f)
            if len(rows) < TAKE_OVER_PAGE:
                break
            start = f"({_text(rows[-1]['message_id'])}"
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
        await self._done(
            keys=[self.stream, self._attempts, self._errors, self._busy(entry.resource, entry.key)],
            args=[self.group, entry.id, entry.hold, self._recent_ms],
        )

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        what, attempts = await self._failed(
            keys=[
                self.stream, self._attempts, self._errors, self._stuck, self._intent,
                self._escalated, self._busy(entry.resource, entry.key),
            ],
            args=[
                self.group, self.consumer, entry.id, error, self.max_attempts,
                self._late_ms if late else 0, self._recent_ms, round(HOLD_SAFETY_SECONDS * 1000),
                entry.resource, entry.key, entry.reason, entry.op, entry.hold, entry.attempts,
            ],
        )  # fmt: skip
        if _text(what) == "stuck":
            report_stuck(entry, int(attempts), error)

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
