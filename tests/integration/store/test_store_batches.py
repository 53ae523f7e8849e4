"""Batch writes and reads: chunking, DynamoDB limits, retries of unprocessed and throttled
calls, and per-item failure reports."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from proxy.store.base import LimitExceeded, Store, Throttled
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.postgres import PostgresStore
from proxy.store.schema import Schema

from .conftest import MakeUser

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("size", [1, 25, 26, 100, 1000])
async def test_batch_put_then_batch_get(
    store: Store, make_user: MakeUser, faulty: Any, size: int
) -> None:
    users = [make_user() for _ in range(size)]
    results = await store.batch_put(users)
    assert [r.key for r in results] == [u["id"] for u in users]
    assert all(r.ok for r in results)
    assert await store.batch_get([u["id"] for u in users]) == users
    if isinstance(store, DynamoDBStore):
        writes, reads = faulty.batch_sizes["BatchWriteItem"], faulty.batch_sizes["BatchGetItem"]
        assert max(writes) <= 25 and sum(writes) == size
        assert len(writes) == math.ceil(size / 25)
        assert max(reads) <= 100 and len(reads) == math.ceil(size / 100)


async def test_batch_put_last_record_wins_for_a_repeated_key(
    store: Store, make_user: MakeUser
) -> None:
    first = make_user(first_name="first")
    last = {**first, "first_name": "last"}
    results = await store.batch_put([first, make_user(), last])
    assert all(r.ok for r in results)
    assert await store.get(first["id"]) == last


async def test_postgres_batch_in_several_statements_is_one_transaction(
    users_schema: Schema, pg_store: PostgresStore, make_user: MakeUser
) -> None:
    chunked = PostgresStore(pg_store.dsn, pg_store.table, users_schema, batch_rows=7)
    async with chunked:
        users = [make_user() for _ in range(30)]
        assert all(r.ok for r in await chunked.batch_put(users))
        assert await chunked.batch_get([u["id"] for u in users]) == users
        async with chunked._connection() as conn:
            table = f'"{pg_store.table}"'
            await conn.execute(f"ALTER TABLE {table} ADD CHECK (first_name <> 'Zed')")
        more = [make_user() for _ in range(20)] + [make_user(first_name="Zed")]
        results = await chunked.batch_put(more)
        assert all(not r.ok for r in results)
        assert await chunked.batch_get([u["id"] for u in more]) == []


async def test_unprocessed_items_are_retried(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    faulty.inject("BatchWriteItem", faults.write_half, times=3)
    users = [make_user() for _ in range(30)]
    results = await ddb_store.batch_put(users)
    assert all(r.ok for r in results)
    assert await ddb_store.batch_get([u["id"] for u in users]) == users
    assert len(faulty.batch_sizes["BatchWriteItem"]) > 2


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
async def test_throttled_batch_calls_are_retried(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any, code: str
) -> None:
    faulty.inject("BatchWriteItem", faults.throttle(code), times=2)
    users = [make_user() for _ in range(10)]
    assert all(r.ok for r in await ddb_store.batch_put(users))
    assert await ddb_store.batch_get([u["id"] for u in users]) == users


async def test_items_still_unprocessed_after_the_budget_fail_one_by_one(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    faulty.inject("BatchWriteItem", faults.write_half, times=None)
    users = [make_user() for _ in range(25)]
    results = await ddb_store.batch_put(users)
    assert len(faulty.batch_sizes["BatchWriteItem"]) == ddb_store.retry.max_attempts
    failed = {r.key for r in results if not r.ok}
    assert failed and len(failed) < 25
    assert all(isinstance(r.error, Throttled) for r in results if not r.ok)
    stored = {r["id"] for r in await ddb_store.batch_get([u["id"] for u in users])}
    assert stored == {u["id"] for u in users} - failed


async def test_exhausted_throttling_fails_every_item_of_every_chunk(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    faulty.inject("BatchWriteItem", faults.write_none, times=None)
    users = [make_user() for _ in range(30)]
    results = await ddb_store.batch_put(users)
    assert [r.key for r in results] == [u["id"] for u in users]
    assert all(isinstance(r.error, Throttled) for r in results)
    assert faulty.batch_sizes["BatchWriteItem"] == [25] * 4 + [5] * 4


async def test_an_oversize_item_fails_alone(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = [make_user(), make_user(preferences={"blob": "x" * 410_000}), make_user()]
    results = await ddb_store.batch_put(users)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, LimitExceeded)
    assert faulty.batch_sizes["BatchWriteItem"] == [2]
    with pytest.raises(LimitExceeded):
        await ddb_store.put(users[1])


async def test_unprocessed_keys_are_retried(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    users = [make_user() for _ in range(150)]
    await ddb_store.batch_put(users)
    faulty.inject("BatchGetItem", faults.get_half, times=2)
    faulty.inject("BatchGetItem", faults.throttle(), times=1)
    assert await ddb_store.batch_get([u["id"] for u in users]) == users
    assert max(faulty.batch_sizes["BatchGetItem"]) <= 100


async def test_keys_still_unprocessed_after_the_budget_raise(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    faulty.inject("BatchGetItem", faults.get_none, times=None)
    with pytest.raises(Throttled):
        await ddb_store.batch_get([uuid.uuid4()])
    assert len(faulty.batch_sizes["BatchGetItem"]) == ddb_store.retry.max_attempts
