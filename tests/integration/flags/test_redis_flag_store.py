"""RedisFlagStore against the real Redis on this machine: several instances sharing one prefix,
compare-and-set under concurrency, seeding, audit history, Redis lost and regained."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from proxy.flags.audit import FileAuditLog, RedisAuditLog
from proxy.flags.metrics import FlagMetrics
from proxy.flags.model import (
    FlagSnapshot,
    FlagState,
    ResourceFlagState,
    RouteFlagState,
    UnsafeFlip,
    snapshot_to_doc,
)
from proxy.flags.redis_store import RedisFlagStore
from proxy.flags.store import FlagChange, FlagStoreError, FlagStoreUnavailable
from tests.integration.conftest import REDIS_URL
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration

POLL = 0.05

StoreFactory = Callable[..., Awaitable[RedisFlagStore]]


def config(read_from: str = "postgres", resources: int = 1) -> FlagSnapshot:
    names = ["users"] if resources == 1 else [f"r{i}" for i in range(resources)]
    return FlagSnapshot(
        version=0,
        resources={
            name: ResourceFlagState(read_from, ("postgres", "dynamodb"), 1.0) for name in names
        },
        routes={"users-get": RouteFlagState("legacy", "candidate", 1.0)},
    )


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
async def make_store(prefix: str) -> AsyncIterator[StoreFactory]:
    """Each call is another proxy instance sharing ``prefix``; started, closed at the end."""
    made: list[RedisFlagStore] = []

    async def make(
        initial: FlagSnapshot | None = None, url: str = REDIS_URL, **kw: Any
    ) -> RedisFlagStore:
        kw.setdefault("poll_seconds", POLL)
        store = RedisFlagStore(url, prefix, initial or config(), kw.pop("audit", None), **kw)
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.close()


async def test_seeded_from_config_only_when_empty(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    first = await make_store(config("postgres"))
    assert first.healthy and first.last_error is None
    assert first.snapshot().version == 1
    assert first.snapshot().resources["users"].read_from == "postgres"
    seeded = await first.history(100)
    assert len(seeded) == 7
    assert {e.actor for e in seeded} == {"config"}
    pairs = [(e.target, e.flag, e.old, e.new) for e in seeded]
    assert ("users", "read_from", None, "postgres") in pairs
    assert ("users", "write_to", None, ["postgres", "dynamodb"]) in pairs
    assert ("users-get", "sample", None, 1.0) in pairs
    assert await redis.hget(f"{prefix}:state", "version") == b"1"

    # Another instance whose config says otherwise: Redis wins, nothing is re-seeded.
    second = await make_store(config("dynamodb"))
    assert second.snapshot().resources["users"].read_from == "postgres"
    assert second.snapshot().version == 1
    assert len(await second.history(100)) == 7


async def test_a_config_target_missing_in_redis_is_added(make_store: StoreFactory) -> None:
    first = await make_store(config())
    bigger = config()
    bigger = bigger.with_target("orders", ResourceFlagState("postgres", ("postgres",), 0.5))
    second = await make_store(bigger)
    assert second.snapshot().resources["orders"].shadow_reads == 0.5
    assert second.snapshot().version == 2
    added = await second.history(10, target="orders")
    assert {(e.actor, e.flag) for e in added} == {
        ("config", "read_from"),
        ("config", "write_to"),
        ("config", "shadow_reads"),
        ("config", "new_store_read_fraction"),
    }
    await eventually(lambda: "orders" in first.snapshot().resources)


async def test_a_flip_reaches_another_instance_within_a_second(make_store: StoreFactory) -> None:
    one = await make_store(poll_seconds=0.25)
    two = await make_store(poll_seconds=0.25)
    seen: list[FlagChange] = []
    two.on_change(seen.append)
    entry = await one.set("users", "read_from", "dynamodb", actor="cli:alice", reason="green")
    assert one.snapshot().resources["users"].read_from == "dynamodb"  # the writer at once
    took = await eventually(lambda: two.snapshot().resources["users"].read_from == "dynamodb")
    assert took < 1.0
    assert seen[-1].changed == [("users", "read_from", "postgres", "dynamodb")]
    assert seen[-1].entries == ()  # counted by the writer only
    assert (await two.history(1)) == [entry]


async def test_concurrent_sets_lose_no_update(make_store: StoreFactory) -> None:
    initial = config(resources=12)
    stores = [await make_store(initial) for _ in range(3)]
    await asyncio.gather(
        *(
            stores[i % 3].set(f"r{i}", "read_from", "dynamodb", actor="cli:a", reason=str(i))
            for i in range(12)
        ),
        stores[0].set("users-get", "sample", "0.5", actor="cli:b", reason="x"),
    )
    for store in stores:
        await eventually(lambda s=store: s.snapshot().version == 14)  # type: ignore[misc]
        assert all(r.read_from == "dynamodb" for r in store.snapshot().resources.values())
        assert store.snapshot().routes["users-get"].sample == 0.5
    history = await stores[1].history(100)
    assert len([e for e in history if e.actor != "config"]) == 13


async def test_the_loser_of_a_race_re_validates(make_store: StoreFactory) -> None:
    one = await make_store()
    two = await make_store()

    calls: list[str] = []

    async def meanwhile(target: str, old: FlagState, new: FlagState) -> None:
        calls.append(target)
        if len(calls) == 1:
            # Another instance flips reads to dynamodb while this change is being checked.
            await two.set("users", "read_from", "dynamodb", actor="cli:b", reason="")

    # Stopping writes to dynamodb was safe when read, but not after the race: refused.
    with pytest.raises(UnsafeFlip, match="read_from = 'dynamodb' is not in write_to"):
        await one.set("users", "write_to", "postgres", actor="cli:a", reason="", check=meanwhile)
    assert len(calls) == 1
    await eventually(lambda: one.snapshot().resources["users"].read_from == "dynamodb")
    assert one.snapshot().resources["users"].write_to == ("postgres", "dynamodb")

    calls.clear()

    async def shadow_meanwhile(target: str, old: FlagState, new: FlagState) -> None:
        calls.append(target)
        if len(calls) == 1:
            await two.set("users", "shadow_reads", "0.1", actor="cli:b", reason="")

    await one.set(
        "users", "new_store_read_fraction", "0.3", actor="cli:a", reason="", check=shadow_meanwhile
    )
    assert len(calls) == 2  # checked again against the state it actually replaces
    state = one.snapshot().resources["users"]
    assert (state.shadow_reads, state.new_store_read_fraction) == (0.1, 0.3)


async def test_history_from_the_redis_audit_log(make_store: StoreFactory, prefix: str) -> None:
    store = await make_store()
    await store.set("users", "shadow_reads", "0.5", actor="cli:a", reason="one")
    await store.set("users-get", "sample", "0.1", actor="admin:ops", reason="two")
    await store.set("users", "read_from", "dynamodb", actor="cli:a", reason="three", force=True)
    newest = await store.history(2)
    assert [e.reason for e in newest] == ["three", "two"]
    assert newest[0].forced
    assert [e.reason for e in await store.history(10, target="users")][:2] == ["three", "one"]
    log = RedisAuditLog(REDIS_URL, f"{prefix}:audit")  # what `flags history` reads
    try:
        assert [e.reason for e in await log.history(3)] == ["three", "two", "one"]
        assert len(await log.history(100, target="users-get")) == 4  # 3 seeded + 1
    finally:
        await log.close()


async def test_a_capped_audit_list(make_store: StoreFactory, prefix: str) -> None:
    store = await make_store(audit_maxlen=5)
    for i in range(4):
        await store.set("users", "shadow_reads", f"0.{i + 1}", actor="cli:a", reason=str(i))
    history = await store.history(100)
    assert [e.reason for e in history] == [
        "3",
        "2",
        "1",
        "0",
        "seeded from config: Redis held no flags",
    ]


async def test_a_file_audit_log_is_appended_after_the_commit(
    make_store: StoreFactory, tmp_path: Any
) -> None:
    store = await make_store(audit=FileAuditLog(tmp_path / "audit.jsonl"))
    entry = await store.set("users", "shadow_reads", "0.5", actor="cli:a", reason="file")
    assert (await store.history(1)) == [entry]


async def test_unsafe_stored_state_is_not_served(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    store = await make_store()
    bad = snapshot_to_doc(config())
    bad["resources"]["users"]["read_from"] = "spanner"  # another config's store
    await redis.hset(f"{prefix}:state", mapping={"version": "9", "doc": orjson.dumps(bad)})
    await eventually(lambda: store.snapshot().version == 9)
    assert store.snapshot().resources["users"].read_from == "postgres"
    assert store.healthy
    assert store.last_error is not None and "unknown store 'spanner'" in store.last_error


async def test_a_malformed_document_makes_the_store_unhealthy(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    store = await make_store()
    good = await redis.hget(f"{prefix}:state", "doc")
    assert good is not None
    await redis.hset(f"{prefix}:state", mapping={"version": "5", "doc": b"{not json"})
    await eventually(lambda: not store.healthy)
    assert store.last_error is not None and "is not JSON" in store.last_error
    assert store.snapshot().resources["users"].read_from == "postgres"
    with pytest.raises(FlagStoreError, match="is not JSON"):
        await store.set("users", "shadow_reads", "0.5", actor="cli:a", reason="")
    await redis.hset(f"{prefix}:state", mapping={"version": "6", "doc": good})
    await eventually(lambda: store.healthy and store.snapshot().version == 6)
    assert store.last_error is None


async def test_redis_lost_and_regained(make_store: StoreFactory) -> None:
    link = await CuttableLink("127.0.0.1", 6379).start()
    try:
        direct = await make_store()
        linked = await make_store(url=f"redis://127.0.0.1:{link.port}/0")
        registry = CollectorRegistry()
        FlagMetrics.create(registry).attach(linked)
        health: list[bool] = []
        linked.on_health(lambda up, error: health.append(up))
        assert linked.healthy and linked.snapshot().version == 1

        link.cut()
        await eventually(lambda: not linked.healthy)
        assert linked.last_error is not None and "unreachable" in linked.last_error
        assert registry.get_sample_value("shadowproxy_flag_store_up") == 0
        assert linked.snapshot().resources["users"].read_from == "postgres"  # last known
        with pytest.raises(FlagStoreUnavailable, match=r"unreachable.*nothing was changed"):
            await linked.set("users", "shadow_reads", "0.5", actor="cli:a", reason="")

        await direct.set("users", "read_from", "dynamodb", actor="cli:b", reason="meanwhile")
        await asyncio.sleep(3 * POLL)
        assert linked.snapshot().resources["users"].read_from == "postgres"

        link.restore()
        await eventually(lambda: linked.healthy)
        await eventually(lambda: linked.snapshot().resources["users"].read_from == "dynamodb")
        assert linked.last_error is None
        assert registry.get_sample_value("shadowproxy_flag_store_up") == 1
        assert health == [False, True]
        await linked.set("users", "shadow_reads", "0.5", actor="cli:a", reason="back")
        await eventually(lambda: direct.snapshot().resources["users"].shadow_reads == 0.5)
    finally:
        await link.stop()


async def test_started_while_redis_is_down(make_store: StoreFactory) -> None:
    link = await CuttableLink("127.0.0.1", 6379).start()
    try:
        link.cut()
        store = await make_store(config("postgres"), url=f"redis://127.0.0.1:{link.port}/0")
        assert not store.healthy
        assert store.snapshot() == config("postgres")  # serving the config meanwhile
        other = await make_store(config("postgres"))
        await other.set("users", "read_from", "dynamodb", actor="cli:b", reason="")
        link.restore()
        await eventually(lambda: store.healthy)
        assert store.snapshot().resources["users"].read_from == "dynamodb"  # Redis wins
    finally:
        await link.stop()


async def test_redis_emptied_is_restored_from_the_last_known_flags(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    one = await make_store()
    two = await make_store()
    await one.set("users", "read_from", "dynamodb", actor="cli:a", reason="")
    await eventually(lambda: two.snapshot().resources["users"].read_from == "dynamodb")
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
    await redis.delete(*keys)  # Redis restarted without persistence
    await eventually(lambda: one.snapshot().version == 1 and two.snapshot().version == 1)
    for store in (one, two):
        assert store.snapshot().resources["users"].read_from == "dynamodb"  # not the config
    restored = await one.history(100)
    assert len(restored) == 7
    assert {e.actor for e in restored} == {"restore"}
