"""The repair log as a Redis stream read through a consumer group (the default)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from proxy.redis_client import redis_client
from proxy.repair.log import RepairEntry, report_stuck

log = logging.getLogger("shadowproxy.repair")

# Deleting a consumer drops its pending entries (the group would never deliver them again),
# so it is deleted only when it holds none, atomically.
_DELETE_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


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

    async def init(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        fields = {"resource": resource, "key": key, "reason": reason, "op": op}
        await self._redis.xadd(self.stream, fields)  # type: ignore[arg-type]

    async def claim(self, limit: int) -> list[RepairEntry]:
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
        )

    async def done(self, entry: RepairEntry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            pipe.hdel(self._attempts, entry.id)
            pipe.hdel(self._errors, entry.id)
            await pipe.execute()

    async def failed(self, entry: RepairEntry, error: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._attempts, entry.id, 1)
            pipe.hset(self._errors, entry.id, error)
            attempts, _ = await pipe.execute()
        if attempts < self.max_attempts:
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
        report_stuck(entry, attempts, error)

    async def depth(self) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xlen(self._stuck)
            pending, stuck = await pipe.execute()
        return int(pending) + int(stuck)

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
