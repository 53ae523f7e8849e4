"""The repair log and the repairer: a dual write whose second store failed is made good later.

    log = make_repair_log(RepairConfig())              # Redis stream, or a PostgreSQL table
    await log.init()
    await log.append("users", key_text, "dynamodb put: StoreTimeout")   # on the write path
    repairer = Repairer(log, {"users": RepairTarget(pg, ddb, schema.parse_key)},
                        RepairMetrics.create(registry))
    spawn(repairer.run_forever(stop), name="repairer")  # or: await repairer.drain()

An entry carries only the key, never the record: a repair copies the primary's CURRENT state
of the key to the secondary (or deletes it there), so repairing is idempotent, duplicates
are harmless and the order entries are repaired in does not matter. ``repair_key`` re-reads
the primary after writing and goes again if the record moved meanwhile, so a repair racing
a newer successful dual write cannot leave the secondary on the older version.

Lifecycle of an entry: ``append`` → ``claim`` (invisible to other claimers for
``retry_after_seconds``) → ``done`` (removed) or ``failed`` (attempts + 1, claimable again
after ``retry_after_seconds``). After ``max_attempts`` failures an entry is *stuck*: no
longer claimed, still counted in ``depth()``, listed by ``stuck()`` and put back in play by
``retry_stuck()`` (``shadowproxy reconcile``). Nothing is ever dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from proxy.errors import ConfigError
from proxy.redis_client import redis_client
from proxy.store.base import Record, RecordNotFound

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("shadowproxy.repair")

MAX_REPAIR_ROUNDS = 3
ERROR_LOG_SECONDS = 60.0
_TABLE = r"^[A-Za-z_][A-Za-z0-9_]{0,53}$"  # leaves room for the index name's suffix


class RepairConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["redis", "postgres"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    dsn: str | None = None
    stream: str = Field("shadowproxy:repair", min_length=1)
    group: str = Field("shadowproxy-repairers", min_length=1)
    table: str = Field("shadowproxy_repair_log", pattern=_TABLE)
    interval_seconds: float = Field(1.0, gt=0)
    batch: int = Field(100, ge=1, le=10_000)
    concurrency: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(100, ge=1)
    retry_after_seconds: float = Field(5.0, gt=0)
    timeout_seconds: float = Field(2.0, gt=0)


@dataclass(frozen=True, slots=True)
class RepairEntry:
    id: str
    resource: str
    key: str
    reason: str
    attempts: int = 0
    op: str = ""
    last_error: str | None = None


class RepairLog(Protocol):
    async def init(self) -> None:
        """Create what is missing (stream group, table), idempotently."""

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None: ...

    async def claim(self, limit: int) -> list[RepairEntry]:
        """Entries due now, hidden from other claimers for ``retry_after_seconds``."""

    async def done(self, entry: RepairEntry) -> None: ...

    async def failed(self, entry: RepairEntry, error: str) -> None:
        """Attempts + 1; the entry stays pending (stuck after ``max_attempts``)."""

    async def depth(self) -> int:
        """Entries not yet repaired, stuck ones included."""

    async def stuck_count(self) -> int: ...

    async def stuck(self, limit: int = 100) -> list[RepairEntry]: ...

    async def retry_stuck(self) -> int:
        """Make every stuck entry claimable again with zero attempts; returns how many."""

    async def close(self) -> None: ...


def make_repair_log(config: RepairConfig, *, default_dsn: str | None = None) -> RepairLog:
    """``default_dsn`` (e.g. the PostgreSQL store's) serves when ``config.dsn`` is unset."""
    if config.kind == "redis":
        return RedisRepairLog(
            config.url,
            stream=config.stream,
            group=config.group,
            max_attempts=config.max_attempts,
            retry_after_seconds=config.retry_after_seconds,
            timeout_seconds=config.timeout_seconds,
        )
    dsn = config.dsn or default_dsn
    if not dsn:
        raise ConfigError("repair.dsn: required when repair.kind is 'postgres'")
    return PostgresRepairLog(
        dsn,
        table=config.table,
        max_attempts=config.max_attempts,
        retry_after_seconds=config.retry_after_seconds,
        timeout_seconds=config.timeout_seconds,
    )


# --- Redis ---------------------------------------------------------------------------------


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
        _report_stuck(entry, attempts, error)

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


class PostgresRepairLog:
    """One row per entry; ``due_at`` is both the retry time and the claim lease, and claims
    use ``FOR UPDATE SKIP LOCKED`` so several repairers share the table."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "shadowproxy_repair_log",
        max_attempts: int = 100,
        retry_after_seconds: float = 5.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        if not re.fullmatch(_TABLE, table):
            raise ConfigError(f"repair.table = {table!r}: not a plain SQL identifier")
        self._dsn = dsn
        self.table = table
        self.max_attempts = max_attempts
        self._retry = retry_after_seconds
        self._timeout = timeout_seconds
        self._pool: asyncpg.Pool | None = None
        t = f'"{table}"'
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " id bigserial PRIMARY KEY,"
            " resource text NOT NULL,"
            " key text NOT NULL,"
            " op text NOT NULL DEFAULT '',"
            " reason text NOT NULL DEFAULT '',"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " attempts integer NOT NULL DEFAULT 0,"
            " last_error text,"
            " due_at timestamptz NOT NULL DEFAULT now());"
            f' CREATE INDEX IF NOT EXISTS "{table}_due_idx" ON {t} (due_at, id);'
        )
        columns = "id, resource, key, op, reason, attempts, last_error"
        self._append = f"INSERT INTO {t} (resource, key, reason, op) VALUES ($1, $2, $3, $4)"
        self._claim = (
            f"UPDATE {t} SET due_at = now() + make_interval(secs => $2)"
            f" WHERE id IN (SELECT id FROM {t} WHERE due_at <= now() AND attempts < $3"
            "  ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {columns}"
        )
        self._done = f"DELETE FROM {t} WHERE id = $1"
        self._failed = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = $2,"
            " due_at = now() + make_interval(secs => $3) WHERE id = $1 RETURNING attempts"
        )
        self._depth = f"SELECT count(*) FROM {t}"
        self._stuck_count = f"SELECT count(*) FROM {t} WHERE attempts >= $1"
        self._stuck = f"SELECT {columns} FROM {t} WHERE attempts >= $1 ORDER BY id LIMIT $2"
        self._retry_stuck = (
            f"UPDATE {t} SET attempts = 0, due_at = now() WHERE attempts >= $1 RETURNING id"
        )

    async def init(self) -> None:
        pool = await self._open()
        async with pool.acquire() as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide; serialise them.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await conn.execute(self._create)

    async def _open(self) -> asyncpg.Pool:
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=4,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        return self._pool

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        pool = await self._open()
        await pool.execute(self._append, resource, key, reason, op)

    async def claim(self, limit: int) -> list[RepairEntry]:
        pool = await self._open()
        rows = await pool.fetch(self._claim, limit, self._retry, self.max_attempts)
        return [_row_entry(row) for row in sorted(rows, key=lambda r: r["id"])]

    async def done(self, entry: RepairEntry) -> None:
        pool = await self._open()
        await pool.execute(self._done, int(entry.id))

    async def failed(self, entry: RepairEntry, error: str) -> None:
        pool = await self._open()
        attempts = await pool.fetchval(self._failed, int(entry.id), error, self._retry)
        if attempts is not None and attempts >= self.max_attempts:
            _report_stuck(entry, attempts, error)

    async def depth(self) -> int:
        pool = await self._open()
        return int(await pool.fetchval(self._depth))

    async def stuck_count(self) -> int:
        pool = await self._open()
        return int(await pool.fetchval(self._stuck_count, self.max_attempts))

    async def stuck(self, limit: int = 100) -> list[RepairEntry]:
        pool = await self._open()
        rows = await pool.fetch(self._stuck, self.max_attempts, limit)
        return [_row_entry(row) for row in rows]

    async def retry_stuck(self) -> int:
        pool = await self._open()
        return len(await pool.fetch(self._retry_stuck, self.max_attempts))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _row_entry(row: Mapping[str, Any]) -> RepairEntry:
    return RepairEntry(
        id=str(row["id"]),
        resource=row["resource"],
        key=row["key"],
        reason=row["reason"],
        attempts=row["attempts"],
        op=row["op"],
        last_error=row["last_error"],
    )


def _report_stuck(entry: RepairEntry, attempts: int, error: str) -> None:
    log.error(
        "repair entry stuck after %d attempts; reconcile retries it: %s",
        attempts,
        error,
        extra={"resource": entry.resource, "entry": entry.id},
    )


# --- repairing -----------------------------------------------------------------------------


class Source(Protocol):
    """The part of ``proxy.store.base.Store`` a repair reads from (the primary)."""

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None: ...


class Target(Protocol):
    """The part of ``proxy.store.base.Store`` a repair writes to (the secondary)."""

    async def put(self, record: Record) -> None: ...

    async def delete(self, key: Any) -> None: ...


class RepairRace(Exception):
    """The primary's record kept changing while it was being copied; retried later."""


async def repair_key(primary: Source, secondary: Target, key: Any) -> str:
    """Make the secondary hold the primary's current state of ``key``: ``"copied"`` or
    ``"deleted"``. The primary is read again after the write; if a newer write landed in
    between (whose own secondary write may have been overtaken by ours) the copy repeats."""
    current: Record | None = await primary.get(key)
    for _ in range(MAX_REPAIR_ROUNDS):
        if current is None:
            with suppress(RecordNotFound):
                await secondary.delete(key)
        else:
            await secondary.put(current)
        after = await primary.get(key)
        if after == current:
            return "deleted" if current is None else "copied"
        current = after
    raise RepairRace(f"record changed during {MAX_REPAIR_ROUNDS} repair rounds")


class RepairTarget(NamedTuple):
    primary: Source
    secondary: Target
    decode_key: Callable[[str], Any]


@dataclass(frozen=True)
class RepairMetrics:
    depth: Gauge
    stuck: Gauge
    repairs: Counter
    log_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RepairMetrics:
        return cls(
            depth=Gauge(
                "shadowproxy_repair_log_depth",
                "Repair log entries not yet repaired (stuck ones included).",
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            stuck=Gauge(
                "shadowproxy_repair_log_stuck",
                "Repair log entries past max_attempts, waiting for reconcile.",
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            repairs=Counter(
                "shadowproxy_repairs",
                "Repair attempts by resource and result: repaired, failed.",
                ("resource", "result"),
                registry=registry,
            ),
            log_errors=Counter(
                "shadowproxy_repair_log_errors",
                "Repair rounds or log updates that failed because the repair log did.",
                registry=registry,
            ),
        )


class Repairer:
    def __init__(
        self,
        log: RepairLog,
        targets: Mapping[str, RepairTarget],
        metrics: RepairMetrics,
        *,
        interval_seconds: float = 1.0,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self._log = log
        self._targets = dict(targets)
        self._metrics = metrics
        self._interval = interval_seconds
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._last_logged = float("-inf")

    @classmethod
    def from_config(
        cls,
        config: RepairConfig,
        log: RepairLog,
        targets: Mapping[str, RepairTarget],
        metrics: RepairMetrics,
    ) -> Repairer:
        return cls(
            log,
            targets,
            metrics,
            interval_seconds=config.interval_seconds,
            batch=config.batch,
            concurrency=config.concurrency,
        )

    async def run_once(self) -> tuple[int, int]:
        """Repair one claimed batch; returns (repaired, failed). Raises if the log does."""
        entries = await self._log.claim(self._batch)
        results = await asyncio.gather(*map(self._repair, entries), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self._metrics.log_errors.inc()
                self._log_error("repair log update failed", result)
        await self.refresh_gauges()
        repaired = sum(1 for r in results if r is True)
        return repaired, len(results) - repaired

    async def drain(self) -> tuple[int, int]:
        """Repair until nothing is due (failed entries wait ``retry_after_seconds``)."""
        total_repaired = total_failed = 0
        while True:
            repaired, failed = await self.run_once()
            total_repaired += repaired
            total_failed += failed
            if repaired + failed == 0:
                return total_repaired, total_failed

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                repaired, failed = await self.run_once()
            except Exception as e:
                self._metrics.log_errors.inc()
                self._log_error("repair round failed", e)
                repaired, failed = 0, 0
            if repaired == self._batch and failed == 0:
                await asyncio.sleep(0)  # a backlog: go on, but let the loop breathe
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def refresh_gauges(self) -> None:
        self._metrics.depth.set(await self._log.depth())
        self._metrics.stuck.set(await self._log.stuck_count())

    async def _repair(self, entry: RepairEntry) -> bool:
        async with self._limit:
            try:
                target = self._targets.get(entry.resource)
                if target is None:
                    raise LookupError(f"resource {entry.resource!r} is not configured")
                await repair_key(target.primary, target.secondary, target.decode_key(entry.key))
            except Exception as e:
                self._metrics.repairs.labels(entry.resource, "failed").inc()
                log.debug("repair of %s failed: %r", entry.resource, e)
                await self._log.failed(entry, f"{type(e).__name__}: {e}"[:1000])
                return False
            await self._log.done(entry)
            self._metrics.repairs.labels(entry.resource, "repaired").inc()
            return True

    def _log_error(self, message: str, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged >= ERROR_LOG_SECONDS:
            self._last_logged = now
            log.warning("%s: %s: %s", message, type(error).__name__, error)
