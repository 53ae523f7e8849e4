"""Every single-record and query operation, against each real store."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from proxy.store import cursor as cursors
from proxy.store.base import InvalidCursor, KeyConflict, Record, RecordNotFound, Store
from proxy.store.schema import Schema, SchemaError

from .conftest import MakeUser

pytestmark = pytest.mark.integration


async def test_get_absent_is_none(store: Store) -> None:
    assert await store.get(uuid.uuid4()) is None


async def test_create_then_get_gives_the_canonical_record(
    store: Store, make_user: MakeUser, users_schema: Schema
) -> None:
    user = make_user()
    await store.create(user)
    got = await store.get(user["id"])
    assert got == user
    if getattr(store, "kind", "") == "dynamodb":
        # DynamoDB trims a decimal's trailing zeros: the same number, its digits as stored.
        assert str(got["balance"]) == "1234.56" and str(user["balance"]) == "1234.5600"
        user = {**user, "balance": got["balance"]}
    assert users_schema.dumps(got) == users_schema.dumps(user)


async def test_get_projection_returns_key_and_fields(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    got = await store.get(user["id"], fields=["email", "roles", "last_name"])
    assert got == {k: user[k] for k in ("id", "email", "roles", "last_name")}


async def test_get_projection_of_unknown_field_is_a_schema_error(store: Store) -> None:
    with pytest.raises(SchemaError) as caught:
        await store.get(uuid.uuid4(), fields=["nope"])
    assert caught.value.errors[0]["field"] == "nope"


async def test_create_existing_key_conflicts(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    with pytest.raises(KeyConflict):
        await store.create({**user, "first_name": "Other"})
    assert await store.get(user["id"]) == user


async def test_put_replaces_and_upserts(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.put(user)
    replacement = make_user(id=str(user["id"]), first_name=None, roles=[], preferences=None)
    await store.put(replacement)
    got = await store.get(user["id"])
    assert got == replacement
    assert got is not None and got["roles"] == frozenset() and got["first_name"] is None


async def test_update_changes_only_the_given_fields(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    changes = {"first_name": "Grace", "roles": frozenset(), "login_count": None}
    updated = await store.update(user["id"], changes)
    assert updated == {**user, **changes}
    assert await store.get(user["id"]) == updated


async def test_update_may_repeat_the_key_but_not_change_it(
    store: Store, make_user: MakeUser
) -> None:
    user = make_user()
    await store.create(user)
    assert (await store.update(user["id"], {"id": user["id"], "tags": []}))["tags"] == []
    with pytest.raises(SchemaError):
        await store.update(user["id"], {"id": uuid.uuid4()})


async def test_update_with_no_changes_returns_the_record(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    assert await store.update(user["id"], {}) == user


@pytest.mark.parametrize("changes", [{"first_name": "X"}, {}])
async def test_update_absent_key_is_not_found(store: Store, changes: dict[str, Any]) -> None:
    key = uuid.uuid4()
    with pytest.raises(RecordNotFound):
        await store.update(key, changes)
    assert await store.get(key) is None


async def test_delete_then_delete_again(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    await store.delete(user["id"])
    assert await store.get(user["id"]) is None
    with pytest.raises(RecordNotFound):
        await store.delete(user["id"])


async def test_query_index_finds_by_email(store: Store, make_user: MakeUser) -> None:
    users = [make_user(email="same@example.com") for _ in range(3)] + [make_user()]
    for user in users:
        await store.create(user)
    found = await store.query_index("email", "same@example.com", limit=10)
    assert sorted(r["id"] for r in found) == sorted(u["id"] for u in users[:3])
    assert len(await store.query_index("email", "same@example.com", limit=2)) == 2
    assert await store.query_index("email", "nobody@example.com", limit=10) == []
    with pytest.raises(SchemaError):
        await store.query_index("first_name", "Ada", limit=1)


async def test_list_pages_through_every_match(store: Store, make_user: MakeUser) -> None:
    matching = [make_user(first_name="Lin") for _ in range(7)]
    for user in [*matching, make_user(first_name="Other"), make_user(first_name="Other")]:
        await store.create(user)
    seen: list[Record] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await store.list({"first_name": "Lin"}, limit=3, cursor=cursor)
        pages += 1
        assert len(page) <= 3
        seen.extend(page)
        if cursor is None:
            break
    assert sorted(seen, key=lambda r: r["id"]) == sorted(matching, key=lambda r: r["id"])
    assert pages in (3, 4)


async def test_list_without_filters_and_with_several(store: Store, make_user: MakeUser) -> None:
    a = make_user(first_name="A", is_active=True)
    b = make_user(first_name="A", is_active=False)
    for user in (a, b):
        await store.create(user)
    everything, cursor = await store.list({}, limit=10)
    assert len(everything) == 2 and cursor is None
    page, _ = await store.list({"first_name": "A", "is_active": False}, limit=10)
    assert page == [b]


async def test_list_filters_on_null(store: Store, make_user: MakeUser) -> None:
    nameless = make_user(first_name=None)
    await store.create(nameless)
    await store.create(make_user(first_name="Named"))
    page, _ = await store.list({"first_name": None}, limit=10)
    assert page == [nameless]


async def test_list_refuses_bad_filters_and_cursors(
    store: Store, make_user: MakeUser, users_schema: Schema
) -> None:
    with pytest.raises(SchemaError):
        await store.list({"nope": 1}, limit=1)
    with pytest.raises(SchemaError):
        await store.list({"roles": frozenset({"admin"})}, limit=1)
    with pytest.raises(InvalidCursor):
        await store.list({}, limit=1, cursor="not-a-cursor!")
    other = "dynamodb" if type(store).__name__.startswith("Postgres") else "postgres"
    foreign = cursors.encode(other, users_schema, uuid.uuid4())
    with pytest.raises(InvalidCursor):
        await store.list({}, limit=1, cursor=foreign)
    with pytest.raises(ValueError):
        await store.list({}, limit=0)


async def test_batch_get_returns_existing_keys_in_the_order_asked(
    store: Store, make_user: MakeUser
) -> None:
    users = [make_user() for _ in range(5)]
    for user in users:
        await store.put(user)
    missing = uuid.uuid4()
    keys = [users[3]["id"], missing, users[0]["id"], users[3]["id"], users[1]["id"]]
    assert await store.batch_get(keys) == [users[3], users[0], users[1]]
    assert await store.batch_get([]) == []


@pytest.mark.parametrize("total", [1, 3])
async def test_scan_segments_cover_every_record_once(
    store: Store, make_user: MakeUser, total: int
) -> None:
    users = [make_user() for _ in range(30)]
    await store.batch_put(users)
    seen = [
        r
        for segment in range(total)
        async for p in store.scan_pages(segment, total)
        for r in p.records
    ]
    assert sorted(r["id"] for r in seen) == sorted(u["id"] for u in users)
    assert {r["id"]: r for r in seen} == {u["id"]: u for u in users}


async def test_scan_refuses_a_bad_segment(store: Store) -> None:
    with pytest.raises(ValueError):
        [p async for p in store.scan_pages(3, 3)]


async def test_init_is_idempotent(store: Store, make_user: MakeUser) -> None:
    user = make_user()
    await store.create(user)
    await store.init()  # type: ignore[attr-defined]
    assert await store.get(user["id"]) == user
