"""Reads by key that start in one loop turn share a BatchGetItem (``proxy.store.dynamo_coalesce``)
on the moto server, and each caller still gets what a GetItem of its own key gives."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from comparators.canonical import canonical
from comparators.markers import Drifted
from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping
from proxy.store.base import Record, StoreError, StoreUnavailable, Throttled
from proxy.store.codec_dynamodb import decode_item
from proxy.store.dynamodb import DynamoDBStore

from .conftest import MakeUser

pytestmark = pytest.mark.integration


async def seeded(store: DynamoDBStore, make_user: MakeUser, n: int) -> list[Record]:
    users = [make_user() for _ in range(n)]
    assert all(r.ok for r in await store.batch_put(users))
    return users


async def one_by_one(store: DynamoDBStore, keys: list[Any]) -> list[Record | None]:
    """The oracle: each key by its own GetItem, in turn."""
    items = [await store._get_raw(key) for key in keys]
    names = store.schema.field_names
    return [None if i is None else decode_item(store.schema, i, names) for i in items]


async def test_reads_in_one_turn_are_one_batch_and_each_caller_gets_its_own(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 8)
    keys = [u["id"] for u in users] + [uuid.uuid4(), uuid.uuid4()]  # two absent
    expected = await one_by_one(ddb_store, keys)
    assert expected == [*users, None, None]
    faulty.calls.clear()
    assert await asyncio.gather(*(ddb_store.get(k) for k in keys)) == expected
    assert faulty.batch_sizes["BatchGetItem"] == [10]
    assert faulty.calls["GetItem"] == 0


async def test_a_lone_read_is_a_get_item(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    (u,) = await seeded(ddb_store, make_user, 1)
    faulty.calls.clear()
    assert await ddb_store.get(u["id"]) == u
    assert await ddb_store.get(uuid.uuid4()) is None
    assert faulty.calls == {"GetItem": 2}


async def test_a_lone_read_is_sent_from_its_callers_task_which_may_cancel_it(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    """No task of the coalescer's: the caller's own task sends the GetItem, so cancelling
    the caller cancels the call, as it would an uncoalesced read."""
    (u,) = await seeded(ddb_store, make_user, 1)
    seen: list[asyncio.Task[Any] | None] = []
    ended = asyncio.Event()

    async def stall(client: Any, request: dict[str, Any]) -> Any:
        seen.append(asyncio.current_task())
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    faulty.inject("GetItem", stall)
    reader = asyncio.ensure_future(ddb_store.get(u["id"]))
    for _ in range(500):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == [reader]
    assert not ddb_store._reads._calls  # type: ignore[union-attr]
    reader.cancel()
    await asyncio.wait_for(ended.wait(), 10)
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await ddb_store.get(u["id"]) == u  # the next read is not disturbed


async def test_a_key_asked_twice_is_asked_once_and_both_callers_are_answered(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    a, b = await seeded(ddb_store, make_user, 2)
    keys = [a["id"], b["id"], a["id"], a["id"]]
    assert await asyncio.gather(*(ddb_store.get(k) for k in keys)) == [a, b, a, a]
    assert faulty.batch_sizes["BatchGetItem"] == [2]  # DynamoDB refuses duplicate keys


async def test_no_call_holds_more_than_100_keys(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 150)
    got = await asyncio.gather(*(ddb_store.get(u["id"]) for u in users))
    assert got == users
    assert faulty.batch_sizes["BatchGetItem"] == [100, 50]


@pytest.mark.parametrize("fault", ["get_half", "get_none"])
async def test_unprocessed_keys_are_read_again_alone(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any, fault: str
) -> None:
    users = await seeded(ddb_store, make_user, 6)
    keys = [u["id"] for u in users] + [uuid.uuid4()]
    faulty.calls.clear()
    faulty.inject("BatchGetItem", getattr(faults, fault))
    assert await asyncio.gather(*(ddb_store.get(k) for k in keys)) == [*users, None]
    assert faulty.calls["GetItem"] == (4 if fault == "get_half" else 7)  # 7 // 2 found


async def test_an_unavailable_store_fails_every_caller_of_the_batch_at_once(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    users = await seeded(ddb_store, make_user, 3)
    faulty.calls.clear()
    faulty.inject("BatchGetItem", faults.throttle())
    results = await asyncio.gather(*(ddb_store.get(u["id"]) for u in users), return_exceptions=True)
    assert all(isinstance(r, Throttled) for r in results), results
    assert faulty.calls == {"BatchGetItem": 1}  # not tried again key by key: it would fail too


async def test_a_batch_refused_for_another_reason_is_read_key_by_key(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    users = await seeded(ddb_store, make_user, 3)
    faulty.calls.clear()
    faulty.inject("BatchGetItem", faults.throttle("ValidationException"))
    assert await asyncio.gather(*(ddb_store.get(u["id"]) for u in users)) == users
    assert faulty.calls == {"BatchGetItem": 1, "GetItem": 3}


async def test_a_key_that_fails_alone_fails_only_its_caller(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any, faults: Any
) -> None:
    users = await seeded(ddb_store, make_user, 3)
    faulty.inject("BatchGetItem", faults.throttle("ValidationException"))
    faulty.inject("GetItem", faults.throttle("ValidationException"))  # the first key's
    results = await asyncio.gather(*(ddb_store.get(u["id"]) for u in users), return_exceptions=True)
    assert isinstance(results[0], StoreError) and not isinstance(results[0], StoreUnavailable)
    assert results[1:] == users[1:]


async def test_a_cancelled_caller_does_not_disturb_the_others(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 3)
    tasks = [asyncio.ensure_future(ddb_store.get(u["id"])) for u in users]
    await asyncio.sleep(0)  # each read has joined the batch
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [done[0], done[2]] == [users[0], users[2]]
    assert faulty.batch_sizes["BatchGetItem"] == [2]  # the cancelled key was not sent


async def test_closing_the_store_answers_the_callers_of_a_batch_in_flight(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 2)
    sent = asyncio.Event()

    async def stall(client: Any, request: dict[str, Any]) -> Any:
        sent.set()
        await asyncio.Event().wait()

    faulty.inject("BatchGetItem", stall)
    reads = asyncio.gather(*(ddb_store.get(u["id"]) for u in users), return_exceptions=True)
    await asyncio.wait_for(sent.wait(), 10)
    await ddb_store._reads.close()  # type: ignore[union-attr]  (what close() does first)
    results = await asyncio.wait_for(reads, 10)
    assert all(isinstance(r, StoreUnavailable) for r in results), results


async def test_projected_reads_and_a_store_told_not_to_gather_use_get_item(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 3)
    faulty.calls.clear()
    got = await asyncio.gather(*(ddb_store.get(u["id"], ["email"]) for u in users))
    assert got == [{"id": u["id"], "email": u["email"]} for u in users]
    assert faulty.calls == {"GetItem": 3}
    ddb_store._reads = None  # as built with coalesce_reads=False
    faulty.calls.clear()
    assert await asyncio.gather(*(ddb_store.get(u["id"]) for u in users)) == users
    assert faulty.calls == {"GetItem": 3}


def test_coalesce_reads_takes_a_boolean_only() -> None:
    backend = {"kind": "dynamodb", "region": "us-east-1", "coalesce_reads": "sometimes"}
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"backends": {"ddb": backend}})
    assert "backends.ddb.coalesce_reads = 'sometimes'" in str(raised.value)
    backend["coalesce_reads"] = False
    settings = settings_from_mapping({"backends": {"ddb": backend}})
    assert settings.backends["ddb"].coalesce_reads is False  # type: ignore[union-attr]


def compared(store: DynamoDBStore, record: Record | None, fields: list[str] | None = None) -> Any:
    """The oracle of ``get_compared``: the record read, rendered as a comparison reads it."""
    if record is None:
        return None
    return store.schema.to_json(record, fields=fields, drift=True)


async def test_compared_reads_give_what_the_record_renders_as_alone_gathered_and_projected(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    users = await seeded(ddb_store, make_user, 4)
    keys = [u["id"] for u in users] + [uuid.uuid4()]
    want = [compared(ddb_store, u) for u in [*users, None]]
    faulty.calls.clear()
    assert await ddb_store.get_compared(keys[0]) == want[0]  # a lone read: GetItem
    assert await ddb_store.get_compared(keys[-1]) is None
    assert faulty.calls == {"GetItem": 2}
    assert await asyncio.gather(*(ddb_store.get_compared(k) for k in keys)) == want
    assert faulty.batch_sizes["BatchGetItem"] == [5]
    fields = ["email", "roles", "email"]
    got = await ddb_store.get_compared(keys[1], fields)
    assert got == compared(ddb_store, users[1], fields) and list(got) == ["email", "roles"]


async def test_a_drifted_item_is_marked_in_the_compared_read(
    ddb_store: DynamoDBStore, make_user: MakeUser
) -> None:
    """Written by another tool: a set stored as a list, a datetime in another zone."""
    (u,) = await seeded(ddb_store, make_user, 1)
    key = {"id": {"S": str(u["id"])}}
    await ddb_store._call(
        "UpdateItem",
        TableName=ddb_store.table,
        Key=key,
        UpdateExpression="SET #r = :r, #c = :c",
        ExpressionAttributeNames={"#r": "roles", "#c": "created_at"},
        ExpressionAttributeValues={
            ":r": {"L": [{"S": "admin"}]},
            ":c": {"S": "2024-01-01T13:00:00+01:00"},
        },
    )
    got = await ddb_store.get_compared(u["id"])
    assert isinstance(got["roles"], Drifted)
    assert got["created_at"] == "2024-01-01T12:00:00.000000Z"
    assert canonical(got) == canonical(compared(ddb_store, await ddb_store.get(u["id"])))


async def test_an_item_whose_key_comes_back_spelled_otherwise_still_reaches_its_caller(
    ddb_store: DynamoDBStore, make_user: MakeUser, faulty: Any
) -> None:
    """Gathered reads match items to callers by the key as it was asked; a key DynamoDB
    spelled its own way is decoded instead, not taken for an absent one."""
    users = await seeded(ddb_store, make_user, 3)

    async def upper_keys(client: Any, request: dict[str, Any]) -> Any:
        answer = await client.call("BatchGetItem", request)
        for items in answer["Responses"].values():
            for item in items:
                item["id"] = {"S": item["id"]["S"].upper()}
        return answer

    faulty.inject("BatchGetItem", upper_keys)
    got = await asyncio.gather(*(ddb_store.get(u["id"]) for u in users))
    assert got == users
