"""Live flags through the admin API: validation, audit, readiness refusal, sticky reads, the
gated last flip (stop writing the old store), and the guardrail rolling a failing new
primary, or a mismatching canary, back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy import cli_admin
from proxy.cli_admin import AdminClient, AdminError
from proxy.readiness import VerifyResult, open_verify_results
from proxy.repair.redis_log import RedisRepairLog
from tests.integration.api.conftest import StoreProxyFactory, mirrored, stores, user
from tests.integration.conftest import REDIS_URL
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


# --- the last flip: stop writing the old store ----------------------------------------------


def verified(started_at: float, differing: int = 0) -> VerifyResult:
    return VerifyResult("users", "dynamodb", "postgres", 0, 1, started_at, started_at + 2,
                        20, 20, 0, 0, differing)  # fmt: skip


async def readiness_of(http: aiohttp.ClientSession, proxy: RunningProxy) -> dict[str, Any]:
    async with http.get(proxy.admin_url + "/readiness?target=users", headers=AUTH) as r:
        assert r.status == 200
        return await r.json()


async def exercise_gets(http: aiohttp.ClientSession, proxy: RunningProxy, n: int = 10) -> None:
    users = [user(i) for i in range(n)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    await mirrored(proxy)
    for u in users:
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert r.status == 200
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0)


async def test_the_last_flip_is_refused_with_every_criterion_then_allowed(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession, tmp_path: Path, prefix: str
) -> None:
    stream = f"{prefix}:repair"
    stuck = RedisRepairLog(REDIS_URL, stream=stream, max_attempts=1)  # a log another
    await stuck.init()  # instance shares: one write there failed for good (stuck)
    await stuck.append("users", str(uuid.UUID(int=999_999)), "dynamodb put: StoreTimeout")
    [entry] = await stuck.claim(10)
    await stuck.failed(entry, "StoreTimeout again")
    assert await stuck.stuck_count() == 1
    readiness = {**EASY_READINESS, "required_operations": ["get"],
                 "verify_results_path": str(tmp_path / "verify-results.json")}  # fmt: skip
    repair = {"kind": "redis", "url": REDIS_URL, "stream": stream, "max_attempts": 1,
              "interval_seconds": 0.1, "retry_after_seconds": 0.2}  # fmt: skip
    proxy = await store_proxy("postgres", env=TOKEN, readiness=readiness, repair=repair)
    await exercise_gets(http, proxy)
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb")
    assert status == 200, body  # reads first: readiness holds

    status, body = await put_flag(http, proxy, "users.write_to", "dynamodb")
    assert status == 409, body
    message = body["error"]["message"]
    assert message.startswith("users: stopping writes to postgres is not safe yet (")
    assert "verify n/a (needs <= 86400; unknown: no full-table verify has been saved" in message
    assert "repair_log 1 (needs <= 0; entries waiting in the repair log, stuck ones" in message
    assert "comparisons" not in message  # passing criteria are not listed
    assert (await flags(http, proxy))["users.write_to"] == ["postgres", "dynamodb"]

    shown = await readiness_of(http, proxy)
    assert shown["ready"] is True and shown["ready_to_stop_old_writes"] is False
    [stop] = shown["stop_old_writes"]
    assert stop["decision"] == "stop_old_writes" and stop["target"] == "users"
    status_of = {c["name"]: c["status"] for c in stop["criteria"]}
    assert status_of == {
        "comparisons": "ok", "mismatch_rate": "ok", "shadow_error_rate": "ok",
        "new_p99_seconds": "ok", "missing_operations": "ok", "reads_on_new_store": "ok",
        "verify": "unknown", "repair_log": "FAIL",
    }  # fmt: skip
    assert "NOT READY to stop old-store writes" in stop["text"]

    results = open_verify_results(proxy.settings.readiness)  # what `shadowproxy verify` saves
    await results.save(verified(time.time() - 30, differing=2))
    status, body = await put_flag(http, proxy, "users.write_to", "dynamodb")
    assert status == 409 and "the latest verify found differences" in body["error"]["message"]
    await results.save(verified(time.time() - 5))
    assert await stuck.retry_stuck() == 1  # what `shadowproxy reconcile` does; then repaired

    async def stop_ready() -> bool:
        return bool((await readiness_of(http, proxy))["ready_to_stop_old_writes"])

    deadline = time.monotonic() + 15
    while not await stop_ready():
        assert time.monotonic() < deadline, (await readiness_of(http, proxy))["stop_old_writes"]
    status, body = await put_flag(http, proxy, "users.write_to", "dynamodb")
    assert status == 200, body
    assert body["changed"]["new"] == ["dynamodb"] and body["changed"]["forced"] is False
    assert (await flags(http, proxy))["users.write_to"] == ["dynamodb"]
    await stuck.close()


async def test_the_last_flip_forced_with_a_reason_is_audited(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    readiness = {"verify_results_path": str(tmp_path / "none.json")}
    proxy = await store_proxy("postgres", env=TOKEN, readiness=readiness)
    status, body = await put_flag(http, proxy, "users.read_from", "dynamodb", force=True)
    assert status == 200, body
    status, body = await put_flag(http, proxy, "users.write_to", "dynamodb")
    assert status == 409
    message = body["error"]["message"]
    for unmet in ("comparisons 0 (needs >= 1000", "verify n/a", "missing_operations"):
        assert unmet in message
    status, body = await put_flag(http, proxy, "users.write_to", "dynamodb", force=True,
                                  reason="INC-7: PostgreSQL is being decommissioned")  # fmt: skip
    assert status == 200, body
    async with http.get(proxy.admin_url + "/flags/history?limit=1", headers=AUTH) as r:
        [newest] = (await r.json())["history"]
    assert (newest["flag"], newest["new"], newest["forced"]) == ("write_to", ["dynamodb"], True)
    assert newest["actor"] == "admin:token" and newest["reason"].startswith("INC-7")


async def test_the_cli_prints_both_verdicts_and_relays_the_refusal(
    store_proxy: StoreProxyFactory, tmp_path: Path
) -> None:
    readiness = {"verify_results_path": str(tmp_path / "none.json")}
    proxy = await store_proxy("postgres", env=TOKEN, readiness=readiness)
    client = AdminClient(proxy.admin_url, "tok")  # what `shadowproxy readiness` / `flags` use
    ready, text = await asyncio.to_thread(cli_admin.readiness, client, "users", False)
    assert ready is False
    reads = text.index("users: NOT READY to flip reads to the new store")
    writes = text.index("users: NOT READY to stop old-store writes")
    assert reads < writes
    rows = {line.split()[0]: line for line in text[writes:].splitlines()[3:11]}
    assert rows["reads_on_new_store"].split()[1:4] == ["postgres", "==", "dynamodb"]
    assert rows["verify"].split()[1:5] == ["n/a", "<=", "86400", "unknown"]
    assert rows["repair_log"].split()[1:5] == ["0", "<=", "0", "ok"]
    _, raw = await asyncio.to_thread(cli_admin.readiness, client, "users", True)
    shown = json.loads(raw)
    assert [v["decision"] for v in shown["verdicts"]] == ["flip_reads"]
    assert [v["decision"] for v in shown["stop_old_writes"]] == ["stop_old_writes"]

    await asyncio.to_thread(cli_admin.flags_set, client, "users", "read_from=dynamodb", "t", True)
    with pytest.raises(AdminError) as refused:
        await asyncio.to_thread(cli_admin.flags_set, client, "users", "write_to=dynamodb", "t",
                                False)  # fmt: skip
    assert refused.value.status == 409
    assert str(refused.value).startswith("users: stopping writes to postgres is not safe yet")
    done = await asyncio.to_thread(cli_admin.flags_set, client, "users", "write_to=dynamodb",
                                   "decommission", True)  # fmt: skip
    assert done == "users.write_to: postgres,dynamodb -> dynamodb"


async def test_guardrail_ends_a_canary_that_mismatches(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(
        "postgres",
        env=TOKEN,
        resource={
            "recheck_delay_seconds": 0.01,
            "guardrail": {"watch_seconds": 120, "min_comparisons": 20, "max_mismatch_rate": 0.05},
        },
    )
    users = [user(i) for i in range(200)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    await mirrored(proxy)
    schema = proxy.apps.resources.services["users"].schema
    drifted = [schema.validate({**u, "last_name": "from-dynamodb"}, partial=False) for u in users]
    await stores(proxy)["dynamodb"].batch_put(drifted)  # the new store differs everywhere
    status, body = await put_flag(http, proxy, "users.new_store_read_fraction", 0.5, force=True)
    assert status == 200, body
    assert proxy.apps.guardrail.watches["users"].kind == "canary"

    def fraction() -> float:
        return proxy.apps.flag_store.snapshot().resources["users"].new_store_read_fraction

    served_by_new = 0
    for u in users:
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            served_by_new += (await r.json())["last_name"] == "from-dynamodb"
        if fraction() == 0.0:
            break
    await proxy.wait_for(lambda: fraction() == 0.0, timeout=10)
    assert served_by_new >= 20
    async with http.get(proxy.admin_url + "/flags/history?limit=1", headers=AUTH) as r:
        [newest] = (await r.json())["history"]
    assert (newest["actor"], newest["flag"], newest["new"]) == (
        "guardrail",
        "new_store_read_fraction",
        0.0,
    )
    assert newest["reason"].startswith("canary (new_store_read_fraction 0.5) dynamodb mismatch")
    for u in users[:20]:  # every key reads the old store again
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert (await r.json())["last_name"] == "Test"
