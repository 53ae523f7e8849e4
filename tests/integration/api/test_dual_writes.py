"""Dual writes with nothing lost: a secondary that goes away, and writes racing reads."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from proxy.repair.log import open_repair_log
from proxy.repair.memory_log import MemoryRepairLog
from proxy.resources.admin_ops import reconcile
from tests.integration.api.conftest import StoreProxyFactory, mirrored, outcomes, stores, user
from tests.integration.conftest import PG_DSN, REDIS_URL
from tests.support.servers import RunningProxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration


def fast_repair(stream: str) -> dict[str, Any]:
    """A Redis repair log of the test's own that retries quickly."""
    return {
        "kind": "redis",
        "url": REDIS_URL,
        "stream": stream,
        "interval_seconds": 0.1,
        "retry_after_seconds": 0.2,
        "late_write_seconds": 0.5,
    }


async def both_stores(
    proxy: RunningProxy, users: list[dict[str, Any]]
) -> tuple[dict[Any, bytes], dict[Any, bytes]]:
    """These users as each store holds them (canonical bytes by key)."""
    schema = proxy.apps.resources.services["users"].schema
    keys = [uuid.UUID(u["id"]) for u in users]
    found = [
        {r["id"]: schema.dumps(r) for r in await store.batch_get(keys)}
        for store in (stores(proxy)["postgres"], stores(proxy)["dynamodb"])
    ]
    return found[0], found[1]


def gauge(proxy: RunningProxy, name: str, **labels: str) -> float:
    return proxy.registry.get_sample_value(name, labels) or 0.0


async def test_secondary_down_during_1000_writes_then_every_key_repaired(
    dynamo_link: CuttableLink,
    store_proxy: StoreProxyFactory,
    prefix: str,
    http: aiohttp.ClientSession,
) -> None:
    link = dynamo_link
    try:
        proxy = await store_proxy(
            "postgres",
            dynamo_url=link.url,
            dynamo={"sdk_max_attempts": 1, "connect_timeout_seconds": 0.5},
            shadow_reads=0.0,
            repair=fast_repair(prefix),
            resource={"breaker_cooldown_seconds": 0.3},
        )
        link.cut()
        users = [user(i) for i in range(900)]
        sem = asyncio.Semaphore(32)

        async def call(method: str, path: str, body: Any = None) -> int:
            async with sem, http.request(method, proxy.url + path, json=body) as r:
                return r.status

        created = await asyncio.gather(*(call("POST", "/users", u) for u in users))
        assert created == [201] * 900  # the client always gets the primary's answer
        changed = await asyncio.gather(
            *(call("PATCH", f"/users/{u['id']}", {"last_name": "Changed"}) for u in users[:50]),
            *(call("DELETE", f"/users/{u['id']}") for u in users[850:]),
        )
        assert changed == [200] * 50 + [204] * 50
        failures = sum(
            gauge(proxy, "shadowproxy_dual_write_failures_total", resource="users",
                  store="dynamodb", operation=op)
            for op in ("create", "update", "delete")
        )  # fmt: skip
        assert failures == 1000
        assert gauge(proxy, "shadowproxy_repair_append_failures_total", resource="users") == 0

        link.restore()
        await proxy.wait_for(
            lambda: (
                gauge(proxy, "shadowproxy_repairs_total", resource="users", result="repaired")
                >= 1000
                and gauge(proxy, "shadowproxy_repair_log_depth") == 0
            ),
            timeout=90,
            interval=0.1,
        )
        in_pg, in_ddb = await both_stores(proxy, users)
        assert len(in_pg) == 850
        assert in_ddb == in_pg
    finally:
        link.restore()


async def test_concurrent_writes_and_reads_are_never_mismatches(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy("postgres", resource={"recheck_delay_seconds": 0.05})
    users = [user(i) for i in range(10)]
    async with http.post(proxy.url + "/users/batch", json={"items": users}) as r:
        assert r.status == 200
    rng = random.Random(3)

    async def writer() -> None:
        for n in range(25):
            u = rng.choice(users)
            body = {"first_name": f"name-{n}", "preferences": {"n": n}}
            async with http.patch(f"{proxy.url}/users/{u['id']}", json=body) as r:
                assert r.status == 200

    async def reader() -> None:
        for _ in range(40):
            u = rng.choice(users)
            async with http.get(f"{proxy.url}/users/{u['id']}") as r:
                assert r.status == 200
            async with http.get(f"{proxy.url}/users?first_name={u['first_name']}") as r:
                assert r.status == 200

    await asyncio.gather(*(writer() for _ in range(4)), *(reader() for _ in range(4)))
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0, timeout=30)
    await asyncio.sleep(1.0)  # re-reads in flight finish
    seen = outcomes(proxy)
    assert seen.get("match", 0) > 100
    assert "mismatch" not in seen, seen
    assert set(seen) <= {"match", "transient"}


async def test_after_a_flip_repairs_copy_from_the_new_primary(
    pg_link: CuttableLink,
    store_proxy: StoreProxyFactory,
    prefix: str,
    http: aiohttp.ClientSession,
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{pg_link.port}/test"
    proxy = await store_proxy(
        "postgres",
        pg_dsn=dsn,
        shadow_reads=0.0,
        repair=fast_repair(prefix),
    )
    u = user(5)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    await proxy.apps.flag_store.set(
        "users", "read_from", "dynamodb", actor="test", reason="flip", force=True
    )
    pg_link.cut()  # the old store, now the secondary, goes away
    async with http.patch(f"{proxy.url}/users/{u['id']}", json={"last_name": "Newer"}) as r:
        assert r.status == 200
    pg_link.restore()
    pg, ddb = stores(proxy)["postgres"], stores(proxy)["dynamodb"]
    key = uuid.UUID(u["id"])

    async def repaired() -> bool:
        record = await pg.get(key)
        return record is not None and record["last_name"] == "Newer"

    for _ in range(200):
        if await repaired():
            break
        await asyncio.sleep(0.05)
    assert await repaired()
    primary = await ddb.get(key)
    assert primary is not None and primary["last_name"] == "Newer"  # never overwritten


async def test_a_secondary_that_never_answers_costs_the_client_only_the_budget(
    dynamo_link: CuttableLink,
    store_proxy: StoreProxyFactory,
    prefix: str,
    http: aiohttp.ClientSession,
) -> None:
    """DynamoDB accepts connections and never answers: each client write returns after the
    primary plus at most ``secondary_write_budget_seconds`` (here 0.2 s, against a 6 s
    secondary timeout), background writes stay bounded, and every key is repaired once the
    store answers again."""
    link = dynamo_link
    budget, timeout = 0.2, 6.0
    try:
        proxy = await store_proxy(
            "postgres",
            dynamo_url=link.url,
            dynamo={"sdk_max_attempts": 1, "max_attempts": 1, "timeout_seconds": 30},
            shadow_reads=0.0,
            repair=fast_repair(prefix),
            resource={
                "secondary_write_budget_seconds": budget,
                "secondary_write_timeout_seconds": timeout,
                "max_pending_secondary_writes": 10,
                "breaker_threshold": 1000,  # the budget alone must protect the client
            },
        )
        link.hang()
        users = [user(i) for i in range(30)]
        sem = asyncio.Semaphore(6)
        took: list[float] = []

        async def call(method: str, path: str, body: Any = None) -> int:
            async with sem:
                started = asyncio.get_running_loop().time()
                async with http.request(method, proxy.url + path, json=body) as r:
                    took.append(asyncio.get_running_loop().time() - started)
                    return r.status

        created = await asyncio.gather(*(call("POST", "/users", u) for u in users))
        assert created == [201] * 30
        patched = await asyncio.gather(
            *(call("PATCH", f"/users/{u['id']}", {"last_name": "Later"}) for u in users[:10])
        )
        assert patched == [200] * 10
        # Far below the secondary's timeout: the client never waited for it.
        assert max(took) < timeout / 2, sorted(took)[-5:]
        writer = proxy.apps.resources.services["users"].writes
        assert writer.pending <= 10  # the rest went straight to the repair log
        overflow = gauge(
            proxy, "shadowproxy_dual_write_failures_total",
            resource="users", store="dynamodb", operation="create",
        )  # fmt: skip
        assert overflow >= 20

        link.restore()
        await proxy.wait_for(lambda: writer.pending == 0, timeout=timeout + 10)

        async def equal() -> bool:
            in_pg, in_ddb = await both_stores(proxy, users)
            return len(in_pg) == 30 and in_pg == in_ddb

        deadline = asyncio.get_running_loop().time() + 60
        while not await equal():
            assert asyncio.get_running_loop().time() < deadline, "keys never repaired"
            await asyncio.sleep(0.2)
    finally:
        link.restore()


async def test_a_real_difference_counts_when_the_repair_log_cannot_answer(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """With the repair log down, re-reads cannot be called quiet; a difference that outlives
    every re-read is then a mismatch (the rule without a repair log), not hidden as
    transient."""
    proxy = await store_proxy("postgres", resource={"recheck_delay_seconds": 0.01})
    service = proxy.apps.resources.services["users"]
    u = user(3)
    record = service.schema.validate(u, partial=False)
    await stores(proxy)["postgres"].put(record)
    await stores(proxy)["dynamodb"].put({**record, "last_name": "Different"})

    async def down(resource: str, keys: Any) -> Any:
        raise ConnectionError("repair log unreachable")

    service._repair_log.unsettled = down  # type: ignore[union-attr]
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 1, timeout=20)
    assert outcomes(proxy) == {"mismatch": 1}


async def test_reconcile_says_how_many_writes_are_still_in_flight(
    store_proxy: StoreProxyFactory, prefix: str
) -> None:
    proxy = await store_proxy("postgres", repair=fast_repair(prefix))
    assert proxy.settings.repair is not None
    log = open_repair_log(proxy.settings.repair)
    await log.init()
    try:
        await log.intend("users", ["00000000-0000-0000-0000-000000000001"], op="put")
        lines = await reconcile(proxy.settings)
    finally:
        await log.close()
    assert lines[1] == "repair log depth now 0"  # a write in flight is not a backlog
    assert lines[2].startswith("1 writes in flight") and "30s" in lines[2]


@pytest.fixture(params=["redis", "postgres"])
async def shared_repair(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[dict[str, Any]]:
    """A fast repair log of either shared kind, of the test's own."""
    if request.param == "redis":
        yield fast_repair(prefix)
        return
    table = f"test_repair_{uuid.uuid4().hex[:12]}"
    redis_only = {"url", "stream"}
    config = {k: v for k, v in fast_repair(prefix).items() if k not in redis_only}
    yield {**config, "kind": "postgres", "dsn": PG_DSN, "table": table}
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()


async def test_reconcile_takes_over_what_a_live_instance_keeps_failing(
    dynamo_link: CuttableLink,
    shared_repair: dict[str, Any],
    store_proxy: StoreProxyFactory,
    http: aiohttp.ClientSession,
    moto_endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A live instance that cannot reach DynamoDB claims its failed entries again whenever
    they fall due; reconcile, which can reach it, still repairs every one in one run."""
    link = dynamo_link
    proxy = await store_proxy(
        "postgres",
        dynamo_url=link.url,
        dynamo={"sdk_max_attempts": 1, "max_attempts": 1, "connect_timeout_seconds": 0.5},
        shadow_reads=0.0,
        repair=shared_repair,
    )
    await link.refuse()  # every write fails at once, certainly: no late-write wait
    try:
        users = [user(i) for i in range(10)]
        for u in users:
            async with http.post(proxy.url + "/users", json=u) as r:
                assert r.status == 201
        await proxy.wait_for(  # each entry claimed and failed again and again
            lambda: (
                gauge(proxy, "shadowproxy_repairs_total", resource="users", result="failed") >= 30
            ),
            timeout=30,
        )
        ddb = proxy.settings.backends["ddb"].model_copy(update={"endpoint_url": moto_endpoint})
        direct = proxy.settings.model_copy(
            update={"backends": {**proxy.settings.backends, "ddb": ddb}}
        )
        caplog.set_level(logging.INFO, logger="shadowproxy.jobs")
        lines = await reconcile(direct, stream=io.StringIO(), log_seconds=0)
        assert lines[:2] == [
            "repaired 10 keys, 0 attempts failed, 0 stuck entries retried",
            "repair log depth now 0",
        ]
        shown = [r.getMessage() for r in caplog.records if r.name == "shadowproxy.jobs"]
        assert shown and shown[-1].startswith("reconcile users: 10 records in ")
        assert shown[-1].endswith(", 10 repaired")  # off a terminal: plain progress lines
    finally:
        await link.listen()
    in_pg, in_ddb = await both_stores(proxy, users)
    assert len(in_pg) == 10 and in_ddb == in_pg


async def test_a_primary_write_is_cut_at_half_the_intent_grace(
    store_proxy: StoreProxyFactory, prefix: str, http: aiohttp.ClientSession
) -> None:
    """A primary write held by a row lock: past half the intent grace the client gets a 504
    and the intent is escalated, so no repairer can take it while the write still commits
    (the repair would copy the state from before it). The stores end equal."""
    grace = 1.0
    proxy = await store_proxy(
        "postgres", shadow_reads=0.0, repair={**fast_repair(prefix), "intent_grace_seconds": grace}
    )
    u = user(8)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    await mirrored(proxy)
    pg = stores(proxy)["postgres"]
    key = uuid.UUID(u["id"])
    conn = await asyncpg.connect(PG_DSN)
    try:
        async with conn.transaction():
            table = pg.table  # type: ignore[attr-defined]
            await conn.execute(f'SELECT 1 FROM "{table}" WHERE id = $1 FOR UPDATE', key)
            body = {"last_name": "Slow"}
            async with http.patch(f"{proxy.url}/users/{u['id']}", json=body) as r:
                assert r.status == 504
                error = (await r.json())["error"]
            assert error["code"] == "gateway_timeout"  # while the lock is still held
    finally:
        await conn.close()
    await proxy.wait_for(
        lambda: gauge(proxy, "shadowproxy_repairs_total", resource="users", result="repaired") >= 1,
        timeout=30,
    )
    in_pg, in_ddb = await both_stores(proxy, [u])
    assert in_pg == in_ddb and len(in_pg) == 1


async def test_a_write_whose_intent_a_repairer_took_is_logged_again(
    store_proxy: StoreProxyFactory,
) -> None:
    """A writer stalled past the grace (a paused process): a repairer took its intent and
    copied the state from before the write. When the writer's copy then fails, escalating
    finds no intent; the key is logged afresh instead of being lost."""
    proxy = await store_proxy("postgres")
    writer = proxy.apps.resources.services["users"].writes
    log = MemoryRepairLog(intent_grace_seconds=0.2, retry_after_seconds=0.1)
    writer._repair_log = log  # a log of the test's own: no repair loop claims from it
    key = uuid.uuid4()
    intents = await log.intend("users", [str(key)], op="put")
    await asyncio.sleep(0.4)
    taken = [e for e in await log.claim(100) if e.key == str(key)]
    assert len(taken) == 1
    await log.done(taken[0])  # repaired from the old state
    await writer._escalate(intents, [key], "put on dynamodb failed: StoreTimeout")
    assert (await log.unsettled("users", [str(key)])).held == 1
    await asyncio.sleep(0.4)
    assert [e.key for e in await log.claim(100)] == [str(key)]
