"""``PostgresStore.get`` of a whole record by a uuid key reads every column but the key and
takes the key it was asked for; these hold it to what reading the key column gave, and
``get_compared`` to what rendering ``get``'s record gives."""

from __future__ import annotations

import uuid

import pytest

from comparators.canonical import canonical
from comparators.markers import Drifted
from proxy.store.base import StoreError
from proxy.store.compared import without_drift
from proxy.store.postgres import PostgresStore

from .conftest import MakeUser, written_by_another_tool


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


@pytest.mark.parametrize("fields", [None, ["email", "roles", "email"], ["id", "created_at"]])
async def test_the_compared_read_gives_what_the_record_renders_as(
    pg_store: PostgresStore, make_user: MakeUser, fields: list[str] | None
) -> None:
    schema = pg_store.schema
    user = make_user()
    await pg_store.put(user)
    for key in (user["id"], str(user["id"]).upper()):
        record = await pg_store.get(key, fields)
        assert record is not None
        want = schema.to_json(record, fields=fields, drift=True)
        got = await pg_store.get_compared(key, fields)
        assert got == want and list(got) == list(want)
    assert await pg_store.get_compared(uuid.uuid4(), fields) is None
    with pytest.raises(StoreError, match="invalid input for query argument"):
        await pg_store.get_compared("not a uuid", fields)


async def test_a_drifted_row_is_marked_in_the_compared_read(
    pg_store: PostgresStore, make_user: MakeUser
) -> None:
    """A row another tool wrote: a role array with a NULL element."""
    user = make_user()
    await pg_store.put(user)
    await written_by_another_tool(pg_store, user["id"], "roles = ARRAY['admin', NULL]")
    got = await pg_store.get_compared(user["id"])
    assert isinstance(got["roles"], Drifted)
    record = await pg_store.get(user["id"])
    assert canonical(got) == canonical(pg_store.schema.to_json(record, drift=True))
    assert without_drift(got)["roles"] == ["admin", None]
