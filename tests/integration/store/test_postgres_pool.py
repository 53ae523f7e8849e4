"""The PostgreSQL store's idle list in front of asyncpg's pool (``PostgresStore._release``).

A clean connection goes back to the store's own idle list instead of through asyncpg's release
(a shielded task and a reset timeout per request). These tests hold it to what asyncpg's
release promised: a transaction left open never reaches the next caller, a connection the
server closed is not handed out, a caller waiting for a connection is woken (handed the
connection, in the order the callers came, or the slot asyncpg's release freed) or times out,
and ``close`` returns everything and fails the callers still waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from proxy import tasks
from proxy.store import postgres
from proxy.store.base import Record, StoreTimeout, StoreUnavailable
from proxy.store.postgres import PostgresStore
from proxy.store.schema import Schema

from .conftest import PG_DSN, MakeUser


class CountedReleases:
    """Counts the calls to asyncpg's ``Pool.release`` on one store's pool (the class's
    method: a pool's attributes are slots)."""

    def __init__(self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        watched = store._pool
        assert watched is not None
        self.calls = 0
        original = asyncpg.Pool.release

        async def release(pool: asyncpg.Pool, conn: Any, **kwargs: Any) -> None:
            if pool is watched:
                self.calls += 1
            await original(pool, conn, **kwargs)

        monkeypatch.setattr(asyncpg.Pool, "release", release)


def one_connection(pg_store: PostgresStore, *, connect_timeout: float = 30) -> PostgresStore:
    """A store of one connection over ``pg_store``'s table: a second caller must wait."""
    return PostgresStore(
        PG_DSN, pg_store.table, pg_store.schema, max_size=1, connect_timeout=connect_timeout
    )


async def stored_user(pg_store: PostgresStore, make_user: MakeUser) -> Record:
    user = make_user()
    await pg_store.put(user)
    return user


@asynccontextmanager
async def one_held(
    pg_store: PostgresStore, make_user: MakeUser, *, connect_timeout: float = 30
) -> AsyncIterator[tuple[PostgresStore, asyncpg.Connection, Record]]:
    """A one-connection store with its connection held, and a user stored to read."""
    user = await stored_user(pg_store, make_user)
    async with one_connection(pg_store, connect_timeout=connect_timeout) as single:
        yield single, await single._acquire(), user


async def _until_waiting(store: PostgresStore, callers: int) -> None:
    for _ in range(500):  # until the waiters are counted and queued
        if len(store._waiters) == callers:
            return
        await asyncio.sleep(0.01)
    assert len(store._waiters) == callers


async def queued_read(store: PostgresStore, key: Any, waiting: int) -> asyncio.Task[Any]:
    """A read of ``key``, spawned and queued: ``waiting`` callers wait once it is."""
    task = tasks.spawn(store.get(key), name=f"queued reader {waiting}")
    await _until_waiting(store, waiting)
    return task


async def _backend_pid(store: PostgresStore) -> int:
    async with store._connection() as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


async def test_reads_reuse_a_connection_without_asyncpgs_release(
    pg_store: PostgresStore, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await stored_user(pg_store, make_user)
    releases = CountedReleases(pg_store, monkeypatch)
    pids = {await _backend_pid(pg_store)}
    for _ in range(20):
        assert await pg_store.get(user["id"]) == user
        pids.add(await _backend_pid(pg_store))
    assert releases.calls == 0
    assert len(pids) == 1  # one connection served every sequential call
    assert len(pg_store._idle) == 1


async def test_a_transaction_left_open_is_rolled_back_not_kept(
    pg_store: PostgresStore, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user()
    releases = CountedReleases(pg_store, monkeypatch)
    async with pg_store._connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute(
            f'INSERT INTO "{pg_store.table}" (id, email, is_active, created_at) '
            "VALUES ($1, $2, true, now())",
            user["id"],
            user["email"],
        )
    assert releases.calls == 1  # through asyncpg, whose reset rolls it back
    assert not pg_store._idle
    async with pg_store._connection() as conn:
        assert not conn.is_in_transaction()
    assert await pg_store.get(user["id"]) is None  # the insert was never committed


async def test_a_failed_operation_gives_its_connection_to_asyncpg(
    pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = CountedReleases(pg_store, monkeypatch)
    with pytest.raises(RuntimeError):
        async with pg_store._connection() as conn:
            await conn.execute("SELECT 1")
            raise RuntimeError("the caller failed mid-use")
    assert releases.calls == 1
    assert not pg_store._idle


async def test_a_connection_the_server_closed_while_idle_is_not_handed_out(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = await stored_user(pg_store, make_user)
    victim = await _backend_pid(pg_store)
    ((idle_conn, _),) = pg_store._idle
    other = PostgresStore(PG_DSN, pg_store.table, pg_store.schema)
    async with other, other._connection() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", victim)
    for _ in range(500):  # until asyncpg has seen the connection end
        if not postgres._reusable(idle_conn):
            break
        await asyncio.sleep(0.01)
    assert not postgres._reusable(idle_conn)
    assert await pg_store.get(user["id"]) == user
    assert await _backend_pid(pg_store) != victim


async def test_close_returns_idle_connections(
    users_schema: Schema, table_name: str, make_user: MakeUser
) -> None:
    store = PostgresStore(PG_DSN, table_name, users_schema, max_size=4)
    await store.open()
    try:
        await store.init()
        held = [await store._acquire() for _ in range(3)]
        for conn in held:
            await store._release(conn)
        assert len(store._idle) == 3
    finally:
        async with store._connection() as conn:
            await conn.execute(f'DROP TABLE IF EXISTS "{table_name}"')
        await asyncio.wait_for(store.close(), 30)  # asyncpg's close waits for every connection
    assert not store._idle


async def test_a_connection_idle_too_long_goes_back_to_asyncpg(
    pg_store: PostgresStore, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await stored_user(pg_store, make_user)
    monkeypatch.setattr(postgres, "IDLE_KEEP_SECONDS", -1.0)
    releases = CountedReleases(pg_store, monkeypatch)
    assert await pg_store.get(user["id"]) == user
    assert releases.calls == 1
    assert not pg_store._idle


async def test_a_clean_release_hands_its_connection_to_the_oldest_waiter(
    pg_store: PostgresStore, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No round through asyncpg's pool while callers wait: the connection goes hand to hand,
    in the order the callers came."""
    async with one_held(pg_store, make_user) as (single, held, user):
        pid = await held.fetchval("SELECT pg_backend_pid()")
        releases = CountedReleases(single, monkeypatch)
        acquires = 0
        original = asyncpg.Pool.acquire

        def acquire(pool: asyncpg.Pool, **kwargs: Any) -> Any:
            nonlocal acquires
            acquires += 1
            return original(pool, **kwargs)

        monkeypatch.setattr(asyncpg.Pool, "acquire", acquire)
        order: list[int] = []

        async def read(n: int) -> None:
            assert await single.get(user["id"]) == user
            assert await _backend_pid(single) == pid
            order.append(n)

        readers = []
        for n in range(3):
            readers.append(tasks.spawn(read(n), name=f"reader {n}"))
            await _until_waiting(single, n + 1)
        await single._release(held)
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        assert order == [0, 1, 2]
        assert (releases.calls, acquires) == (0, 0)
        assert single._in_use == 0
        assert len(single._idle) == 1


async def test_a_release_through_asyncpg_wakes_a_waiter_to_take_the_free_slot(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    async with one_held(pg_store, make_user) as (single, held, user):
        await held.execute("BEGIN")
        waiter = await queued_read(single, user["id"], 1)
        await single._release(held)  # a transaction left open: asyncpg's reset rolls it back
        assert await asyncio.wait_for(waiter, 10) == user
        assert single._in_use == 0


async def test_a_waiter_times_out_when_no_connection_comes_back(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    async with one_held(pg_store, make_user, connect_timeout=0.2) as (single, held, user):
        with pytest.raises(StoreTimeout, match="no connection free within"):
            await single.get(user["id"])
        assert single._in_use == 1  # the held connection only
        await single._release(held)
        assert await single.get(user["id"]) == user  # the timed-out waiter took nothing


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    """Handed over and cancelled in the same loop turn: the connection must not be lost."""
    async with one_held(pg_store, make_user) as (single, held, user):
        first = await queued_read(single, user["id"], 1)
        second = await queued_read(single, user["id"], 2)
        await single._release(held)  # hands it to the first ...
        first.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 10) == user
        assert single._in_use == 0
        assert await asyncio.wait_for(single.get(user["id"]), 10) == user


async def test_close_fails_the_callers_still_waiting(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = await stored_user(pg_store, make_user)
    single = one_connection(pg_store)
    await single.open()
    held = await single._acquire()
    waiter = tasks.spawn(single.get(user["id"]), name="waiting reader")
    await _until_waiting(single, 1)
    await single._release(held)  # handed over: the waiter reads, then the next one waits
    assert await asyncio.wait_for(waiter, 10) == user
    held = await single._acquire()
    waiter = tasks.spawn(single.get(user["id"]), name="waiting reader")
    await _until_waiting(single, 1)
    closing = tasks.spawn(single.close(), name="close")
    with pytest.raises(StoreUnavailable, match="closed"):
        await asyncio.wait_for(waiter, 10)
    await single._release(held)  # closed meanwhile: terminated
    await asyncio.wait_for(closing, 30)


async def test_a_caller_that_returns_a_dead_idle_connection_takes_the_slot_it_freed(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    """Every connection counted as in use, but the idle one is dead: returning it to asyncpg
    frees a slot, and this caller takes it rather than waiting for a release."""
    user = await stored_user(pg_store, make_user)
    pair = PostgresStore(PG_DSN, pg_store.table, pg_store.schema, max_size=2, connect_timeout=1)
    async with pair:
        held = await pair._acquire()
        spare = await pair._acquire()
        victim = await spare.fetchval("SELECT pg_backend_pid()")
        await pair._release(spare)
        assert len(pair._idle) == 1
        assert await held.fetchval("SELECT pg_terminate_backend($1)", victim)
        for _ in range(500):  # until asyncpg has seen the connection end
            if not postgres._reusable(spare):
                break
            await asyncio.sleep(0.01)
        pair._in_use += 1  # as if a caller were counted and on its way
        try:
            assert await asyncio.wait_for(pair.get(user["id"]), 10) == user
        finally:
            pair._in_use -= 1
        await pair._release(held)
