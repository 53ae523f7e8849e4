"""The PostgreSQL store keeps the connections it used (instead of a pool checkout per call):
waiters for the pool must still get one, and a connection in doubt must not be kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proxy.store.base import Record
from proxy.store.postgres import PostgresStore
from proxy.tasks import spawn

MAX = 4  # open_postgres's pool size


async def test_sequential_reads_reuse_one_kept_connection(
    pg_store: PostgresStore, make_user: Callable[..., Record]
) -> None:
    user = make_user()
    await pg_store.create(user)
    pids = set()
    for _ in range(20):
        assert await pg_store.get(user["id"]) == user
        async with pg_store._connection() as conn:
            pids.add(conn.get_server_pid())
    assert len(pids) == 1
    assert pg_store._in_use == 0 and len(pg_store._idle) == 1


async def test_a_caller_waiting_for_the_pool_gets_a_released_connection(
    pg_store: PostgresStore, make_user: Callable[..., Record]
) -> None:
    user = make_user()
    await pg_store.create(user)
    release, all_held = asyncio.Event(), asyncio.Event()
    holding = 0

    async def hold() -> None:
        nonlocal holding
        async with pg_store._connection():
            holding += 1
            if holding == MAX:
                all_held.set()
            await release.wait()

    holders = [spawn(hold(), name=f"holder-{i}") for i in range(MAX)]
    await asyncio.wait_for(all_held.wait(), 5)
    waiter = spawn(pg_store.get(user["id"]), name="waiter")
    await asyncio.sleep(0.1)
    assert not waiter.done()  # every connection is in use: it waits for the pool
    release.set()  # the holders finish: their connections must reach the waiter, not be kept
    assert await asyncio.wait_for(waiter, 3) == user
    await asyncio.gather(*holders)
    assert pg_store._in_use == 0


async def test_many_concurrent_reads_and_writes_on_a_small_pool(
    pg_store: PostgresStore, make_user: Callable[..., Record]
) -> None:
    users = [make_user() for _ in range(40)]

    async def work(user: Record) -> Any:
        await pg_store.create(user)
        return await pg_store.get(user["id"])

    found = await asyncio.wait_for(asyncio.gather(*(work(u) for u in users)), 30)
    assert found == users
    assert pg_store._in_use == 0 and len(pg_store._idle) <= MAX


async def test_a_cancelled_query_does_not_leave_a_busy_connection_behind(
    pg_store: PostgresStore, make_user: Callable[..., Record]
) -> None:
    user = make_user()
    await pg_store.create(user)

    async def slow() -> None:
        async with pg_store._connection() as conn:
            await conn.execute("SELECT pg_sleep(5)")

    task = spawn(slow(), name="slow")
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Whatever is kept must be ready for the next query ("another operation is in progress"
    # would mean the cancelled connection was kept).
    for _ in range(MAX + 2):
        assert await asyncio.wait_for(pg_store.get(user["id"]), 10) == user
    assert pg_store._in_use == 0
