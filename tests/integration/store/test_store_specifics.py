"""What only one store does: schema evolution on init, type drift in stored data, unique
indexes, and how unreachable or slow stores fail."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest

from proxy.store.base import InvalidRecord, KeyConflict, StoreTimeout, StoreUnavailable
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.fieldtypes import Malformed
from proxy.store.postgres import PostgresStore
from proxy.store.retry import RetryPolicy
from proxy.store.schema import ResourceConfig, Schema

from .conftest import MakeUser, written_by_another_tool

pytestmark = pytest.mark.integration

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_postgres_init_adds_missing_columns(
    users_config: dict[str, Any], users_schema: Schema, table_name: str, make_user: MakeUser
) -> None:
    del users_config["fields"]["score"], users_config["fields"]["tags"]
    old = Schema(ResourceConfig.model_validate(users_config))
    user = make_user()
    async with PostgresStore(PG_DSN, table_name, old) as before:
        await before.init()
        await before.put({k: v for k, v in user.items() if k in old.fields})
    try:
        async with PostgresStore(PG_DSN, table_name, users_schema) as after:
            await after.init()
            assert await after.get(user["id"]) == {**user, "score": None, "tags": None}
            await after.put(user)
            assert await after.get(user["id"]) == user
    finally:
        async with PostgresStore(PG_DSN, table_name, old) as cleanup, cleanup._connection() as c:
            await c.execute(f'DROP TABLE "{table_name}"')


async def test_postgres_unique_index_conflicts(
    users_config: dict[str, Any], table_name: str, openers: Any
) -> None:
    users_config["indexes"]["email"]["unique"] = True
    schema = Schema(ResourceConfig.model_validate(users_config))
    open_postgres, _ = openers
    async with open_postgres(schema, table_name) as store:
        body = {"email": "dup@example.com", "is_active": True, "created_at": "2024-01-01T00:00Z"}
        await store.create(schema.validate({**body, "id": str(uuid.uuid4())}, partial=False))
        with pytest.raises(KeyConflict, match="email"):
            await store.create(schema.validate({**body, "id": str(uuid.uuid4())}, partial=False))


async def test_dynamodb_init_adds_missing_indexes(
    users_config: dict[str, Any], users_schema: Schema, table_name: str, moto_endpoint: str
) -> None:
    users_config["indexes"] = {}
    bare = Schema(ResourceConfig.model_validate(users_config))
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    async with DynamoDBStore(moto_endpoint, "us-east-1", table_name, bare, **credentials) as s:
        await s.init()
    async with DynamoDBStore(
        moto_endpoint, "us-east-1", table_name, users_schema, **credentials
    ) as store:
        await store.init()
        table = (await store._call("DescribeTable", TableName=table_name))["Table"]
        assert [g["IndexName"] for g in table["GlobalSecondaryIndexes"]] == ["email-index"]
        await store._call("DeleteTable", TableName=table_name)


async def test_dynamodb_type_drift_reads_as_malformed(
    ddb_store: DynamoDBStore, users_schema: Schema, make_user: MakeUser
) -> None:
    user = make_user(login_count=42, is_active=True)
    await ddb_store.put(user)
    await ddb_store._call(
        "UpdateItem",
        TableName=ddb_store.table,
        Key={"id": {"S": str(user["id"])}},
        UpdateExpression="SET login_count = :s, is_active = :n, #roles = :l",
        ExpressionAttributeNames={"#roles": "roles"},
        ExpressionAttributeValues={
            ":s": {"S": "42"},
            ":n": {"N": "1"},
            ":l": {"L": [{"S": "admin"}]},
        },
    )
    got = await ddb_store.get(user["id"])
    assert got is not None
    assert got["login_count"] == Malformed("42")
    assert got["is_active"] == Malformed(1)
    assert got["roles"] == Malformed(["admin"])
    rendered = users_schema.to_json(got)
    assert (rendered["login_count"], rendered["is_active"], rendered["roles"]) == (
        "42",
        1,
        ["admin"],
    )
    with pytest.raises(InvalidRecord):
        await ddb_store.put(got)


async def test_postgres_nan_reads_as_malformed(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = make_user()
    await pg_store.put(user)
    await written_by_another_tool(pg_store, user["id"], "balance = 'NaN', score = 'Infinity'")
    got = await pg_store.get(user["id"])
    assert got is not None
    assert (got["balance"], got["score"]) == (Malformed("NaN"), Malformed("inf"))


async def test_postgres_unreachable_is_unavailable(users_schema: Schema) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{_closed_port()}/test"
    with pytest.raises(StoreUnavailable):
        await PostgresStore(dsn, "users", users_schema, connect_timeout=2).open()
    with pytest.raises(StoreUnavailable):
        await PostgresStore(dsn, "users", users_schema).get(uuid.uuid4())


async def test_postgres_slow_query_is_a_timeout(
    pg_store: PostgresStore, users_schema: Schema, make_user: MakeUser
) -> None:
    user = make_user()
    await pg_store.put(user)
    impatient = PostgresStore(PG_DSN, pg_store.table, users_schema, command_timeout=0.2)
    async with pg_store._connection() as locker, locker.transaction(), impatient:
        await locker.execute(f'SELECT 1 FROM "{pg_store.table}" FOR UPDATE')
        with pytest.raises(StoreTimeout):
            await impatient.update(user["id"], {"first_name": "Blocked"})


async def test_dynamodb_unreachable_is_unavailable(
    users_schema: Schema, make_user: MakeUser
) -> None:
    store = DynamoDBStore(
        f"http://127.0.0.1:{_closed_port()}",
        "us-east-1",
        "users",
        users_schema,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        sdk_max_attempts=1,
        retry=RetryPolicy(max_attempts=2, base_delay=0.001),
    )
    with pytest.raises(StoreUnavailable):
        await store.get(uuid.uuid4())  # not open yet
    async with store:
        with pytest.raises(StoreUnavailable):
            await store.get(uuid.uuid4())
        results = await store.batch_put([make_user() for _ in range(60)])
        assert all(type(r.error) is StoreUnavailable for r in results)


async def test_dynamodb_create_conflict_is_atomic_under_concurrency(
    ddb_store: DynamoDBStore, make_user: MakeUser
) -> None:
    user = make_user()
    outcomes = await asyncio.gather(
        *(ddb_store.create(user) for _ in range(5)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, KeyConflict) for o in outcomes if o is not None)


@pytest.mark.parametrize(("key_type", "keys"), [("int", range(-20, 40)), ("string", "abcdefgh")])
async def test_other_key_types_scan_in_hash_segments(
    key_type: str, keys: Any, table_name: str, moto_endpoint: str, openers: Any
) -> None:
    schema = Schema(
        ResourceConfig.model_validate(
            {
                "name": "things",
                "prefix": "/things",
                "key": "k",
                "fields": {"k": {"type": key_type}, "v": {"type": "int"}},
            }
        )
    )
    records = [{"k": key, "v": i} for i, key in enumerate(keys)]
    open_postgres, open_dynamodb = openers
    async with (
        open_postgres(schema, table_name) as pg,
        open_dynamodb(schema, table_name, moto_endpoint) as ddb,
    ):
        for store in (pg, ddb):
            assert all(r.ok for r in await store.batch_put(records))
            segments = [
                [r async for p in store.scan_pages(i, 4) for r in p.records] for i in range(4)
            ]
            assert sorted((r for s in segments for r in s), key=lambda r: r["k"]) == records
            assert sum(1 for s in segments if s) > 1
            page, cursor = await store.list({}, limit=5)
            rest, _ = await store.list({}, limit=100, cursor=cursor)
            assert sorted(r["k"] for r in page + rest) == sorted(keys)


async def test_scan_pages_through_a_segment(
    pg_store: PostgresStore, ddb_store: DynamoDBStore, users_schema: Schema, make_user: MakeUser
) -> None:
    users = [make_user() for _ in range(40)]
    paged_pg = PostgresStore(PG_DSN, pg_store.table, users_schema, scan_page=7)
    paged_ddb = DynamoDBStore(
        ddb_store.endpoint_url,
        ddb_store.region,
        ddb_store.table,
        users_schema,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        scan_page=7,
    )
    for store in (paged_pg, paged_ddb):
        async with store:
            await store.batch_put(users)
            seen = [r for i in range(2) async for p in store.scan_pages(i, 2) for r in p.records]
            assert sorted(seen, key=lambda r: r["id"]) == sorted(users, key=lambda r: r["id"])
