"""Real stores for the store tests: PostgreSQL database ``test`` on this machine and the
session's moto DynamoDB server (``moto_endpoint``, from ``tests/integration/conftest.py``);
every test gets fresh, uniquely named tables, dropped afterwards."""

from __future__ import annotations

import copy
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from proxy.store.base import Record, Store
from proxy.store.dynamo_http import DynamoError
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.postgres import PostgresStore
from proxy.store.retry import RetryPolicy
from proxy.store.schema import ResourceConfig, Schema

PG_DSN = os.environ.get("SHADOWPROXY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REGION = "us-east-1"
# The type of the ``make_user`` fixture, for the tests that take it.
MakeUser = Callable[..., Record]
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005)

USERS: dict[str, Any] = {
    "name": "users",
    "prefix": "/users",
    "key": "id",
    "fields": {
        "id": {"type": "uuid"},
        "email": {"type": "string", "sensitive": True, "nullable": False, "required": True},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "is_active": {"type": "bool", "nullable": False, "required": True},
        "created_at": {"type": "datetime", "nullable": False, "required": True},
        "updated_at": {"type": "datetime"},
        "birthday": {"type": "date"},
        "preferences": {"type": "json"},
        "roles": {"type": "set<string>"},
        "tags": {"type": "list<string>"},
        "balance": {"type": "decimal"},
        "login_count": {"type": "int"},
        "score": {"type": "float"},
    },
    "indexes": {"email": {"field": "email", "dynamodb_index": "email-index"}},
    "stores": {
        "postgres": {"backend": "postgres", "table": "users"},
        "dynamodb": {"backend": "dynamodb", "table": "users"},
    },
}


@pytest.fixture
def users_config() -> dict[str, Any]:
    """The users resource declaration, a fresh copy to vary."""
    return copy.deepcopy(USERS)


@pytest.fixture(scope="session")
def users_schema() -> Schema:
    return Schema(ResourceConfig.model_validate(USERS))


@pytest.fixture
def table_name() -> str:
    return f"users_{uuid.uuid4().hex[:12]}"


class FaultyClient:
    """Wraps the store's ``DynamoHttpClient``: records the items of each batch call and plays
    queued faults (``inject``) instead of, or around, the real call."""

    def __init__(self) -> None:
        self._client: Any = None
        self.batch_sizes: dict[str, list[int]] = defaultdict(list)
        self.calls: Counter[str] = Counter()  # every call by operation, faults included
        self._faults: dict[str, list[tuple[Fault, int | None]]] = defaultdict(list)

    def wrap(self, client: Any) -> FaultyClient:
        self._client = client
        return self

    def inject(self, operation: str, fault: Fault, times: int | None = 1) -> None:
        """Play ``fault`` on the next ``times`` calls of ``operation`` ("BatchWriteItem"; None:
        every call)."""
        self._faults[operation].append((fault, times))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def call(self, operation: str, request: dict[str, Any]) -> Any:
        self.calls[operation] += 1
        if operation == "BatchWriteItem":
            self.batch_sizes[operation].append(
                sum(len(v) for v in request["RequestItems"].values())
            )
        elif operation == "BatchGetItem":
            self.batch_sizes[operation].append(
                sum(len(v["Keys"]) for v in request["RequestItems"].values())
            )
        queue = self._faults[operation]
        if queue:
            fault, times = queue[0]
            if times is not None:
                if times <= 1:
                    queue.pop(0)
                else:
                    queue[0] = (fault, times - 1)
            return await fault(self._client, request)
        return await self._client.call(operation, request)


Fault = Callable[[Any, dict[str, Any]], Awaitable[Any]]


def throttle(code: str = "ProvisionedThroughputExceededException") -> Fault:
    async def fault(client: Any, request: dict[str, Any]) -> Any:
        raise DynamoError(code, "injected", 400)

    return fault


async def write_half(client: Any, request: dict[str, Any]) -> Any:
    """Write the first half of each table's requests; report the rest unprocessed."""
    done: dict[str, list[Any]] = {}
    rest: dict[str, list[Any]] = {}
    for table, requests in request["RequestItems"].items():
        half = len(requests) // 2
        done[table], rest[table] = requests[:half], requests[half:]
    if any(done.values()):
        await client.call("BatchWriteItem", {"RequestItems": {t: r for t, r in done.items() if r}})
    return {"UnprocessedItems": {t: r for t, r in rest.items() if r}}


async def write_none(client: Any, request: dict[str, Any]) -> Any:
    return {"UnprocessedItems": request["RequestItems"]}


async def get_half(client: Any, request: dict[str, Any]) -> Any:
    responses: dict[str, list[Any]] = {}
    unprocessed: dict[str, Any] = {}
    for table, spec in request["RequestItems"].items():
        half = len(spec["Keys"]) // 2
        if half:
            answer = await client.call(
                "BatchGetItem", {"RequestItems": {table: {**spec, "Keys": spec["Keys"][:half]}}}
            )
            responses[table] = answer["Responses"][table]
        unprocessed[table] = {**spec, "Keys": spec["Keys"][half:]}
    return {"Responses": responses, "UnprocessedKeys": unprocessed}


async def get_none(client: Any, request: dict[str, Any]) -> Any:
    return {"Responses": {}, "UnprocessedKeys": request["RequestItems"]}


class Faults:
    """The injectable faults, for tests (which cannot import this conftest reliably)."""

    throttle = staticmethod(throttle)
    write_half = staticmethod(write_half)
    write_none = staticmethod(write_none)
    get_half = staticmethod(get_half)
    get_none = staticmethod(get_none)


@pytest.fixture
def faulty() -> FaultyClient:
    return FaultyClient()


@pytest.fixture
def faults() -> type[Faults]:
    return Faults


async def written_by_another_tool(store: PostgresStore, key: Any, assignments: str) -> None:
    """Overwrite columns of one row behind the store's back (``assignments``: SQL ``SET``
    text), as a tool that does not know the schema might."""
    async with store._connection() as conn:
        await conn.execute(f'UPDATE "{store.table}" SET {assignments} WHERE id = $1', key)


@asynccontextmanager
async def open_postgres(schema: Schema, table: str) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store on a fresh table, dropped on exit."""
    store = PostgresStore(PG_DSN, table, schema, min_size=1, max_size=4)
    await store.open()
    try:
        await store.init()
        yield store
    finally:
        async with store._connection() as conn:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await store.close()


@asynccontextmanager
async def open_dynamodb(
    schema: Schema, table: str, endpoint_url: str, wrapper: FaultyClient | None = None
) -> AsyncIterator[DynamoDBStore]:
    """A DynamoDB store on a fresh table in the moto server, deleted on exit."""
    store = DynamoDBStore(
        endpoint_url,
        REGION,
        table,
        schema,
        retry=FAST_RETRY,
        client_wrapper=wrapper.wrap if wrapper else None,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    await store.open()
    try:
        await store.init()
        yield store
    finally:
        await store._call("DeleteTable", TableName=table)
        await store.close()


@pytest.fixture
def openers() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(open_postgres, open_dynamodb)`` for tests that run their own event loop."""
    return open_postgres, open_dynamodb


@pytest.fixture
async def pg_store(users_schema: Schema, table_name: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres(users_schema, table_name) as store:
        yield store


@pytest.fixture
async def ddb_store(
    users_schema: Schema, table_name: str, moto_endpoint: str, faulty: FaultyClient
) -> AsyncIterator[DynamoDBStore]:
    async with open_dynamodb(users_schema, table_name, moto_endpoint, faulty) as store:
        yield store


@pytest.fixture(params=["postgres", "dynamodb"])
async def store(
    request: pytest.FixtureRequest,
    users_schema: Schema,
    table_name: str,
    moto_endpoint: str,
    faulty: FaultyClient,
) -> AsyncIterator[Store]:
    """Each store in turn (built here: an async fixture cannot request one lazily)."""
    if request.param == "postgres":
        async with open_postgres(users_schema, table_name) as pg:
            yield pg
    else:
        async with open_dynamodb(users_schema, table_name, moto_endpoint, faulty) as ddb:
            yield ddb


@pytest.fixture
def make_user(users_schema: Schema) -> Callable[..., Record]:
    """A canonical user record; keyword arguments override JSON input fields."""
    counter = iter(range(1_000_000))

    def make(**overrides: Any) -> Record:
        n = next(counter)
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "email": f"user{n}-{uuid.uuid4().hex[:6]}@example.com",
            "first_name": "Ada",
            "last_name": None,
            "is_active": n % 2 == 0,
            "created_at": datetime(2024, 1, 1, 12, 0, n % 60, 123456, tzinfo=UTC).isoformat(),
            "updated_at": "2024-02-01T00:00:00+02:00",
            "birthday": "1990-05-17",
            "preferences": {"theme": "dark", "digest": [1, 2.5, None, True]},
            "roles": ["admin", "user", "admin"],
            "tags": ["b", "a", "b"],
            "balance": "1234.5600",
            "login_count": n,
            "score": 0.1 * n,
        }
        body.update(overrides)
        return users_schema.validate(body, partial=False)

    return make
