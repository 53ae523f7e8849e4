"""The PostgreSQL store: one table, one column per field, an asyncpg pool.

    store = PostgresStore("postgresql://postgres@127.0.0.1/app", "users", schema)
    await store.open()
    await store.init()          # CREATE TABLE / ADD COLUMN / CREATE INDEX ... IF NOT EXISTS
    record = await store.get(key)
    await store.close()

Lists are ordered by key and resume after the cursor's key. Scan segments are key ranges
for uuid keys (index friendly) and hash buckets of the key text otherwise. An update that
would make a record larger than the schema's ``max_record_bytes`` is rolled back
(``LimitExceeded``, a 413).

A released connection whose operation ended cleanly (no error, no transaction open) waits for
the next caller in the store's own idle list instead of going through asyncpg's release, which
shields a task and arms a reset timeout per call: with the list, store mode with no shadow cost
0.86x the CPU per request (``tests/benchmarks/side_by_side.py --phase store-shadow0``). The
pool stays asyncpg's: a connection goes back to it when a caller waits for one, after an error
or an open transaction (asyncpg's reset rolls it back), after ``IDLE_KEEP_SECONDS`` unused,
and on close.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, TypeAlias

import asyncpg
import orjson

from proxy.store import cursor as cursors
from proxy.store.base import (
    InvalidCursor,
    InvalidRecord,
    ItemResult,
    ItemResults,
    KeyConflict,
    Record,
    RecordNotFound,
    Records,
    ScanPage,
    StoreBusy,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from proxy.store.codec_postgres import (
    COMPARED_STEPS,
    decode_row,
    decode_row_keyed,
    decode_value,
    encode_value,
    encode_values,
)
from proxy.store.compared import NO_KEY, ComparedDecoder
from proxy.store.fieldtypes import InvalidField
from proxy.store.postgres_sql import Statements
from proxy.store.schema import Schema, SchemaError
from proxy.store.sizes import check_record_size

KIND = "postgres"
_UUID_SPACE = 2**128

Pool: TypeAlias = asyncpg.Pool
# How long a released connection waits for its next caller in the store's own idle list before
# it goes back to asyncpg's pool (where asyncpg's idle lifetime and query limits apply to it).
IDLE_KEEP_SECONDS = 30.0


async def open_pool(dsn: str, *, max_size: int, timeout: float) -> Pool:
    """A small pool for our own bookkeeping tables (the repair log), so asyncpg stays
    imported here only."""
    pool: Pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, timeout=timeout, command_timeout=timeout
    )
    return pool


class PostgresStore:
    kind = KIND

    def __init__(
        self,
        dsn: str,
        table: str,
        schema: Schema,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = 10.0,
        connect_timeout: float = 5.0,
        batch_rows: int = 1000,
        scan_page: int = 1000,
        max_waiting: int | None = None,
    ) -> None:
        self.dsn = dsn
        self.table = table
        self.schema = schema
        self._sql = Statements(schema, table)
        self._get_all = self._sql.get(schema.field_names)
        # A whole-record read by a uuid or bigint key need not read the key back: the row
        # matched ``key = $1``, and equal values of these types are the same value (unlike
        # text under a non-deterministic collation). Decoding asyncpg's UUID into a plain
        # one was ~3% of a store-mode worker's samples (py-spy, shadow 0%).
        key_type = schema.key_field.type
        rest = tuple(name for name in schema.field_names if name != schema.key)
        self._implied_key = key_type.container is None and key_type.base in ("uuid", "int")
        self._get_rest = self._sql.get(rest) if self._implied_key and rest else self._get_all
        self._compared = ComparedDecoder(schema, COMPARED_STEPS, decode_value)
        self._pool_args = {
            "min_size": min_size,
            "max_size": max_size,
            "command_timeout": command_timeout,
            "timeout": connect_timeout,
        }
        self._acquire_timeout = connect_timeout
        self._pool_max = max_size
        self._in_use = 0  # connections acquired and not yet released, and callers waiting
        self._max_waiting = max_waiting  # None: waits bounded by the acquire timeout only
        self._batch_rows = max(1, min(batch_rows, self._sql.max_rows()))
        self._scan_page = scan_page
        self._pool: asyncpg.Pool | None = None
        # Released connections kept for the next caller, newest last (see ``_release``).
        self._idle: deque[tuple[asyncpg.Connection, float]] = deque()
        # Callers waiting while every connection is held, oldest first (see ``_wait``).
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()

    async def open(self) -> None:
        if self._pool is None:
            with _translate():
                self._pool = await asyncpg.create_pool(
                    self.dsn, reset=_rollback_if_in_transaction, **self._pool_args
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        idle, self._idle = self._idle, deque()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(StoreUnavailable(f"postgres store for {self.table!r} closed"))
        if pool is not None:
            for conn, _ in idle:  # asyncpg's close waits for every acquired connection
                await pool.release(conn)
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def init(self) -> None:
        """Create the table, missing columns and indexes; safe to run concurrently."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"shadowproxy:{self.table}"
            )
            for statement in self._sql.create():
                await conn.execute(statement)

    # reads ------------------------------------------------------------------------------

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
        row, names, key = await self._get_row(key, fields)
        if row is None:
            return None
        if key is not NO_KEY:
            return decode_row_keyed(self.schema, row, key)
        return decode_row(self.schema, row, names)

    async def get_compared(self, key: Any, fields: Sequence[str] | None = None) -> Any:
        """What a comparison reads of ``get(key, fields)``: ``schema.to_json(record,
        fields=fields, drift=True)``, or None, decoded straight from the row
        (``proxy.store.compared``)."""
        row, names, key = await self._get_row(key, fields)
        if row is None:
            return None
        return self._compared.decode(row, names if fields is None else dict.fromkeys(fields), key)

    async def _get_row(
        self, key: Any, fields: Sequence[str] | None
    ) -> tuple[asyncpg.Record | None, Sequence[str], Any]:
        """The row, the names it holds, and the canonical key when the row does not hold
        it (a whole record by a uuid or bigint key), else ``NO_KEY``."""
        schema = self.schema
        implied = NO_KEY
        if fields is None and self._implied_key:
            # The record's key (canonical: itself); a key not of this type goes to asyncpg,
            # which refuses it as before.
            with suppress(InvalidField):
                implied = schema.key_field.canonical(key)
        if implied is not NO_KEY:
            key, names, sql = implied, schema.field_names, self._get_rest
        else:
            names = schema.check_fields(fields) if fields is not None else schema.field_names
            sql = self._get_all if fields is None else self._sql.get(names)
        # The hot path: no context-manager generators, only what the read needs.
        try:
            conn = await self._acquire()
            try:
                row = await conn.fetchrow(sql, self._key(key))
            except BaseException:
                await self._release(conn, clean=False)
                raise
            await self._release(conn)
        except _TRANSLATED as e:
            raise _translated(e) from e
        return row, names, implied

    async def query_index(self, index: str, value: Any, limit: int) -> Records:
        spec = self.schema.index(index)
        encoded = encode_value(self.schema.fields[spec.field], value)
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.by_index(spec.field), encoded, _positive(limit))
        return self._decode(rows)

    async def list(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None = None
    ) -> tuple[Records, str | None]:
        self.schema.check_filters(filters)
        shape = [(name, value is None) for name, value in filters.items()]
        params = [
            encode_value(self.schema.fields[name], value)
            for name, value in filters.items()
            if value is not None
        ]
        if cursor is not None:
            params.append(self._key(cursors.decode(KIND, self.schema, cursor)))
        params.append(_positive(limit) + 1)
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.list_page(shape, cursor is not None), *params)
        records = self._decode(rows[:limit])
        more = len(rows) > limit
        return records, cursors.encode(
            KIND, self.schema, records[-1][self.schema.key]
        ) if more else None

    async def batch_get(self, keys: Sequence[Any]) -> Records:
        wanted = list(dict.fromkeys(keys))
        found: dict[Any, Record] = {}
        async with self._connection() as conn:
            for start in range(0, len(wanted), self._batch_rows):
                chunk = [self._key(k) for k in wanted[start : start + self._batch_rows]]
                for record in self._decode(await conn.fetch(self._sql.batch_get(), chunk)):
                    found[record[self.schema.key]] = record
        return [found[k] for k in wanted if k in found]

    async def scan_pages(
        self, segment: int, total_segments: int, *, after: str | None = None
    ) -> AsyncIterator[ScanPage]:
        """Keyset pages in key order: a uuid key's segment is a range of the uuid space,
        any other key's a hash bucket. ``position`` is the page's last key as JSON."""
        _check_segment(segment, total_segments)
        by_range = self.schema.key_field.type.base == "uuid"
        if by_range:
            low = uuid.UUID(int=segment * _UUID_SPACE // total_segments)
            high = (
                uuid.UUID(int=(segment + 1) * _UUID_SPACE // total_segments)
                if segment + 1 < total_segments
                else None
            )
            bounds: list[Any] = [low, high]
        else:
            bounds = [segment, total_segments]
        last: Any = None if after is None else self._position_key(after)
        while True:
            params = [*bounds, *([] if last is None else [self._key(last)]), self._scan_page]
            async with self._connection() as conn:
                rows = await conn.fetch(self._sql.scan_page(by_range, last is not None), *params)
            records = self._decode(rows)
            if len(rows) < self._scan_page:
                yield ScanPage(records, None)
                return
            last = decode_value(self.schema.key_field, rows[-1][self.schema.key])
            yield ScanPage(records, orjson.dumps(self.schema.render_key(last)).decode())

    def _position_key(self, position: str) -> Any:
        try:
            return self.schema.validate_value(self.schema.key, orjson.loads(position))
        except (orjson.JSONDecodeError, SchemaError) as e:
            raise InvalidCursor(f"not a scan position of this table: {position[:80]!r}") from e

    # writes -----------------------------------------------------------------------------

    async def create(self, record: Record) -> None:
        params = encode_values(self.schema, record, self.schema.field_names)
        async with self._connection() as conn:
            await conn.execute(self._sql.insert(), *params)

    async def put(self, record: Record) -> None:
        params = encode_values(self.schema, record, self.schema.field_names)
        async with self._connection() as conn:
            await conn.execute(self._sql.upsert(1), *params)

    async def update(self, key: Any, changes: Mapping[str, Any]) -> Record:
        changes = self.schema.check_changes(key, changes)
        if not changes:
            record = await self.get(key)
            if record is None:
                raise RecordNotFound(f"{self.schema.name} {key!s} not found")
            return record
        names = tuple(changes)
        params = encode_values(self.schema, changes, names)
        # The updated record must stay within max_record_bytes (the other store could never
        # take it otherwise): measured inside the transaction, a larger one is rolled back.
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(self._sql.update(names), self._key(key), *params)
            if row is None:
                raise RecordNotFound(f"{self.schema.name} {key!s} not found")
            record = decode_row(self.schema, row, self.schema.field_names)
            check_record_size(self.schema, record, changed=names)
        return record

    async def delete(self, key: Any) -> None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql.delete(), self._key(key))
        if row is None:
            raise RecordNotFound(f"{self.schema.name} {key!s} not found")

    async def batch_put(self, records: Sequence[Record]) -> ItemResults:
        """Upsert in one transaction, one multi-row statement per chunk; the last record
        wins when a key repeats. A record that cannot be encoded fails alone; the others
        all succeed or all fail with the same error."""
        key_name = self.schema.key
        own_errors: dict[int, StoreError] = {}
        latest: dict[Any, list[Any]] = {}
        for position, record in enumerate(records):
            if record.get(key_name) is None:
                own_errors[position] = InvalidRecord("record has no key")
                continue
            try:
                latest[record[key_name]] = encode_values(
                    self.schema, record, self.schema.field_names
                )
            except StoreError as e:
                own_errors[position] = e
        error: StoreError | None = None
        rows = list(latest.values())
        try:
            async with self._connection() as conn, conn.transaction():
                for start in range(0, len(rows), self._batch_rows):
                    chunk = rows[start : start + self._batch_rows]
                    params = [value for row in chunk for value in row]
                    await conn.execute(self._sql.upsert(len(chunk)), *params)
        except StoreError as e:
            error = e
        return [
            ItemResult(record.get(key_name), own_errors.get(position, error))
            for position, record in enumerate(records)
        ]

    # plumbing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        with _translate():
            conn = await self._acquire()
            try:
                yield conn
            except BaseException:
                await self._release(conn, clean=False)
                raise
            await self._release(conn)

    async def _acquire(self) -> asyncpg.Connection:
        """A pooled connection. A connection the last caller left in the idle list comes
        first; while one is free in asyncpg's pool, asyncpg's acquire returns at once. Only
        when every connection is held does a caller wait, in this store's own queue
        (``_wait``): ``_in_use`` counts this store's connections and callers, the only users
        of its pool."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"postgres store for {self.table!r} is not open")
        bounded = self._in_use >= self._pool_max
        if bounded and self._max_waiting is not None:
            waiting = self._in_use - self._pool_max
            if waiting >= self._max_waiting:
                raise StoreBusy(
                    f"postgres: all {self._pool_max} connections in use and {waiting} calls waiting"
                )
        self._in_use += 1  # counted before any await: a concurrent caller sees it
        try:
            idle = self._idle
            while idle:
                conn = idle.pop()[0]
                if _reusable(conn):
                    return conn
                await pool.release(conn)  # closed while idle: asyncpg replaces it
                bounded = False  # and that slot is this caller's
            if not bounded:
                return await pool.acquire()
            return await self._wait(pool)
        except BaseException:
            self._in_use -= 1
            raise

    async def _wait(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        """Wait until a caller releases a connection, at most the acquire timeout.

        The releaser hands a clean connection straight over, or, when it gave its connection
        back to asyncpg (after an error, or a transaction left open), hands over ``None``: take
        one from asyncpg's pool, where one is now free. Waiting in asyncpg's own acquire
        instead cost an ``asyncio.timeout`` per wait and a shielded task per release; with
        more clients than connections that was every request (py-spy, ``store_proxy.py``'s
        shadow 0%: ~6% of a worker's samples)."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._acquire_timeout
        waiter: asyncio.Future[asyncpg.Connection | None] = loop.create_future()
        timer = loop.call_at(ends, _expire, waiter, self._acquire_timeout)
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as this caller was cancelled
                if not self._pass_on(handed) and handed is not None:
                    self._idle.append((handed, time.monotonic()))
            raise
        finally:
            timer.cancel()
        if conn is None:  # free in asyncpg's pool now; bounded all the same, in case it is not
            return await pool.acquire(timeout=max(ends - loop.time(), 0.001))
        return conn

    def _pass_on(self, conn: asyncpg.Connection | None) -> bool:
        """Give a released connection (``None``: a free slot in asyncpg's pool) to the oldest
        caller still waiting; False when none is (all timed out or cancelled)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _release(self, conn: asyncpg.Connection, *, clean: bool = True) -> None:
        """Give a connection back. A clean one (its operation ended without an error and no
        transaction is open) goes to the oldest waiting caller, else to the idle list for the
        next one. asyncpg's own release shields a task and arms a timeout for its reset: in
        store mode with no shadow it was ~9% of a worker's CPU (py-spy, ``store_proxy.py``'s
        shadow 0%); a list append is nothing. Any other goes back to asyncpg (its reset
        rolls a transaction back), and a waiting caller takes the freed slot from there."""
        self._in_use -= 1
        pool = self._pool
        if pool is None:  # closed meanwhile: the pool terminated it
            conn.terminate()
            return
        if clean and _reusable(conn):
            if self._pass_on(conn):
                return
            now = time.monotonic()
            idle = self._idle
            idle.append((conn, now))
            if idle[0][1] < now - IDLE_KEEP_SECONDS:
                await pool.release(idle.popleft()[0])
            return
        await pool.release(conn)  # resets it (a transaction left open is rolled back)
        self._pass_on(None)

    def _key(self, key: Any) -> Any:
        return encode_value(self.schema.key_field, key)

    def _decode(self, rows: Sequence[Mapping[str, Any]]) -> Records:
        names = self.schema.field_names
        return [decode_row(self.schema, row, names) for row in rows]


def _expire(waiter: asyncio.Future[Any], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no connection free within {seconds} s"))


def _reusable(conn: asyncpg.Connection) -> bool:
    """Whether a released connection can serve the next caller as it is."""
    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:  # closed under us: asyncpg took it back already
        return False


async def _rollback_if_in_transaction(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (RESET ALL, UNLISTEN, advisory unlock...: one more
    round trip per request). This store never changes session state, listens or holds
    session locks; the only thing worth undoing is a transaction left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


_TRANSLATED = (
    TimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


@contextmanager
def _translate() -> Iterator[None]:
    """asyncpg and socket errors -> the store error tree."""
    try:
        yield
    except _TRANSLATED as e:
        raise _translated(e) from e


def _translated(e: BaseException) -> StoreError:
    if isinstance(e, asyncpg.UniqueViolationError):
        # Not e.detail: it holds the conflicting values (PII, such as an email).
        return KeyConflict(f"{e.constraint_name or 'a unique constraint'} is violated")
    if isinstance(e, TimeoutError | asyncpg.QueryCanceledError):
        return StoreTimeout(f"postgres: timed out: {e}")
    if isinstance(
        e,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.AdminShutdownError,
    ):
        return StoreUnavailable(f"postgres: {type(e).__name__}: {e}")
    if isinstance(e, asyncpg.UndefinedTableError):
        return StoreUnavailable(f"postgres: {e} (run init-stores)")
    return StoreError(f"postgres: {type(e).__name__}: {e}")


def _positive(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit


def _check_segment(segment: int, total_segments: int) -> None:
    if not 0 <= segment < total_segments:
        raise ValueError(f"segment must be in 0..{total_segments - 1}, got {segment!r}")
