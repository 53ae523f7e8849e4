"""The DynamoDB table behind a store, derived from the schema and made to exist: one hash key
(the resource key), one GSI per declared index (hash key only, all attributes projected),
on-demand billing — so ``init`` needs no capacity planning and is safe to run on every
deploy (a table or index that exists is left alone, one created concurrently is accepted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.store.base import StoreError, StoreTimeout
from proxy.store.codec_dynamodb import attribute_type
from proxy.store.dynamo_errors import error_code
from proxy.store.schema import Schema

Call = Callable[..., Awaitable[dict[str, Any]]]  # the store's ``_call(operation, **request)``


async def ensure_table(call: Call, table: str, schema: Schema, *, timeout: float) -> None:
    """Create the table and any missing GSI; return once all of it is ACTIVE."""
    deadline = time.monotonic() + timeout
    found = await describe(call, table)
    if found is None:
        try:
            await call("CreateTable", **table_definition(schema, table))
        except StoreError as e:
            if error_code(e) != "ResourceInUseException":  # created concurrently
                raise
        found = await wait_active(call, table, deadline)
    existing = {gsi["IndexName"] for gsi in found.get("GlobalSecondaryIndexes", [])}
    for index in schema.indexes.values():
        if index.dynamodb_index not in existing:
            await call(
                "UpdateTable",
                TableName=table,
                AttributeDefinitions=attribute_definitions(schema),
                GlobalSecondaryIndexUpdates=[{"Create": gsi(schema, index.dynamodb_index)}],
            )
            await wait_active(call, table, deadline)


async def describe(call: Call, table: str) -> dict[str, Any] | None:
    """The table's description, None when it does not exist."""
    try:
        response = await call("DescribeTable", TableName=table)
    except StoreError as e:
        if error_code(e) == "ResourceNotFoundException":
            return None
        raise
    found: dict[str, Any] = response["Table"]
    return found


async def wait_active(call: Call, table: str, deadline: float) -> dict[str, Any]:
    pause = 0.05
    while True:
        found = await describe(call, table)
        if found is not None and found["TableStatus"] == "ACTIVE":
            indexes = found.get("GlobalSecondaryIndexes", [])
            if all(index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes):
                return found
        if time.monotonic() + pause > deadline:
            raise StoreTimeout(f"dynamodb table {table!r} not ACTIVE in time")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


def attribute_definitions(schema: Schema) -> list[dict[str, str]]:
    names = [schema.key, *(index.field for index in schema.indexes.values())]
    return [
        {"AttributeName": name, "AttributeType": attribute_type(schema.fields[name].type.base)}
        for name in dict.fromkeys(names)
    ]


def gsi(schema: Schema, index_name: str) -> dict[str, Any]:
    index = next(i for i in schema.indexes.values() if i.dynamodb_index == index_name)
    return {
        "IndexName": index_name,
        "KeySchema": [{"AttributeName": index.field, "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }


def table_definition(schema: Schema, table: str) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "TableName": table,
        "KeySchema": [{"AttributeName": schema.key, "KeyType": "HASH"}],
        "AttributeDefinitions": attribute_definitions(schema),
        "BillingMode": "PAY_PER_REQUEST",
    }
    gsis = [gsi(schema, i.dynamodb_index) for i in schema.indexes.values()]
    if gsis:
        definition["GlobalSecondaryIndexes"] = gsis
    return definition
