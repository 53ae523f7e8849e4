"""The lean DynamoDB client on the wire: moto's server for real answers, tiny asyncio servers
for silence, throttles, 5xx answers, corrupted bodies and kept-alive connections."""

from __future__ import annotations

import asyncio
import socket
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from proxy.store.base import StoreTimeout, no_retry_of_unknown_writes
from proxy.store.dynamo_errors import DynamoError, DynamoTransportError
from proxy.store.dynamo_http import DynamoHttpClient
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.retry import RetryPolicy, RetryQuota
from proxy.store.schema import Schema

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005)


def make_client(endpoint_url: str, **overrides: Any) -> DynamoHttpClient:
    options: dict[str, Any] = {
        "access_key_id": "test",
        "secret_access_key": "test",
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "max_attempts": 3,
        "retry": FAST,
    }
    options.update(overrides)
    return DynamoHttpClient(endpoint_url, "us-east-1", **options)


@pytest.fixture
async def moto_client(moto_endpoint: str) -> AsyncIterator[DynamoHttpClient]:
    async with make_client(moto_endpoint) as client:
        yield client


@pytest.fixture
async def table(moto_client: DynamoHttpClient) -> AsyncIterator[str]:
    name = f"http_{uuid.uuid4().hex[:12]}"
    await moto_client.call(
        "CreateTable",
        {
            "TableName": name,
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    yield name
    await moto_client.call("DeleteTable", {"TableName": name})


# against moto -----------------------------------------------------------------------------


async def test_put_then_get_round_trip(moto_client: DynamoHttpClient, table: str) -> None:
    item = {
        "id": {"S": "a"},
        "n": {"N": "12.50"},
        "tags": {"SS": ["x", "y"]},
        "doc": {"M": {"nested": {"L": [{"BOOL": True}, {"NULL": True}, {"S": "é✓"}]}}},
    }
    assert await moto_client.call("PutItem", {"TableName": table, "Item": item}) == {}
    got = await moto_client.call(
        "GetItem", {"TableName": table, "Key": {"id": {"S": "a"}}, "ConsistentRead": True}
    )
    assert got["Item"]["doc"] == item["doc"]
    assert got["Item"]["n"] == {"N": "12.50"}
    assert sorted(got["Item"]["tags"]["SS"]) == ["x", "y"]
    missing = await moto_client.call("GetItem", {"TableName": table, "Key": {"id": {"S": "b"}}})
    assert "Item" not in missing
    assert "ResponseMetadata" not in got


async def test_many_calls_on_connections_moto_closes(
    moto_client: DynamoHttpClient, table: str
) -> None:
    """moto (werkzeug) answers ``Connection: close``: every call must still get through, and
    the pool must not keep a connection the server has given up."""
    for i in range(30):
        await moto_client.call("PutItem", {"TableName": table, "Item": {"id": {"S": str(i)}}})
    answers = await asyncio.gather(
        *(
            moto_client.call("GetItem", {"TableName": table, "Key": {"id": {"S": str(i)}}})
            for i in range(30)
        )
    )
    assert [a["Item"]["id"]["S"] for a in answers] == [str(i) for i in range(30)]
    assert moto_client._pool is not None and not moto_client._pool._idle


async def test_conditional_check_failure_is_a_dynamo_error(
    moto_client: DynamoHttpClient, table: str
) -> None:
    request = {
        "TableName": table,
        "Item": {"id": {"S": "once"}},
        "ConditionExpression": "attribute_not_exists(id)",
    }
    await moto_client.call("PutItem", request)
    with pytest.raises(DynamoError) as raised:
        await moto_client.call("PutItem", request)
    assert raised.value.code == "ConditionalCheckFailedException"
    assert raised.value.status == 400
    assert "conditional request failed" in raised.value.message


async def test_a_missing_table_is_a_dynamo_error(moto_client: DynamoHttpClient) -> None:
    with pytest.raises(DynamoError) as raised:
        await moto_client.call("GetItem", {"TableName": "no-such-table", "Key": {"id": {"S": "x"}}})
    assert raised.value.code == "ResourceNotFoundException"
    assert not isinstance(raised.value, DynamoTransportError)


# against tiny servers ---------------------------------------------------------------------


def http_answer(status: int, body: bytes, *, crc: int | None = None, close: bool = False) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\n"
        f"x-amz-crc32: {zlib.crc32(body) if crc is None else crc}\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


OK = http_answer(200, b'{"Item":{"id":{"S":"1"}}}')


class FakeDynamo:
    """Answers requests from a script, one entry per request, in arrival order: bytes are
    sent as they are, ``"silent"`` never answers, ``"hangup"`` closes the connection.
    Records each request's head and how many connections were made."""

    def __init__(self, script: list[bytes | str]) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeDynamo:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests.append(head)
                step = self.script.pop(0) if self.script else OK
                if step == "silent":
                    await reader.read()  # until the client gives up and hangs up
                if step == "hangup" or not isinstance(step, bytes):
                    return
                writer.write(step)
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[list[bytes | str]], Awaitable[FakeDynamo]]]:
    servers: list[FakeDynamo] = []

    async def start(script: list[bytes | str]) -> FakeDynamo:
        server = await FakeDynamo(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


FakeFactory = Callable[[list[bytes | str]], Awaitable[FakeDynamo]]
GET = {"TableName": "t", "Key": {"id": {"S": "1"}}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_closed_port_fails_to_connect_after_every_attempt() -> None:
    async with make_client(f"http://127.0.0.1:{closed_port()}", max_attempts=3) as client:
        with pytest.raises(DynamoTransportError) as raised:
            await client.call("GetItem", GET)
    assert raised.value.code == "ConnectFailed"
    assert raised.value.status == 0
    assert "(3 attempts)" in raised.value.message and "GetItem" in raised.value.message


async def test_a_silent_server_times_out_after_every_attempt(fake: FakeFactory) -> None:
    server = await fake(["silent", "silent"])
    async with make_client(server.url, read_timeout=0.2, max_attempts=2) as client:
        with pytest.raises(TimeoutError, match=r"no answer within 0\.2s"):
            await client.call("GetItem", GET)
    assert len(server.requests) == 2


async def test_a_silent_server_is_a_store_timeout(fake: FakeFactory, users_schema: Schema) -> None:
    server = await fake(["silent"])
    store = DynamoDBStore(
        server.url,
        "us-east-1",
        "users",
        users_schema,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        read_timeout=0.2,
        sdk_max_attempts=1,
    )
    async with store:
        with pytest.raises(StoreTimeout):
            await store.get(uuid.uuid4())


async def test_throttles_and_5xx_are_retried_until_an_answer(fake: FakeFactory) -> None:
    throttled = orjson.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "slow down",
        }
    )
    server = await fake(
        [http_answer(400, throttled), http_answer(500, b""), http_answer(503, b"busy"), OK]
    )
    async with make_client(server.url, max_attempts=4) as client:
        assert await client.call("GetItem", GET) == {"Item": {"id": {"S": "1"}}}
    assert len(server.requests) == 4
    assert server.connections == 1  # error answers keep the connection alive


async def test_an_error_answer_is_raised_at_once(fake: FakeFactory) -> None:
    conflict = b'{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException",'
    conflict += b'"Message":"conflict"}'
    server = await fake([http_answer(400, conflict)])
    async with make_client(server.url, max_attempts=3) as client:
        with pytest.raises(DynamoError) as raised:
            await client.call("TransactWriteItems", {"TransactItems": []})
    assert (raised.value.code, raised.value.message) == ("TransactionConflictException", "conflict")
    assert len(server.requests) == 1


async def test_a_corrupted_body_is_retried(fake: FakeFactory) -> None:
    server = await fake([http_answer(200, b'{"Item":{}}', crc=12345), OK])
    async with make_client(server.url, max_attempts=2) as client:
        assert await client.call("GetItem", GET) == {"Item": {"id": {"S": "1"}}}
    assert len(server.requests) == 2
    failing = await fake([http_answer(200, b"{}", crc=1), http_answer(200, b"{}", crc=1)])
    async with make_client(failing.url, max_attempts=2) as client:
        with pytest.raises(DynamoTransportError, match="CRC32"):
            await client.call("GetItem", GET)


async def test_a_server_that_hangs_up_is_retried(fake: FakeFactory) -> None:
    server = await fake(["hangup", OK])
    async with make_client(server.url, max_attempts=2) as client:
        assert await client.call("GetItem", GET) == {"Item": {"id": {"S": "1"}}}
    assert server.connections == 2


async def test_connections_are_kept_alive_across_calls(fake: FakeFactory) -> None:
    server = await fake([])
    async with make_client(server.url) as client:
        for _ in range(20):
            await client.call("GetItem", GET)
    assert (len(server.requests), server.connections) == (20, 1)
    head = server.requests[0].decode()
    assert head.startswith("POST / HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "X-Amz-Target: DynamoDB_20120810.GetItem\r\n" in head
    assert "Authorization: AWS4-HMAC-SHA256 Credential=test/" in head


async def test_a_connection_closed_while_idle_costs_no_attempt(fake: FakeFactory) -> None:
    """The server drops a kept-alive connection without a word when the next request comes:
    the client goes again on a new connection, even with a single attempt allowed."""
    server = await fake([OK, "hangup", OK])
    async with make_client(server.url, max_attempts=1) as client:
        await client.call("GetItem", GET)
        await client.call("GetItem", GET)
    assert (len(server.requests), server.connections) == (3, 2)


async def test_calls_after_close_are_refused(moto_endpoint: str) -> None:
    client = make_client(moto_endpoint)
    await client.open()
    await client.close()
    with pytest.raises(RuntimeError, match="open"):
        await client.call("GetItem", GET)


async def test_the_retry_quota_stops_retrying_a_failing_endpoint(fake: FakeFactory) -> None:
    """Tokens run out after a few retries: then each call makes one attempt, and successes
    refill the quota one token at a time."""
    busy = http_answer(503, b'{"__type":"ServiceUnavailable","message":"busy"}')
    server = await fake([busy] * 4 + [OK] * 3)
    quota = RetryQuota(capacity=10)
    async with make_client(server.url, max_attempts=3, quota=quota) as client:
        with pytest.raises(DynamoError, match="busy"):
            await client.call("GetItem", GET)
        assert (len(server.requests), quota.available) == (3, 0)  # two retries of 5 tokens
        with pytest.raises(DynamoError, match="busy"):
            await client.call("GetItem", GET)
        assert (len(server.requests), quota.available) == (4, 0)  # no retry: no tokens
        for expected in (1, 2, 3):
            assert await client.call("GetItem", GET) == {"Item": {"id": {"S": "1"}}}
            assert quota.available == expected
    assert len(server.requests) == 7


PUT = {"TableName": "t", "Item": {"id": {"S": "1"}}}


async def test_a_write_of_unknown_outcome_is_not_retried_inside_a_copy(
    fake: FakeFactory,
) -> None:
    """Retried, a PutItem that got no answer could still land after the retry (and after
    newer writes); inside ``no_retry_of_unknown_writes`` it is raised instead. Reads and
    writes outside the block are retried as before. (A kept-alive connection found closed
    is still tried again once: the server closed it idle, before the request.)"""
    first = "silent"
    server = await fake([first, OK, first, OK, first])
    async with make_client(server.url, read_timeout=0.2, max_attempts=3) as client:
        await client.call("PutItem", PUT)  # retried: the first attempt had no answer
        assert len(server.requests) == 2
        with no_retry_of_unknown_writes():
            await client.call("GetItem", GET)  # a read is safe to retry
            assert len(server.requests) == 4
            with pytest.raises((TimeoutError, DynamoTransportError)):
                await client.call("PutItem", PUT)
        assert len(server.requests) == 5  # one attempt, not three
