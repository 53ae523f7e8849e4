"""Mismatch sinks: records are queued without waiting and written in batches off the
request path. A full queue drops the record and counts it; a sink failure is counted and
never reaches a client."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from proxy.metrics import Metrics
from proxy.settings import JsonlSink, RedisSink
from proxy.store import exactjson
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.sink")


class Writer(Protocol):
    name: str

    async def write_batch(self, lines: list[bytes]) -> None: ...

    async def recent(self, limit: int) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class JsonlWriter:
    """Appends JSON lines; rotates to ``.1`` … ``.N`` when the file passes ``max_bytes``."""

    name = "jsonl"

    def __init__(self, config: JsonlSink) -> None:
        self.path = Path(config.path)
        self.max_bytes = config.max_bytes
        self.backups = config.backups

    async def write_batch(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: list[bytes]) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        pending: list[bytes] = []
        for line in lines:
            if size and size + len(line) > self.max_bytes:
                self._write(b"".join(pending))
                pending = []
                self._rotate()
                size = 0
            pending.append(line)
            size += len(line)
        self._write(b"".join(pending))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        # O_APPEND keeps lines whole when several worker processes share the file.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # the first write, or the folder was removed since
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._tail, limit)

    def _tail(self, limit: int) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                chunk = min(end, max(64 * 1024, limit * 8 * 1024))
                f.seek(end - chunk)
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        if chunk < end:
            lines = lines[1:]  # the first line may be cut
        out = []
        for line in reversed(lines):
            try:
                out.append(exactjson.loads(line))
            except exactjson.JSONDecodeError:
                continue
            if len(out) >= limit:
                break
        return out

    async def close(self) -> None:
        return None


class RedisStreamWriter:
    """XADD to a stream capped at ``maxlen`` entries (approximate trimming)."""

    name = "redis"

    def __init__(self, config: RedisSink) -> None:
        import redis.asyncio as aioredis

        self.stream = config.stream
        self.maxlen = config.maxlen
        self._redis = aioredis.Redis.from_url(config.url, socket_timeout=2)

    async def write_batch(self, lines: list[bytes]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.xadd(self.stream, {"record": line}, maxlen=self.maxlen, approximate=True)
            await pipe.execute()

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        entries = await self._redis.xrevrange(self.stream, count=limit) or []
        return [exactjson.loads(fields[b"record"]) for _, fields in entries if fields]

    async def close(self) -> None:
        await self._redis.aclose()


#: How long the writer waits after a record for more to join it in one batch. Without it
#: every record at a hundred a second was a batch of its own: a thread hand-off, a stat and an
#: open per record, ~5% of the CPU of a proxy whose every answer mismatches.
LINGER_SECONDS = 0.05


class BufferedSink:
    def __init__(
        self,
        writer: Writer,
        metrics: Metrics,
        *,
        capacity: int = 10_000,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self.writer = writer
        self._metrics = metrics
        self._linger = linger
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(capacity)
        self._task: asyncio.Task[Any] | None = None

    def submit(self, record: Mapping[str, Any]) -> None:
        """Never blocks: a full queue drops the record (counted)."""
        try:
            # Exact numbers: a difference in a 20th digit (or beyond 64 bits) is shown as is.
            self._queue.put_nowait(exactjson.dumps(record, default=str) + b"\n")
        except asyncio.QueueFull:
            self._metrics.sink_records.labels(self.writer.name, "dropped").inc()
            return
        if self._task is None or self._task.done():
            self._task = spawn(self._drain(), name="sink-writer")

    async def _drain(self) -> None:
        await asyncio.sleep(self._linger)
        while not self._queue.empty():
            batch = [self._queue.get_nowait() for _ in range(min(500, self._queue.qsize()))]
            try:
                await self.writer.write_batch(batch)
            except Exception:
                self._metrics.sink_records.labels(self.writer.name, "error").inc(len(batch))
                log.exception("mismatch sink write failed", extra={"sink": self.writer.name})
            else:
                self._metrics.sink_records.labels(self.writer.name, "written").inc(len(batch))

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        await self.flush()
        return await self.writer.recent(limit)

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        if not self._queue.empty():
            await self._drain()

    async def close(self) -> None:
        await self.flush()
        await self.writer.close()


def make_sink(config: JsonlSink | RedisSink, metrics: Metrics) -> BufferedSink:
    writer: Writer = (
        JsonlWriter(config) if isinstance(config, JsonlSink) else RedisStreamWriter(config)
    )
    return BufferedSink(writer, metrics)
