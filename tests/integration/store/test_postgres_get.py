"""``PostgresStore.get`` of a whole record by a uuid key reads every column but the key and
takes the key it was asked for; these hold it to what reading the key column gave."""

from __future__ import annotations

import uuid

import pytest

from proxy.store.base import StoreError
from proxy.store.postgres import PostgresStore

from .conftest import MakeUser


async def test_a_whole_record_by_key_does_not_select_the_key(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    assert pg_store._implied_key
    assert '"id"' not in pg_store._get_rest.split(" FROM ")[0]
    user = make_user()
    await pg_store.put(user)
    found = await pg_store.get(user["id"])
    assert found == user
    assert list(found) == list(pg_store.schema.field_names)  # field order as declared
    assert type(found["id"]) is uuid.UUID
    assert await pg_store.get(uuid.uuid4()) is None


async def test_a_key_given_as_text_reads_the_same_record(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = make_user()
    await pg_store.put(user)
    for text in (str(user["id"]), str(user["id"]).upper()):
        found = await pg_store.get(text)
        assert found == user
        assert type(found["id"]) is uuid.UUID


async def test_a_projection_and_a_bad_key_take_the_reading_they_took_before(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    user = make_user()
    await pg_store.put(user)
    assert await pg_store.get(user["id"], ["id", "email"]) == {
        "id": user["id"],
        "email": user["email"],
    }
    with pytest.raises(StoreError, match="invalid input for query argument"):
        await pg_store.get("not a uuid")
