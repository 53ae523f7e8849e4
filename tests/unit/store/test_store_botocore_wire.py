"""botocore as the oracle of the lean DynamoDB client's wire format: every request the store
sends (through the real client, only ``h1.send`` faked) is what botocore's JSON serializer
builds from the same parameters, valid by DynamoDB's service model; every answer and error
body reads as botocore's JSON parser reads it."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.parsers
import botocore.serialize
import botocore.session
import botocore.validate
import orjson
import pytest
from botocore.awsrequest import HeadersDict

from proxy import h1
from proxy.store.codec_dynamodb import encode_item
from proxy.store.dynamo_errors import DynamoError
from proxy.store.dynamo_http import CONTENT_TYPE, TARGET_PREFIX, DynamoHttpClient
from proxy.store.dynamodb import DynamoDBStore
from proxy.store.retry import RetryPolicy
from proxy.store.schema import Schema

MODEL = botocore.session.get_session().get_service_model("dynamodb")
SERIALIZER = botocore.serialize.create_serializer("json")
PARSER = botocore.parsers.create_parser("json")
STORE_SOURCES = ["dynamodb.py", "dynamo_batch.py", "dynamo_table.py"]
STORE_DIR = Path(__file__).resolve().parents[3] / "proxy" / "store"


class FakeResponse:
    def __init__(self, status: int, body: bytes, headers: dict[bytes, bytes]) -> None:
        self.status = status
        self._body = body
        self._headers = {k.lower(): v for k, v in headers.items()}

    def header(self, name: bytes) -> bytes | None:
        return self._headers.get(name)

    async def read(self, deadline: float | None = None) -> bytes:
        return self._body

    def release(self) -> None:
        pass


class Wire:
    """Stands in for ``h1.send``: records each request (head fields, body) and answers from
    a script per operation (the last entry repeats)."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, str], bytes]] = []
        self.answered: list[tuple[str, int, bytes]] = []
        self.script: dict[str, list[tuple[int, bytes, dict[bytes, bytes]]]] = {}

    def answer(self, operation: str, *answers: Any, status: int = 200) -> None:
        self.script.setdefault(operation, []).extend(
            (status, a if isinstance(a, bytes) else orjson.dumps(a), {}) for a in answers
        )

    async def send(
        self, pool: Any, method: str, head: bytes, body: bytes, deadline: float | None = None
    ) -> Any:
        lines = head.decode().split("\r\n")
        assert lines[0] == f"{method} / HTTP/1.1"
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        self.sent.append((fields, body))
        operation = fields["X-Amz-Target"].removeprefix(TARGET_PREFIX)
        queue = self.script.get(operation) or [(200, b"{}", {})]
        status, answer, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        self.answered.append((operation, status, answer))
        return FakeResponse(status, answer, headers), False


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    fake = Wire()
    monkeypatch.setattr(h1, "send", fake.send)
    yield fake


def from_wire(shape: Any, value: Any) -> Any:
    """A request as it went on the wire -> botocore's input parameters (blobs as bytes)."""
    kind = shape.type_name
    if kind == "structure":
        return {k: from_wire(shape.members[k], v) for k, v in value.items()}
    if kind == "list":
        return [from_wire(shape.member, v) for v in value]
    if kind == "map":
        return {k: from_wire(shape.value, v) for k, v in value.items()}
    if kind == "blob":
        return base64.b64decode(value)
    return value


def to_wire(shape: Any, value: Any) -> Any:
    """botocore's parsed output -> the JSON our client returns (blobs as base64 text)."""
    kind = shape.type_name
    if kind == "structure":
        return {k: to_wire(shape.members[k], v) for k, v in value.items() if k in shape.members}
    if kind == "list":
        return [to_wire(shape.member, v) for v in value]
    if kind == "map":
        return {k: to_wire(shape.value, v) for k, v in value.items()}
    if kind == "blob":
        return base64.b64encode(value).decode()
    return value


def store_operations() -> set[str]:
    """The operations the store's modules name in their calls."""
    pattern = re.compile(r'(?:call|_call_retrying|_pages)\(\s*"([A-Z][A-Za-z]+)"')
    found: set[str] = set()
    for name in STORE_SOURCES:
        found |= set(pattern.findall((STORE_DIR / name).read_text()))
    return found


def record(schema: Schema, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": str(uuid.uuid4()),
        "email": f"{uuid.uuid4().hex[:8]}@example.com",
        "first_name": "Ada",
        "is_active": True,
        "created_at": "2024-01-01T00:00:00.5Z",
        "birthday": "1990-05-17",
        "preferences": {"theme": "dark", "n": [1, 2.5, None]},
        "roles": ["admin", "user"],
        "tags": ["b", "a", "b"],
        "lucky": [7, 13],
        "balance": "1234.5600",
        "login_count": 3,
        "score": 0.25,
    }
    body.update(overrides)
    return schema.validate(body, partial=False)


EXTRA = {  # attributes no field reads, with the types our records never hold
    "blob": {"B": base64.b64encode(b"\x00\xffbytes").decode()},
    "blobs": {"BS": [base64.b64encode(b"a").decode(), base64.b64encode(b"\x01").decode()]},
    "native": {"M": {"l": {"L": [{"N": "1.50"}, {"NULL": True}, {"BOOL": False}]}}},
    "numbers": {"NS": ["1", "-2.5e3"]},
}
TABLE = "users"
ACTIVE = {"TableName": TABLE, "TableStatus": "ACTIVE", "ItemCount": 0}
ACTIVE_WITH_INDEX = {
    **ACTIVE,
    "GlobalSecondaryIndexes": [{"IndexName": "email-index", "IndexStatus": "ACTIVE"}],
}
NOT_FOUND = {
    "__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
    "message": "Requested resource not found",
}


async def test_every_request_the_store_sends_is_botocores(wire: Wire, schema: Schema) -> None:
    one, two = record(schema), record(schema, first_name=None)
    item_one = {**encode_item(schema, one), **EXTRA}
    item_two = encode_item(schema, two)
    wire.answer("DescribeTable", NOT_FOUND, status=400)
    wire.answer("DescribeTable", {"Table": ACTIVE}, {"Table": ACTIVE_WITH_INDEX})
    wire.answer("CreateTable", {"TableDescription": {**ACTIVE, "TableStatus": "CREATING"}})
    wire.answer("UpdateTable", {"TableDescription": ACTIVE})
    wire.answer("GetItem", {"Item": item_one, "ConsumedCapacity": {"TableName": TABLE}})
    wire.answer("Query", {"Items": [item_one], "Count": 1, "ScannedCount": 1})
    wire.answer(
        "Scan",
        {"Items": [item_one, item_two], "Count": 2, "LastEvaluatedKey": {"id": item_two["id"]}},
        {"Items": [item_two], "Count": 1},
    )
    wire.answer("PutItem", {})
    wire.answer("UpdateItem", {"Attributes": item_one})
    wire.answer("DeleteItem", {})
    wire.answer(
        "BatchWriteItem",
        {"UnprocessedItems": {TABLE: [{"PutRequest": {"Item": item_two}}]}},
        {"UnprocessedItems": {}},
    )
    wire.answer(
        "BatchGetItem",
        {
            "Responses": {TABLE: [item_one]},
            "UnprocessedKeys": {TABLE: {"Keys": [{"id": item_two["id"]}]}},
        },
        {"Responses": {TABLE: [item_two]}, "UnprocessedKeys": {}},
    )
    answers: list[tuple[str, dict[str, Any]]] = []

    class Recording:
        def __init__(self, client: DynamoHttpClient) -> None:
            self.client = client

        async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
            answer = await self.client.call(operation, request)
            answers.append((operation, answer))
            return answer

    store = DynamoDBStore(
        "http://127.0.0.1:1",
        "eu-west-1",
        TABLE,
        schema,
        retry=RetryPolicy(max_attempts=3, base_delay=0.0),
        client_wrapper=Recording,
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        aws_session_token="token",
        scan_page=50,
    )
    async with store:
        await store.init()
        await store.get(one["id"])
        await store.get(one["id"], ["email", "roles"])
        await store.query_index("email", one["email"], 10)
        page, cursor = await store.list({"is_active": True, "first_name": None}, 1)
        assert cursor is not None and len(page) == 1
        await store.list({}, 5, cursor)
        assert [r["id"] async for p in store.scan_pages(1, 4) for r in p.records] == [two["id"]]
        await store.create(one)
        await store.put(two)
        await store.update(one["id"], {"first_name": "Grace", "birthday": None})
        await store.delete(two["id"])
        assert all(r.ok for r in await store.batch_put([one, two]))
        assert len(await store.batch_get([one["id"], two["id"]])) == 2

    operations = set()
    for fields, body in wire.sent:
        target = fields["X-Amz-Target"]
        name = target.removeprefix(TARGET_PREFIX)
        operations.add(name)
        operation = MODEL.operation_model(name)
        params = from_wire(operation.input_shape, orjson.loads(body))
        report = botocore.validate.ParamValidator().validate(params, operation.input_shape)
        assert not report.has_errors(), (name, report.generate_report())
        expected = SERIALIZER.serialize_to_request(params, operation)
        assert (expected["method"], expected["url_path"]) == ("POST", "/")
        assert fields["X-Amz-Target"] == expected["headers"]["X-Amz-Target"]
        assert fields["Content-Type"] == expected["headers"]["Content-Type"] == CONTENT_TYPE
        assert json.loads(body) == json.loads(expected["body"]), name
    assert operations == store_operations()  # each one the store names, sent and checked
    assert len(operations) == 11

    ok = [(name, raw) for name, status, raw in wire.answered if status == 200]
    assert [name for name, _ in ok] == [name for name, _ in answers]  # one exchange a call
    for (name, raw), (_, answer) in zip(ok, answers, strict=True):
        output = MODEL.operation_model(name).output_shape
        parsed = PARSER.parse({"status_code": 200, "headers": HeadersDict(), "body": raw}, output)
        parsed.pop("ResponseMetadata")
        assert to_wire(output, parsed) == answer, name


# error answers -----------------------------------------------------------------------------


ERRORS = [
    (
        400,
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",'
        b'"message":"The conditional request failed"}',
    ),
    (
        400,
        b'{"__type":"com.amazon.coral.validate#ValidationException",'
        b'"Message":"Item size has exceeded the maximum allowed size"}',
    ),
    (400, b'{"__type":"ResourceNotFoundException","message":"Requested resource not found"}'),
    (
        400,
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException:http://internal.'
        b'amazon.com/coral/com.amazon.coral.availability/","message":"Rate exceeded"}',
    ),
    (400, b'{"__type":"TransactionCanceledException","message":"m","Message":"M"}'),
    (400, b'{"__type":"LimitExceededException"}'),
    (500, b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"x"}'),
    (503, b""),
    (502, b"{}"),
]


@pytest.mark.parametrize(("status", "body"), ERRORS)
async def test_error_answers_read_as_botocore_reads_them(
    wire: Wire, status: int, body: bytes
) -> None:
    wire.answer("GetItem", body, status=status)
    client = DynamoHttpClient(
        "http://127.0.0.1:1",
        "us-east-1",
        access_key_id="a",
        secret_access_key="s",
        connect_timeout=1,
        read_timeout=1,
        max_attempts=1,
    )
    async with client:
        with pytest.raises(DynamoError) as raised:
            await client.call("GetItem", {"TableName": "t", "Key": {"id": {"S": "x"}}})
    output = MODEL.operation_model("GetItem").output_shape
    parsed = PARSER.parse({"status_code": status, "headers": HeadersDict(), "body": body}, output)
    error = raised.value
    assert (error.code, error.status) == (parsed["Error"]["Code"], status)
    if body.strip(b"{}"):  # botocore has a message only from the body; ours says "no message"
        assert error.message == (parsed["Error"]["Message"] or "no message")
