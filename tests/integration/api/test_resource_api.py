"""Every resource API operation, on both read_from settings, against real stores."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.integration.api.conftest import StoreProxyFactory, mirrored, stores, user
from tests.support.servers import RunningProxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration

C = "shadowproxy_comparisons_total"
BOTH = pytest.mark.parametrize("read_from", ["postgres", "dynamodb"])


def outcomes(proxy: RunningProxy) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in proxy.registry.collect():
        if metric.name != "shadowproxy_comparisons":
            continue
        for s in metric.samples:
            if s.name.endswith("_total") and s.value:
                found[s.labels["outcome"]] = found.get(s.labels["outcome"], 0) + s.value
    return found


async def both_sides(proxy: RunningProxy, key: str) -> list[Any]:
    parsed = uuid.UUID(key)
    schema = proxy.apps.resources.services["users"].schema
    out = []
    for store in stores(proxy).values():
        record = await store.get(parsed)
        out.append(None if record is None else schema.dumps(record))
    return out


@BOTH
async def test_crud_round_trip(
    read_from: str, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(read_from)
    u = user(1)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    assert created["email"] == u["email"]
    assert created["created_at"] == "2024-01-01T00:00:00.000000Z"
    assert created["updated_at"] is None
    assert created["roles"] == ["admin", "viewer"] or created["roles"] == ["viewer"]

    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "conflict"

    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200
        assert await r.json() == created
    async with http.get(f"{proxy.url}/users/{u['id']}?fields=email,first_name") as r:
        assert await r.json() == {"id": u["id"], "email": u["email"], "first_name": "Grace"}

    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"first_name": "Barbara"}) as r:
        assert r.status == 200
        assert (await r.json())["first_name"] == "Barbara"
    replaced = {**u, "last_name": "Liskov", "roles": []}
    async with http.put(f"{proxy.url}/users/{u['id']}", json=replaced) as r:
        assert r.status == 200
        body = await r.json()
        assert body["last_name"] == "Liskov" and body["first_name"] == "Grace"
    primary, secondary = await both_sides(proxy, u["id"])
    assert primary == secondary is not None

    async with http.delete(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 204
    async with http.delete(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 404
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 404
    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"first_name": "X"}) as r:
        assert r.status == 404
    assert await both_sides(proxy, u["id"]) == [None, None]
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 3)  # the three GETs
    # A GET shadowed just before the next write can race it: that is "transient", never
    # "mismatch".
    seen = outcomes(proxy)
    assert sum(seen.values()) == 3 and set(seen) <= {"match", "transient"}, seen


@BOTH
async def test_lookup_list_and_cursor(
    read_from: str, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(read_from)
    users = [user(i) for i in range(30)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
        assert (await r.json())["written"] == 30
    async with http.get(proxy.url + "/users?email=user7@example.com") as r:
        assert r.status == 200
        items = (await r.json())["items"]
    assert [i["id"] for i in items] == [users[7]["id"]]

    seen: list[str] = []
    cursor = None
    for _ in range(20):
        url = proxy.url + "/users?first_name=Ada&limit=4"
        if cursor:
            url += f"&cursor={cursor}"
        async with http.get(url) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(u["id"] for u in users if u["first_name"] == "Ada")

    keys = [users[0]["id"], users[5]["id"], str(uuid.uuid4())]
    async with http.post(proxy.url + "/users/batch-get", json={"keys": keys}) as r:
        body = await r.json()
    assert sorted(i["id"] for i in body["items"]) == sorted(keys[:2])
    assert body["missing"] == [keys[2]]
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    await proxy.wait_for(lambda: outcomes(proxy).get("match", 0) >= 3)
    assert "mismatch" not in outcomes(proxy)


@pytest.mark.parametrize("size", [1, 25, 26, 100, 1000])
async def test_batch_sizes_land_in_both_stores(
    size: int, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres")
    users = [user(i) for i in range(size)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["written"] == size and body["failed"] == 0
    await mirrored(proxy)
    for store in stores(proxy).values():
        found = await store.batch_get([uuid.UUID(u["id"]) for u in users])
        assert len(found) == size


BAD_BODIES = [
    ("malformed", b'{"id": ', "application/json", 400, "bad_request"),
    ("not an object", b"[1, 2]", "application/json", 400, "bad_request"),
    ("wrong media type", b"{}", "text/plain", 415, "unsupported_media_type"),
    ("unknown field", None, "application/json", 422, "unprocessable"),
    ("wrong type", None, "application/json", 422, "unprocessable"),
    ("bad uuid", None, "application/json", 422, "unprocessable"),
    ("missing key", None, "application/json", 422, "unprocessable"),
    ("bad datetime", None, "application/json", 422, "unprocessable"),
    ("null on not nullable", None, "application/json", 422, "unprocessable"),
]


def bad_record(case: str) -> dict[str, Any]:
    u = user(3)
    if case == "unknown field":
        u["nickname"] = "x"
    elif case == "wrong type":
        u["is_active"] = "yes"
    elif case == "bad uuid":
        u["id"] = "not-a-uuid"
    elif case == "missing key":
        del u["id"]
    elif case == "bad datetime":
        u["created_at"] = "yesterday"
    elif case == "null on not nullable":
        u["email"] = None
    return u


@pytest.mark.parametrize(("case", "raw", "ctype", "status", "code"), BAD_BODIES)
async def test_bad_create_is_4xx_and_writes_nothing(
    case: str,
    raw: bytes | None,
    ctype: str,
    status: int,
    code: str,
    store_proxy: StoreProxyFactory,
    http: aiohttp.ClientSession,
) -> None:
    import orjson

    proxy = await store_proxy("postgres")
    data = raw if raw is not None else orjson.dumps(bad_record(case))
    async with http.post(proxy.url + "/users", data=data, headers={"Content-Type": ctype}) as r:
        assert r.status == status, await r.text()
        body = await r.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"]
    for store in stores(proxy).values():
        records, _ = await store.list({}, 10)
        assert records == []


async def test_other_bad_requests(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", limits={"max_body_bytes": 2000})
    url = proxy.url
    checks = [
        ("GET", "/users/not-a-uuid", None, 422),
        ("GET", f"/users/{user(1)['id']}?fields=nope", None, 422),
        ("GET", f"/users/{user(1)['id']}?color=red", None, 400),
        ("GET", "/users?limit=0", None, 400),
        ("GET", "/users?limit=abc", None, 400),
        ("GET", "/users?nickname=x", None, 422),
        ("GET", "/users?cursor=garbage", None, 400),
        ("POST", "/users", {"pad": "x" * 3000}, 413),
        ("POST", "/users/batch", {"items": []}, 400),
        ("POST", "/users/batch", {"records": []}, 400),
        ("POST", "/users/batch", {"items": [user(1), user(1)]}, 422),
        ("POST", "/users/batch", {"items": [user(1), {"id": "x"}]}, 422),
        ("POST", "/users/batch-get", {"keys": ["nope"]}, 422),
        ("PATCH", f"/users/{user(1)['id']}", {"id": user(2)["id"]}, 422),
        ("PATCH", f"/users/{user(1)['id']}", {}, 422),
        ("PUT", f"/users/{user(1)['id']}", user(2), 422),
        # aiohttp's own refusals, in the same envelope: an unrouted path or method.
        ("GET", "/nothing-here", None, 404),
        ("GET", f"/users/{user(1)['id']}/extra", None, 404),
        ("DELETE", "/users", None, 405),
        ("PUT", "/users", user(1), 405),
    ]
    for method, path, body, status in checks:
        async with http.request(method, url + path, json=body) as r:
            assert r.status == status, (method, path, await r.text())
            error = (await r.json())["error"]
            assert error["code"] and error["request_id"] == r.headers["X-Request-ID"]
    for store in stores(proxy).values():
        records, _ = await store.list({}, 10)
        assert records == []


async def test_batch_over_limit_is_413(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", resource={"max_batch_items": 10})
    async with http.post(
        proxy.url + "/users/batch", json={"items": [user(i) for i in range(11)]}
    ) as r:
        assert r.status == 413


async def test_store_error_text_never_reaches_the_client(
    pg_link: CuttableLink, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A conflict on a unique index answers 409 without PostgreSQL's detail (which holds the
    conflicting email); a primary that is gone answers 5xx without the driver's text."""
    unique = {"email": {"field": "email", "dynamodb_index": "email-index", "unique": True}}
    dsn = f"postgresql://postgres@127.0.0.1:{pg_link.port}/test"
    proxy = await store_proxy("postgres", pg_dsn=dsn, resource={"indexes": unique})
    async with http.post(proxy.url + "/users", json=user(1)) as r:
        assert r.status == 201
    async with http.post(proxy.url + "/users", json=user(2, email=user(1)["email"])) as r:
        assert r.status == 409
        message = (await r.json())["error"]["message"]
    assert message == "users already exists: its key or a unique index value is taken"
    pg_link.cut()
    async with http.get(f"{proxy.url}/users/{user(1)['id']}") as r:
        assert r.status in (503, 504)
        message = (await r.json())["error"]["message"]
    assert message in ("the primary store is unavailable", "the primary store timed out")
    pg_link.restore()


async def test_shadow_sample_key_is_sticky_per_key(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """shadow_sample: key with shadow_reads 0.5: a key in the share is compared on every
    read, a key outside it never (random sampling would compare about half of each)."""
    from proxy.flags import sticky_share

    proxy = await store_proxy("postgres", shadow_reads=0.5, resource={"shadow_sample": "key"})
    parts = proxy.apps.resources.services["users"].parts
    users = [user(i) for i in range(40)]
    chosen = [sticky_share(parts.key_text(uuid.UUID(u["id"])), 0.5, "users/shadow") for u in users]
    inside = [u for u, c in zip(users, chosen, strict=True) if c][:4]
    outside = [u for u, c in zip(users, chosen, strict=True) if not c][:4]
    assert len(inside) == len(outside) == 4
    for u in inside + outside:
        async with http.post(proxy.url + "/users", json=u) as r:
            assert r.status == 201
    for _ in range(5):
        for u in outside:
            async with http.get(f"{proxy.url}/users/{u['id']}") as r:
                assert r.status == 200
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    assert sum(outcomes(proxy).values()) == 0
    for _ in range(5):
        for u in inside:
            async with http.get(f"{proxy.url}/users/{u['id']}") as r:
                assert r.status == 200
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 20)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)
    assert sum(outcomes(proxy).values()) == 20
