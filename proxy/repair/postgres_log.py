"""The repair log as a PostgreSQL table, for teams that keep no Redis."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.errors import ConfigError
from proxy.repair.config import TABLE_PATTERN
from proxy.repair.log import RECENT_SECONDS, RepairEntry, Unsettled, report_stuck
from proxy.store.postgres import Pool, open_pool


class PostgresRepairLog:
    """One row per entry; ``due_at`` is both the retry time and the claim lease, and claims
    use ``FOR UPDATE SKIP LOCKED`` so several repairers share the table.

    An intent is a row with ``hold`` set, due ``intent_grace_seconds`` after it was written
    (``state`` 'intent' until it is escalated or claimed, then 'repair'); settling it stamps
    ``settled_at`` and the row is deleted RECENT_SECONDS later, so ``unsettled`` still sees
    the key's latest write. Times are the database's (``now()``), never an instance's."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "shadowproxy_repair_log",
        max_attempts: int = 100,
        retry_after_seconds: float = 5.0,
        intent_grace_seconds: float = 30.0,
        late_write_seconds: float = 30.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        if not re.fullmatch(TABLE_PATTERN, table):
            raise ConfigError(f"repair.table = {table!r}: not a plain SQL identifier")
        self._dsn = dsn
        self.table = table
        self.max_attempts = max_attempts
        self._retry = retry_after_seconds
        self._grace = self.intent_grace_seconds = intent_grace_seconds
        self._late = late_write_seconds
        self._timeout = timeout_seconds
        self._pool: Pool | None = None
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
            f" ALTER TABLE {t} ADD COLUMN IF NOT EXISTS hold boolean NOT NULL DEFAULT false,"
            "  ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'repair',"
            "  ADD COLUMN IF NOT EXISTS settled_at timestamptz;"
            f' CREATE INDEX IF NOT EXISTS "{table}_due_idx" ON {t} (due_at, id);'
            f' CREATE INDEX IF NOT EXISTS "{table}_key_idx" ON {t} (resource, key);'
        )
        columns = "id, resource, key, op, reason, attempts, last_error, hold"
        self._append = f"INSERT INTO {t} (resource, key, reason, op) VALUES ($1, $2, $3, $4)"
        self._intend = (
            f"INSERT INTO {t} (resource, key, op, reason, hold, state, due_at)"
            " SELECT $1, k, $2, $2 || ': write not confirmed in time', true, 'intent',"
            "  now() + make_interval(secs => $4) FROM unnest($3::text[]) WITH ORDINALITY AS u(k, n)"
            " ORDER BY n RETURNING id"
        )
        self._settle = (
            f"UPDATE {t} SET settled_at = now()"
            " WHERE id = ANY($1::bigint[]) AND settled_at IS NULL AND state = 'intent'"
        )
        self._escalate = (
            f"UPDATE {t} SET reason = $2, state = 'repair',"
            " due_at = now() + make_interval(secs => $3)"
            " WHERE id = ANY($1::bigint[]) AND settled_at IS NULL AND state = 'intent'"
            " RETURNING id"
        )
        recent = f"now() - make_interval(secs => {RECENT_SECONDS})"
        self._unsettled = (
            "SELECT count(*) FILTER (WHERE hold AND settled_at IS NULL AND attempts < $3)"
            "  AS held, coalesce(max(id)::text, '') AS mark"
            f" FROM {t} WHERE resource = $1 AND key = ANY($2::text[])"
            f"  AND (settled_at IS NULL OR settled_at > {recent})"
        )
        self._forget = (
            f"DELETE FROM {t} WHERE settled_at < now() - make_interval(secs => {RECENT_SECONDS})"
        )
        self._claim = (
            f"UPDATE {t} SET due_at = now() + make_interval(secs => $2), state = 'repair'"
            f" WHERE id IN (SELECT id FROM {t} WHERE due_at <= now() AND attempts < $3"
            "  AND settled_at IS NULL ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {columns}"
        )
        self._done = f"DELETE FROM {t} WHERE id = $1"
        self._failed = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = $2,"
            " due_at = now() + make_interval(secs => $3) WHERE id = $1 RETURNING attempts"
        )
        self._depth = (
            f"SELECT count(*) FROM {t} WHERE settled_at IS NULL"
            "  AND (state = 'repair' OR due_at <= now())"
        )
        self._in_flight = (
            f"SELECT count(*) FROM {t} WHERE state = 'intent' AND settled_at IS NULL"
            " AND due_at > now()"
        )
        stuck = "attempts >= $1 AND settled_at IS NULL"
        self._stuck_count = f"SELECT count(*) FROM {t} WHERE {stuck}"
        self._stuck = f"SELECT {columns} FROM {t} WHERE {stuck} ORDER BY id LIMIT $2"
        self._retry_stuck = (
            f"UPDATE {t} SET attempts = 0, due_at = now() WHERE attempts >= $1 RETURNING id"
        )

    async def init(self) -> None:
        pool = await self._open()
        async with pool.acquire() as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide; serialise them.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await conn.execute(self._create)

    async def _open(self) -> Pool:
        if self._pool is None:
            self._pool = await open_pool(self._dsn, max_size=4, timeout=self._timeout)
        return self._pool

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        pool = await self._open()
        await pool.execute(self._append, resource, key, reason, op)

    async def intend(self, resource: str, keys: Sequence[str], *, op: str) -> list[str]:
        if not keys:
            return []
        pool = await self._open()
        rows = await pool.fetch(self._intend, resource, op, list(keys), self._grace)
        return [str(row["id"]) for row in rows]

    async def settle(self, ids: Sequence[str]) -> None:
        if ids:
            pool = await self._open()
            await pool.execute(self._settle, [int(i) for i in ids])

    async def escalate(self, ids: Sequence[str], reason: str, *, late: bool = False) -> list[str]:
        if not ids:
            return []
        pool = await self._open()
        delay = self._late if late else self._retry
        rows = await pool.fetch(self._escalate, [int(i) for i in ids], reason, delay)
        found = {str(row["id"]) for row in rows}
        return [i for i in ids if i not in found]

    async def unsettled(self, resource: str, keys: Sequence[str]) -> Unsettled:
        pool = await self._open()
        row = await pool.fetchrow(self._unsettled, resource, list(keys), self.max_attempts)
        assert row is not None  # an aggregate always returns one row
        return Unsettled(int(row["held"]), str(row["mark"]))

    async def claim(self, limit: int) -> list[RepairEntry]:
        pool = await self._open()
        await pool.execute(self._forget)
        rows = await pool.fetch(self._claim, limit, self._retry, self.max_attempts)
        return [_row_entry(row) for row in sorted(rows, key=lambda r: r["id"])]

    async def done(self, entry: RepairEntry) -> None:
        pool = await self._open()
        await pool.execute(self._done, int(entry.id))

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        pool = await self._open()
        delay = self._late if late else self._retry
        attempts = await pool.fetchval(self._failed, int(entry.id), error, delay)
        if attempts is not None and attempts >= self.max_attempts:
            report_stuck(entry, attempts, error)

    async def depth(self) -> int:
        pool = await self._open()
        return int(await pool.fetchval(self._depth))

    async def in_flight(self) -> int:
        pool = await self._open()
        return int(await pool.fetchval(self._in_flight))

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
        hold=str(row["id"]) if row["hold"] else "",
    )
