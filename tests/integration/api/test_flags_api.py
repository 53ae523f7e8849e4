"""Live flags through the admin API: validation, audit, readiness refusal, sticky reads,
and the guardrail rolling a failing new primary back."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.api.conftest import StoreProxyFactory, mirrored, stores, user
from tests.support.servers import RunningProxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration

TOKEN = {"SHADOWPROXY_ADMIN_TOKEN": "tok"}
AUTH = {"Authorization": "Bearer tok"}
EASY_READINESS = {
    "min_comparisons": 5,
    "max_mismatch_rate": 0.9,
    "max_new_p99_seconds": 10,
    "window_seconds": 600,
}


async def put_flag(
    http: aiohttp.ClientSession, proxy: RunningProxy, name: str, value: Any, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {"value": value, "reason": "test", **extra}
    async with http.put(f"{proxy.admin_url}/flags/{name}", json=body, headers=AUTH) as r:
        return r.status, await r.json()


async def flags(http: aiohttp.ClientSession, proxy: RunningProxy) -> dict[str, Any]:
    async with http.get(proxy.admin_url + "/flags", headers=AUTH) as r:
        assert r.status == 200
        return (await r.json())["flags"]


async def test_flags_need_the_token_and_show_config_values(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", env=TOKEN)
    for path in ("/flags", "/flags/history", "/readiness"):
        async with http.get(proxy.admin_url + path) as r:
            assert r.status == 401
    async with http.put(proxy.admin_url + "/flags/users.shadow_reads", json={}) as r:
        assert r.status == 401
    shown = await flags(http, proxy)
    assert shown["users.read_from"] == "postgres"
    assert shown["users.write_to"] == ["postgres", "dynamodb"]
    assert shown["users.shadow_reads"] == 1.0


@pytest.mark.parametrize(
    ("name", "value", "extra", "status", "says"),
    [
        ("users.write_to", "dynamodb", {}, 409, "write_to"),
        ("users.write_to", "", {}, 409, "write_to"),
        ("users.read_from", "mysql", {}, 409, "mysql"),
        ("users.shadow_reads", 1.5, {}, 409, "1.5"),
        ("users.shadow_reads", "lots", {}, 422, "lots"),
        ("users.color", "red", {}, 404, "color"),
        ("nobody.read_from", "postgres", {}, 404, "nobody"),
        ("users.shadow_reads", 0.5, {"reason": ""}, 422, "reason"),
        ("users.shadow_reads", 0.5, {"force": "yes"}, 400, "force"),
        ("users.shadow_reads", 0.5, {"colour": 1}, 400, "colour"),
    ],
)
async def test_unsafe_or_bad_flips_are_refused_and_not_audited(
    name: str,
    value: Any,
    extra: dict[str, Any],
    status: int,
    says: str,
    store_proxy: StoreProxyFactory,
    http: aiohttp.ClientSession,
) -> None:
    proxy = await store_proxy("postgres", env=TOKEN)
    before = await flags(http, proxy)
    got, body = await put_flag(http, proxy, name, value, **extra)
    assert got == status, body
    assert says in body["error"]["message"]
    assert await flags(http, proxy) == before
    async with http.get(proxy.admin_url + "/flags/history", headers=AUTH) as r:
        actors = {e["actor"] for e in (await r.json())["history"]}
    assert actors <= {"config"}


async def test_read_flip_refused_while_not_ready_then_forced_and_audited(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", env=TOKEN)
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb")
    assert status == 409
    assert "readiness fails" in body["error"]["message"]
    assert (await flags(http, proxy))["users.read_from"] == "postgres"
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb", force=True)
    assert status == 200, body
    assert body["changed"]["old"] == "postgres" and body["changed"]["new"] == "dynamodb"
    assert (await flags(http, proxy))["users.read_from"] == "dynamodb"
    async with http.get(proxy.admin_url + "/flags/history?limit=5", headers=AUTH) as r:
        newest = (await r.json())["history"][0]
    assert newest["actor"] == "admin:token" and newest["forced"] is True
    assert newest["reason"] == "test"
    # the flip is live: a record only DynamoDB has is now served
    only_ddb = user(77)
    schema = proxy.apps.resources.services["users"].schema
    await stores(proxy)["dynamodb"].put(schema.validate(only_ddb, partial=False))
    async with http.get(f"{proxy.url}/users/{only_ddb['id']}") as r:
        assert r.status == 200


async def test_readiness_turns_ready_and_the_flip_goes_through(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", env=TOKEN, readiness=EASY_READINESS)
    async with http.get(proxy.admin_url + "/readiness?target=users", headers=AUTH) as r:
        verdict = (await r.json())["verdicts"][0]
    assert verdict["ready"] is False
    missing = next(c for c in verdict["criteria"] if c["name"] == "missing_operations")
    assert missing["passed"] is False
    users = [user(i) for i in range(20)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    for u in users[:8]:
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert r.status == 200
    async with http.get(f"{proxy.url}/users?email={users[0]['email']}") as r:
        assert r.status == 200
    async with http.get(f"{proxy.url}/users?first_name=Ada") as r:
        assert r.status == 200
    keys = {"keys": [u["id"] for u in users[:3]]}
    async with http.post(proxy.url + "/users/batch-get", json=keys) as r:
        assert r.status == 200
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)

    async def ready() -> dict[str, Any]:
        async with http.get(proxy.admin_url + "/readiness?target=users", headers=AUTH) as r:
            return (await r.json())["verdicts"][0]

    verdict = await ready()
    assert verdict["ready"] is True, verdict["text"]
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb")
    assert status == 200, body
    async with http.get(proxy.admin_url + "/readiness?target=nope", headers=AUTH) as r:
        assert r.status == 404


async def test_new_store_read_fraction_is_sticky_per_key(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", env=TOKEN, shadow_reads=0.0)
    users = [user(i) for i in range(200)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    await mirrored(proxy)  # the batch's DynamoDB copy may outlast the client's budget
    # Tell the stores apart: DynamoDB's copy says so in last_name.
    schema = proxy.apps.resources.services["users"].schema
    marked = [schema.validate({**u, "last_name": "from-dynamodb"}, partial=False) for u in users]
    await stores(proxy)["dynamodb"].batch_put(marked)
    status, body = await put_flag(http, proxy, "users.new_store_read_fraction", 0.5, force=True)
    assert status == 200, body

    async def served_by_new(u: dict[str, Any]) -> bool:
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            return (await r.json())["last_name"] == "from-dynamodb"

    first = [await served_by_new(u) for u in users]
    second = [await served_by_new(u) for u in users]
    assert first == second  # a key's store never changes while the fraction is unchanged
    share = sum(first)
    assert 100 - 28 <= share <= 100 + 28  # 4 sigma of Binomial(200, 0.5)


async def test_guardrail_rolls_back_a_new_primary_that_starts_failing(
    dynamo_link: CuttableLink, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(
        "postgres",
        env=TOKEN,
        dynamo_url=dynamo_link.url,
        dynamo={"sdk_max_attempts": 1, "connect_timeout_seconds": 0.5},
        resource={
            "guardrail": {
                "watch_seconds": 120,
                "min_comparisons": 10,
                "max_primary_error_rate": 0.2,
                "max_mismatch_rate": 0.5,
            }
        },
    )
    users = [user(i) for i in range(30)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb", force=True)
    assert status == 200, body
    for u in users[:5]:  # healthy after the flip
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert r.status == 200
    dynamo_link.cut()  # the new primary starts failing
    statuses = []
    for u in users:
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            statuses.append(r.status)
        if (await flags(http, proxy))["users.read_from"] == "postgres":
            break
    await proxy.wait_for(lambda: proxy.apps.flag_store.snapshot().resources["users"].read_from
                         == "postgres", timeout=10)  # fmt: skip
    assert 503 in statuses or 504 in statuses
    async with http.get(f"{proxy.url}/users/{users[-1]['id']}") as r:
        assert r.status == 200  # served by the old store again
    async with http.get(proxy.admin_url + "/flags/history?limit=3", headers=AUTH) as r:
        newest = (await r.json())["history"][0]
    assert newest["actor"] == "guardrail"
    assert newest["new"] == "postgres" and "error rate" in newest["reason"]
    dynamo_link.restore()
