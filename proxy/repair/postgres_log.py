"""The repair log as a PostgreSQL table, for teams that keep no Redis."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.errors import ConfigError
from proxy.repair.config import TABLE_PATTERN
from proxy.repair.log import RECENT_SECONDS, RepairEntry, Unsettled, report_stuck
from proxy.store.postgres import Pool, open_pool


class PostgresRepairLog:
    """One row per entry; ``due_at`` is both the retry time and the claim lease, and claims
    use ``FOR UPDATE SKIP LOCKED`` so several repairers share the table. ``claimed_by``
    names the last claimer (a take-over claims rows of every other claimer whatever their
    ``due_at``) and ``late_until`` holds back a row whose repair's write of unknown outcome
    may still land, from every claimer, take-overs included.

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
        consumer: str | None = None,
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
        # Unique per object, like a Redis consumer: it tells this claimer's rows from others'.
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
            "  ADD COLUMN IF NOT EXISTS settled_at timestamptz,"
            "  ADD COLUMN IF NOT EXISTS claimed_by text,"
            "  ADD COLUMN IF NOT EXISTS late_until timestamptz;"
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
        claimable = (
            "attempts < $3 AND settled_at IS NULL AND (late_until IS NULL OR late_until <= now())"
        )
        claim = (
            f"UPDATE {t} SET due_at = now() + make_interval(secs => $2), state = 'repair',"
            f" claimed_by = $4 WHERE id IN (SELECT id FROM {t} WHERE {claimable} AND {{due}}"
            "  ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {columns}"
        )
        self._claim = claim.format(due="due_at <= now()")
        self._take_over = claim.format(
            due="(due_at <= now() OR (claimed_by IS NOT NULL AND claimed_by <> $4))"
        )
        # Nobody's write may still land (late_until passed): the row goes; else it stays
        # until then, held, for the late repair.
        self._done = (
            f"DELETE FROM {t} WHERE id = $1 AND (late_until IS NULL OR late_until <= now())"
        )
        # Counted only by the row's claimer (a row claimed before claimed_by existed has
        # none); another claimer's failure counts nothing unless late, and then holds the
        # row back from everyone until late_write_seconds from now.
        mine = "(claimed_by IS NULL OR claimed_by = $4)"
        wait = "now() + make_interval(secs => $3)"
        self._failed = (
            f"UPDATE {t} SET attempts = attempts + {mine}::int, last_error = $2,"
            f" due_at = CASE WHEN {mine} THEN {wait} ELSE greatest(due_at, {wait}) END,"
            f" late_until = CASE WHEN $5 THEN greatest(late_until, {wait}) ELSE late_until END"
            f" WHERE id = $1 AND ($5 OR {mine}) RETURNING attempts, {mine} AS mine"
        )
        # A late failure of an entry repaired meanwhile: the key is logged again, held.
        self._relog = (
            f"INSERT INTO {t} (resource, key, op, reason, attempts, last_error, hold,"
            " due_at, late_until) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " now() + make_interval(secs => $8), now() + make_interval(secs => $8))"
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

    async def claim(self, limit: int, *, take_over: bool = False) -> list[RepairEntry]:
        pool = await self._open()
        await pool.execute(self._forget)
        query = self._take_over if take_over else self._claim
        rows = await pool.fetch(query, limit, self._retry, self.max_attempts, self.consumer)
        return [_row_entry(row) for row in sorted(rows, key=lambda r: r["id"])]

    async def done(self, entry: RepairEntry) -> None:
        pool = await self._open()
        await pool.execute(self._done, int(entry.id))

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        pool = await self._open()
        delay = self._late if late else self._retry
        row = await pool.fetchrow(self._failed, int(entry.id), error, delay, self.consumer, late)
        if row is None and late:
            await pool.execute(
                self._relog, entry.resource, entry.key, entry.op, entry.reason,
                entry.attempts + 1, error, bool(entry.hold), delay,
            )  # fmt: skip
        elif row is not None and row["mine"] and row["attempts"] >= self.max_attempts:
            report_stuck(entry, row["attempts"], error)

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
