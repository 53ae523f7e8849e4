"""The audit trail of flag changes: who, when, old -> new, why, forced or not.

    log = FileAuditLog("shadowproxy-flags-audit.jsonl")          # one instance, no Redis
    log = RedisAuditLog("redis://127.0.0.1:6379/0", "shadowproxy:flags:audit")
    await log.append(entry)
    newest_first = await log.history(50, target="users")
    await log.close()

Actors are free text with a kind prefix, so the change counter has few label values
(``actor_kind``): ``config`` (defaults at start), ``guardrail`` (automatic rollback),
``restore`` (state re-written after Redis lost it), ``cli:<user>`` and ``admin:<token name>``.

``RedisAuditLog`` is a capped list (``LPUSH`` + ``LTRIM``), newest at index 0. A
``RedisFlagStore`` writes its entries into that list in the same transaction as the flag
change itself (``RedisAuditLog.key`` on the flag store's Redis), so a change is never
committed without its entry. ``FileAuditLog`` appends one JSON line per entry with
``O_APPEND`` and one ``write`` under an exclusive ``flock`` (writers in several processes do
not interleave); a line torn by a crash is skipped when reading and the next entry starts on
a new line.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from proxy.redis_client import redis_client

log = logging.getLogger("shadowproxy.flags")

ACTOR_KINDS = ("config", "guardrail", "restore", "cli", "admin")
_HISTORY_CHUNK = 256


@dataclass(frozen=True)
class AuditEntry:
    time: float  # seconds since the epoch
    actor: str
    target: str
    flag: str
    old: Any  # JSON-ready flag values; None when the target did not exist before
    new: Any
    reason: str
    forced: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditEntry:
        return cls(
            time=float(data["time"]),
            actor=str(data["actor"]),
            target=str(data["target"]),
            flag=str(data["flag"]),
            old=data.get("old"),
            new=data.get("new"),
            reason=str(data.get("reason", "")),
            forced=bool(data.get("forced", False)),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> AuditEntry:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("audit entry is not a JSON object")
        return cls.from_mapping(data)

    @property
    def actor_kind(self) -> str:
        return actor_kind(self.actor)


def actor_kind(actor: str) -> str:
    """``"cli:alice"`` -> ``"cli"``; one of ACTOR_KINDS or ``"other"`` (bounded label)."""
    kind = actor.partition(":")[0].strip().lower()
    return kind if kind in ACTOR_KINDS else "other"


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        """At most ``limit`` entries, newest first, only ``target``'s when given."""
        ...

    async def close(self) -> None: ...


def _parse(raw: bytes | str) -> AuditEntry | None:
    try:
        return AuditEntry.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None


class MemoryAuditLog:
    """Entries in a bounded deque: tests, and a store that needs no durable trail."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=maxlen)

    async def append(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        for entry in reversed(self._entries):
            if len(out) >= limit:
                break
            if target is None or entry.target == target:
                out.append(entry)
        return out

    async def close(self) -> None:
        return None


class FileAuditLog:
    """JSON lines appended with ``O_APPEND``; the file is never rewritten or truncated."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def append(self, entry: AuditEntry) -> None:
        await asyncio.to_thread(self._append, entry.to_json() + b"\n")

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # writers in other processes too; released on close
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line (a crash mid-write) stays on its own
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        return await asyncio.to_thread(self._history, limit, target)

    def _history(self, limit: int, target: str | None) -> list[AuditEntry]:
        if limit <= 0:
            return []
        newest: deque[AuditEntry] = deque(maxlen=limit)
        try:
            with self.path.open("rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    entry = _parse(line)
                    if entry is None:
                        log.warning("skipping a malformed line in the flag audit log %s", self.path)
                        continue
                    if target is None or entry.target == target:
                        newest.append(entry)
        except FileNotFoundError:
            return []
        return list(reversed(newest))

    async def close(self) -> None:
        return None


class RedisAuditLog:
    """A capped Redis list at ``key``, newest first. ``close()`` closes the client only if
    this log made it from a URL."""

    def __init__(
        self,
        client: aioredis.Redis | str,
        key: str,
        *,
        maxlen: int = 10_000,
        timeout_seconds: float = 1.0,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._owned = isinstance(client, str)
        self._redis = redis_client(client, timeout_seconds) if isinstance(client, str) else client
        self.key = key
        self.maxlen = maxlen

    async def append(self, entry: AuditEntry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, entry.to_json())
            pipe.ltrim(self.key, 0, self.maxlen - 1)
            await pipe.execute()

    async def history(self, limit: int, target: str | None = None) -> list[AuditEntry]:
        if limit <= 0:
            return []
        out: list[AuditEntry] = []
        start = 0
        chunk = limit if target is None else max(limit, _HISTORY_CHUNK)
        while len(out) < limit:
            raw = await self._redis.lrange(self.key, start, start + chunk - 1)
            for item in raw:
                entry = _parse(item)
                if entry is not None and (target is None or entry.target == target):
                    out.append(entry)
                    if len(out) >= limit:
                        break
            if len(raw) < chunk:
                break
            start += chunk
        return out

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()
