"""Exact values against real stores: numbers written straight into PostgreSQL and DynamoDB
reach the client with exactly PostgreSQL's digits and compare right both ways (equal values
match, a difference in the 20th digit is a mismatch); values no store can hold, and records
over the item limit, are refused before any store is written."""

from __future__ import annotations

import io
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.api.conftest import USERS, StoreProxyFactory, outcomes, stores, user
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

FIELDS = {**USERS["fields"], "balance": {"type": "decimal"}, "visits": {"type": "int"}}
RESOURCE = {"fields": FIELDS}
BOTH = pytest.mark.parametrize("read_from", ["postgres", "dynamodb"])
D38 = "0.12345678901234567890123456789012345678"


# Each case: the json number, decimal and int written into PostgreSQL; what DynamoDB holds
# (a JSON text in S, a decimal N as given); and the outcome a shadow read must find.
CASES: list[tuple[str, str, str, str, str, str, str]] = [
    # name, pg json, ddb json, pg decimal, ddb decimal N, visits, outcome
    ("20 digits", "0.12345678901234567890", "0.12345678901234567890", D38, D38,
     "9223372036854775807", "match"),
    ("beyond 64 bits", "18446744073709551617", "18446744073709551617",
     "12345678901234567890123456789012345678", "12345678901234567890123456789012345678",
     "-9223372036854775808", "match"),
    ("tiny difference", "1.000000000000000000000001", "1.000000000000000000000001",
     "1.000000000000000000000001", "1.000000000000000000000001", "1", "match"),
    ("trailing zeros", "1.50", "1.5", "1.50", "1.5", "0", "match"),
    ("negative zero", "-0.0", "0", "-0.00", "0", "-0", "match"),
    ("exponents", "1.5E-3", "0.0015e0", "1.5E+3", "1500", "2", "match"),
    ("big exponent", "1E+30", "1000000000000000000000000000000", "1E-130", "1E-130", "3",
     "match"),
    ("json 20th digit", "0.12345678901234567890", "0.12345678901234567891", "1", "1", "4",
     "mismatch"),
    ("json beyond 64 bits", "18446744073709551617", "18446744073709551618", "1", "1", "5",
     "mismatch"),
    ("json 25th digit", "1.000000000000000000000001", "1", "1", "1", "6", "mismatch"),
    ("decimal 38th digit", "1", "1", D38, D38[:-1] + "9", "7", "mismatch"),
    ("decimal 20th digit", "1", "1", "0.12345678901234567890", "0.12345678901234567891", "8",
     "mismatch"),
]  # fmt: skip


async def write_straight(proxy: RunningProxy, key: uuid.UUID, case: tuple[str, ...]) -> None:
    """The case's values into both stores directly, as another writer (a migration) would."""
    _, pg_json, ddb_json, pg_decimal, ddb_decimal, visits, _ = case
    pg, ddb = stores(proxy)["postgres"], stores(proxy)["dynamodb"]
    created = "2024-01-01T00:00:00.000000Z"
    async with pg._connection() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            f'INSERT INTO "{pg.table}" (id, email, is_active, created_at, preferences, '  # type: ignore[attr-defined]
            "balance, visits) VALUES ($1, $2, true, $3::text::timestamptz, "
            "$4::text::jsonb, $5::text::numeric, $6::text::bigint)",
            key, f"{key}@example.com", created, f'{{"k": {pg_json}}}', pg_decimal, visits,
        )  # fmt: skip
    item = {
        "id": {"S": str(key)},
        "email": {"S": f"{key}@example.com"},
        "is_active": {"BOOL": True},
        "created_at": {"S": created},
        "preferences": {"S": f'{{"k": {ddb_json}}}'},
        "balance": {"N": ddb_decimal},
        "visits": {"N": visits},
    }
    await ddb._client.call("PutItem", {"TableName": ddb.table, "Item": item})  # type: ignore[attr-defined]


async def postgres_text(proxy: RunningProxy, key: uuid.UUID) -> tuple[str, str, str]:
    """PostgreSQL's own text of the three numbers."""
    pg = stores(proxy)["postgres"]
    async with pg._connection() as conn:  # type: ignore[attr-defined]
        row = await conn.fetchrow(
            f"SELECT (preferences->'k')::text AS k, balance::text AS b, visits::text AS v "
            f'FROM "{pg.table}" WHERE id = $1',  # type: ignore[attr-defined]
            key,
        )
    assert row is not None
    return row["k"], row["b"], row["v"]


def body_text(body: bytes) -> tuple[str, str, str]:
    """The three numbers as the client's body writes them (the bytes, not a parse)."""
    k = re.search(rb'"preferences":\{"k":([^,}]+)\}', body)
    b = re.search(rb'"balance":"([^"]*)"', body)
    v = re.search(rb'"visits":(-?\d+)', body)
    assert k and b and v, body
    return k[1].decode(), b[1].decode(), v[1].decode()


@BOTH
async def test_exact_numbers_written_straight_into_both_stores(
    read_from: str, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(read_from, resource=RESOURCE)
    for i, case in enumerate(CASES):
        name, _, ddb_json, _, ddb_decimal, _, expected = case
        key = uuid.UUID(int=1000 + i)
        await write_straight(proxy, key, case)
        before = outcomes(proxy)
        async with http.get(f"{proxy.url}/users/{key}") as r:
            assert r.status == 200, (name, await r.text())
            body = await r.read()
        got = body_text(body)
        if read_from == "postgres":
            assert got == await postgres_text(proxy, key), name  # PostgreSQL's text, exactly
        else:  # the digits DynamoDB holds: equal as exact decimals, never via a float
            assert Decimal(got[0]) == Decimal(ddb_json) and Decimal(got[1]) == Decimal(ddb_decimal)
        await proxy.wait_for(lambda n=i + 1: sum(outcomes(proxy).values()) >= n, timeout=20)
        after = outcomes(proxy)
        changed = {k for k in after if after[k] != before.get(k, 0)}
        assert changed == {expected}, (name, changed)


async def test_the_issues_reproduction(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """jsonb {"k": 0.12345678901234567890} in PostgreSQL and ...891 in DynamoDB compared
    ``match`` and the client got 0.12345678901234568; 18446744073709551617 came back as
    1.8446744073709552e+19; 1.000000000000000000000001 as 1."""
    proxy = await store_proxy("postgres", resource=RESOURCE)
    u = user(1)
    body = orjson.dumps(u)[:-1] + (
        b',"preferences":{"k":0.12345678901234567890,"big":18446744073709551617,'
        b'"one":1.000000000000000000000001},"balance":"1.50","visits":9223372036854775807}'
    )
    headers = {"Content-Type": "application/json"}
    async with http.post(proxy.url + "/users", data=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        created = await r.read()
    expected = (
        b'"preferences":{"big":18446744073709551617,"k":0.12345678901234567890,'
        b'"one":1.000000000000000000000001}'
    )
    assert expected in created and b'"balance":"1.50"' in created
    for read_from in ("postgres", "dynamodb"):
        await proxy.apps.flag_store.set(
            "users", "read_from", read_from, actor="test", reason="read", force=True
        )
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            got = await r.read()
        assert expected in got, (read_from, got)
        # DynamoDB trims 1.50 to 1.5: the same number, the digits that store holds
        assert (b'"balance":"1.50"' if read_from == "postgres" else b'"balance":"1.5"') in got
    async with http.get(f"{proxy.url}/users?email={u['email']}") as r:  # a lookup's list
        assert expected in await r.read()
    async with http.post(proxy.url + "/users/batch-get", json={"keys": [u["id"]]}) as r:
        assert expected in await r.read()
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 4, timeout=20)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    assert set(outcomes(proxy)) == {"match"}, outcomes(proxy)

    # The same record with DynamoDB's copy off in the 20th digit: a mismatch.
    ddb = stores(proxy)["dynamodb"]
    changed = {"k": Decimal("0.12345678901234567891")}
    await ddb.update(uuid.UUID(u["id"]), {"preferences": changed})
    await proxy.apps.flag_store.set(
        "users", "read_from", "postgres", actor="test", reason="read", force=True
    )
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert expected in await r.read()
    await proxy.wait_for(lambda: outcomes(proxy).get("mismatch", 0) >= 1, timeout=20)
    # The mismatch record shows both values with every digit.
    sink = Path(proxy.settings.sink.path)

    def recorded() -> bool:
        text = sink.read_text() if sink.exists() else ""
        return '"primary":0.12345678901234567890,"shadow":0.12345678901234567891' in text

    await proxy.wait_for(recorded, timeout=10)


# --- refused input: 4xx in the envelope, nothing half-written -------------------------------

# case -> (what the body carries, status, the field named, words of the message)
REFUSED: dict[str, tuple[bytes, int, str, str]] = {
    "int beyond 64 bits": (b'"visits":18446744073709551616', 422, "visits", "64-bit"),
    "decimal over 38 digits": (
        b'"balance":1.2345678901234567890123456789012345678901',
        422,
        "balance",
        "38",
    ),
    "decimal beyond DynamoDB's range": (b'"balance":1e400', 422, "balance", "1E+126"),
    "json number beyond PostgreSQL": (
        b'"preferences":{"k":1e200000}',
        422,
        "preferences.k",
        "PostgreSQL",
    ),
    "json numbers too long written out": (
        b'"preferences":{"k":[' + b",".join([b"1e100000"] * 5) + b"]}",
        422,
        "preferences.k[4]",
        "written out",
    ),
    "1 MB first_name": (
        b'"first_name":"' + b"x" * (1024 * 1024) + b'"',
        413,
        "first_name",
        "max_record_bytes",
    ),
}


def refused_body(case: str) -> bytes:
    return orjson.dumps(user(7))[:-1] + b"," + REFUSED[case][0] + b"}"


async def assert_nothing_written(proxy: RunningProxy) -> None:
    for name, store in stores(proxy).items():
        records, _ = await store.list({}, 10)
        assert records == [], name


def assert_envelope(
    status: int, body: dict[str, Any], want: int, field: str, words: str = ""
) -> None:
    assert status == want, body
    error = body["error"]
    assert error["code"] == {413: "payload_too_large", 422: "unprocessable"}[want]
    assert error["request_id"] and error["message"]
    assert [d["field"] for d in error["details"]] == [field], error
    assert words in error["message"] + " ".join(d["message"] for d in error["details"]), error


@pytest.mark.parametrize("case", REFUSED)
@BOTH
async def test_values_no_store_holds_are_refused_and_nothing_is_written(
    case: str, read_from: str, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(read_from, resource=RESOURCE)
    body = refused_body(case)
    _, status, field, words = REFUSED[case]
    headers = {"Content-Type": "application/json"}
    async with http.post(proxy.url + "/users", data=io.BytesIO(body), headers=headers) as r:
        assert_envelope(r.status, await r.json(), status, field, words)
    u = user(7)
    async with http.put(
        f"{proxy.url}/users/{u['id']}", data=io.BytesIO(body), headers=headers
    ) as r:
        assert_envelope(r.status, await r.json(), status, field, words)
    batch = b'{"items": [' + orjson.dumps(user(8)) + b"," + body + b"]}"
    async with http.post(proxy.url + "/users/batch", data=io.BytesIO(batch), headers=headers) as r:
        assert r.status == status
        error = (await r.json())["error"]
        assert [(d["item"], d["field"]) for d in error["details"]] == [(1, field)], error
    await assert_nothing_written(proxy)


async def test_a_patch_that_would_grow_the_record_too_large_changes_nothing(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """PostgreSQL measures the updated record inside the update's transaction and rolls it
    back, so neither store changes. (A DynamoDB primary's UpdateItem is bounded by
    DynamoDB's own 400 KB, which moto does not enforce, so it is not tested here.)"""
    proxy = await store_proxy("postgres", resource=RESOURCE)
    u = user(3, first_name="y" * 200_000)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    key = uuid.UUID(u["id"])
    before = [await s.get(key) for s in stores(proxy).values()]
    assert before[0] is not None and before[0] == before[1]
    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"last_name": "z" * 250_000}) as r:
        assert_envelope(r.status, await r.json(), 413, "last_name")
    assert [await s.get(key) for s in stores(proxy).values()] == before


async def test_max_record_bytes_can_be_set_below_the_limit(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", resource={**RESOURCE, "max_record_bytes": 2000})
    async with http.post(proxy.url + "/users", json=user(1, first_name="x" * 1500)) as r:
        assert r.status == 201
    async with http.post(proxy.url + "/users", json=user(2, first_name="x" * 3000)) as r:
        assert_envelope(r.status, await r.json(), 413, "first_name")
        assert "max_record_bytes" in (await r.json())["error"]["message"]
    u = user(1)
    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"last_name": "z" * 1000}) as r:
        assert_envelope(r.status, await r.json(), 413, "last_name")
    for store in stores(proxy).values():
        records, _ = await store.list({}, 10)
        assert [(str(r["id"]), r["last_name"]) for r in records] == [(u["id"], "Test")]
