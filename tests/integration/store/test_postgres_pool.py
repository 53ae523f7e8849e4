"""The PostgreSQL store's idle list in front of asyncpg's pool (``PostgresStore._release``).

A clean connection goes back to the store's own idle list instead of through asyncpg's release
(a shielded task and a reset timeout per request). These tests hold it to what asyncpg's
release promised: a transaction left open never reaches the next caller, a connection the
server closed is not handed out, a caller waiting for a connection is woken, and ``close``
returns everything."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from proxy import tasks
from proxy.store import postgres
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


async def _backend_pid(store: PostgresStore) -> int:
    async with store._connection() as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


async def test_reads_reuse_a_connection_without_asyncpgs_release(
    pg_store: PostgresStore, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user()
    await pg_store.put(user)
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
    user = make_user()
    await pg_store.put(user)
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


async def test_a_caller_waiting_for_a_connection_is_woken_by_a_release(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = make_user()
    await pg_store.put(user)
    single = PostgresStore(PG_DSN, pg_store.table, pg_store.schema, max_size=1, connect_timeout=30)
    async with single:
        held = await single._acquire()
        waiter = tasks.spawn(single.get(user["id"]), name="waiting reader")
        for _ in range(500):  # until the waiter is counted, waiting in asyncpg's acquire
            if single._in_use == 2:
                break
            await asyncio.sleep(0.01)
        assert single._in_use == 2
        await single._release(held)
        # Kept in the idle list, the connection would leave the waiter to its 30 s timeout.
        assert not single._idle
        assert await asyncio.wait_for(waiter, 10) == user


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
    user = make_user()
    await pg_store.put(user)
    monkeypatch.setattr(postgres, "IDLE_KEEP_SECONDS", -1.0)
    releases = CountedReleases(pg_store, monkeypatch)
    assert await pg_store.get(user["id"]) == user
    assert releases.calls == 1
    assert not pg_store._idle
