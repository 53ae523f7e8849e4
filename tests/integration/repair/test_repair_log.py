"""Both repair logs against the real Redis and PostgreSQL on this machine."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from proxy.repair.config import RepairConfig
from proxy.repair.log import RepairEntry, RepairLog, open_repair_log
from proxy.repair.postgres_log import PostgresRepairLog
from proxy.repair.redis_log import RedisRepairLog
from proxy.repair.repairer import Repairer, RepairMetrics, RepairTarget
from proxy.store.base import Record, RecordNotFound, StoreUnavailable

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_DSN = os.environ.get("SHADOWPROXY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RETRY = 0.2

LogFactory = Callable[..., RepairLog]


@pytest.fixture(params=["redis", "postgres"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    async for factory in _logs(request.param):
        yield factory


@pytest.fixture(params=["redis", "postgres", "memory"])
async def any_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    """Also the in-memory log: for tests that use one log object only."""
    async for factory in _logs(request.param):
        yield factory


async def _logs(kind: str) -> AsyncIterator[LogFactory]:
    """Log objects sharing one fresh stream or table; each call is another process's view."""
    name = f"test_repair_{uuid.uuid4().hex[:12]}"
    made: list[RepairLog] = []

    def make(**overrides: Any) -> RepairLog:
        settings = {"retry_after_seconds": RETRY, "max_attempts": 3, **overrides}
        config = RepairConfig(
            kind=kind, url=REDIS_URL, dsn=PG_DSN, stream=name, table=name, **settings
        )
        log = open_repair_log(config)
        made.append(log)
        return log

    yield make
    for log in made:
        await log.close()
    if kind == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        extra = [k async for k in client.scan_iter(match=f"{name}:*")]
        await client.delete(name, *extra)
        await client.aclose()
    elif kind == "postgres":
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        await conn.close()


async def opened(log: RepairLog) -> RepairLog:
    await log.init()
    return log


def keys(entries: Sequence[RepairEntry]) -> list[str]:
    return [e.key for e in entries]


async def test_append_claim_done(make_log: LogFactory) -> None:
    log = await opened(make_log())
    await log.init()  # idempotent
    assert await log.depth() == 0
    assert await log.claim(10) == []

    for key in ("1", "2", "3"):
        await log.append("users", key, "dynamodb put failed: StoreTimeout", op="put")
    assert await log.depth() == 3

    entries = await log.claim(2)
    assert keys(entries) == ["1", "2"]
    first = entries[0]
    assert (first.resource, first.reason, first.op, first.attempts, first.last_error) == (
        "users",
        "dynamodb put failed: StoreTimeout",
        "put",
        0,
        None,
    )
    assert keys(await log.claim(10)) == ["3"]  # the claimed ones are hidden
    for entry in entries:
        await log.done(entry)
    assert await log.depth() == 1


async def test_failed_entry_stays_and_comes_back_with_its_attempts(make_log: LogFactory) -> None:
    log = await opened(make_log())
    await log.append("users", "1", "x")
    [entry] = await log.claim(10)
    await log.failed(entry, "StoreUnavailable: refused")

    assert await log.depth() == 1
    assert await log.claim(10) == []  # not due before retry_after_seconds
    await asyncio.sleep(RETRY * 1.5)
    [again] = await log.claim(10)
    assert (again.key, again.attempts, again.last_error) == ("1", 1, "StoreUnavailable: refused")
    await log.done(again)
    assert await log.depth() == 0


async def test_entry_past_max_attempts_is_stuck_not_dropped(make_log: LogFactory) -> None:
    log = await opened(make_log(retry_after_seconds=0.01, max_attempts=2))
    await log.append("users", "1", "x", op="delete")
    await log.append("users", "2", "y")
    for attempt in range(2):
        await asyncio.sleep(0.02)
        [entry] = [e for e in await log.claim(10) if e.key == "1"]
        assert entry.attempts == attempt
        await log.failed(entry, f"boom {attempt}")

    await asyncio.sleep(0.02)
    assert keys(await log.claim(10)) == ["2"]
    assert await log.depth() == 2
    assert await log.stuck_count() == 1
    [stuck] = await log.stuck()
    assert (stuck.resource, stuck.key, stuck.op, stuck.attempts, stuck.last_error) == (
        "users",
        "1",
        "delete",
        2,
        "boom 1",
    )

    assert await log.retry_stuck() == 1
    assert await log.stuck_count() == 0
    again = [(e.key, e.attempts, e.op) for e in await log.claim(10) if e.key == "1"]
    assert again == [("1", 0, "delete")]
    assert await log.depth() == 2


async def test_pending_entries_survive_a_restart(make_log: LogFactory) -> None:
    before = await opened(make_log())
    for key in ("1", "2"):
        await before.append("users", key, "x")
    [claimed] = await before.claim(1)  # then the process dies mid-repair
    await before.close()

    after = await opened(make_log())
    assert await after.depth() == 2
    [fresh] = await after.claim(10)
    assert fresh.key == "2"
    await after.done(fresh)
    await asyncio.sleep(RETRY * 1.5)
    [reclaimed] = await after.claim(10)  # the dead claimer's lease ran out
    assert reclaimed.key == claimed.key == "1"


async def test_concurrent_claimers_share_the_work(make_log: LogFactory) -> None:
    one, two = await opened(make_log()), await opened(make_log())
    for key in range(20):
        await one.append("users", str(key), "x")
    a, b = await asyncio.gather(one.claim(10), two.claim(10))
    assert len(a) == len(b) == 10
    assert sorted(keys(a) + keys(b), key=int) == [str(k) for k in range(20)]


class DictStore:
    def __init__(self, records: Sequence[Record] = ()) -> None:
        self.data = {r["id"]: dict(r) for r in records}
        self.down = False

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
        return self.data.get(key)

    async def put(self, record: Record) -> None:
        if self.down:
            raise StoreUnavailable("refused")
        self.data[record["id"]] = dict(record)

    async def delete(self, key: Any) -> None:
        if self.down:
            raise StoreUnavailable("refused")
        if self.data.pop(key, None) is None:
            raise RecordNotFound(str(key))


async def test_repairer_over_a_real_log_waits_out_a_secondary_outage(
    make_log: LogFactory,
) -> None:
    primary = DictStore([{"id": k, "v": k} for k in range(0, 200, 2)])
    secondary = DictStore([{"id": k, "v": -1} for k in range(200)])
    # Long enough that no failed entry is due again while one drain is still running (200
    # entries take several tenths of a second on a slow machine).
    retry = 2.0
    log = await opened(make_log(max_attempts=100, retry_after_seconds=retry))
    for key in range(200):
        await log.append("users", str(key), "secondary write failed")
    registry = CollectorRegistry()
    repairer = Repairer(
        log, {"users": RepairTarget(primary, secondary, int)}, RepairMetrics.create(registry)
    )

    secondary.down = True
    assert await repairer.drain() == (0, 200)
    assert await log.depth() == 200
    secondary.down = False
    await asyncio.sleep(retry * 1.25)
    assert await repairer.drain() == (200, 0)

    assert secondary.data == primary.data
    assert await log.depth() == 0
    assert registry.get_sample_value("shadowproxy_repair_log_depth") == 0
    repaired = {"resource": "users", "result": "repaired"}
    assert registry.get_sample_value("shadowproxy_repairs_total", repaired) == 200


async def test_redis_log_recreates_a_deleted_stream() -> None:
    stream = f"test_repair_{uuid.uuid4().hex[:12]}"
    log = RedisRepairLog(REDIS_URL, stream=stream)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await log.init()
        await client.delete(stream)
        assert await log.claim(10) == []
        await log.append("users", "1", "x")
        assert keys(await log.claim(10)) == ["1"]
    finally:
        await log.close()
        await client.delete(stream)
        await client.aclose()


async def test_postgres_log_unreachable_raises_for_the_caller_to_count() -> None:
    log = PostgresRepairLog("postgresql://postgres@127.0.0.1:1/test", timeout_seconds=0.5)
    with pytest.raises(OSError):
        await log.append("users", "1", "x")
    await log.close()


async def test_redis_log_close_removes_only_a_consumer_without_pending_entries() -> None:
    stream = f"test_repair_{uuid.uuid4().hex[:12]}"
    busy, idle = RedisRepairLog(REDIS_URL, stream=stream), RedisRepairLog(REDIS_URL, stream=stream)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await busy.init()
        await busy.append("users", "1", "x")
        assert len(await busy.claim(10)) == 1
        assert await idle.claim(10) == []
        await busy.close()
        await idle.close()
        consumers = await client.xinfo_consumers(stream, "shadowproxy-repairers")
        assert [c["name"].decode() for c in consumers] == [busy.consumer]
    finally:
        await client.delete(stream)
        await client.aclose()


# --- intents: the write path's side of the log ------------------------------------------------


async def test_a_settled_intent_leaves_nothing_to_repair(any_log: LogFactory) -> None:
    log = await opened(any_log(intent_grace_seconds=0.3))
    assert await log.unsettled("users", ["1"]) == (0, "")
    ids = await log.intend("users", ["1", "2"], op="put")
    assert len(ids) == 2 and len(set(ids)) == 2
    one = await log.unsettled("users", ["1"])
    assert one.held == 1 and not one.quiet
    assert await log.depth() == 0  # writes in flight are not a backlog
    assert await log.in_flight() == 2
    await log.settle(ids)
    assert await log.in_flight() == 0
    settled = await log.unsettled("users", ["1"])
    assert settled.quiet and settled.mark == one.mark  # the last write is still visible
    await asyncio.sleep(0.5)  # past the grace: nothing falls due
    assert await log.claim(10) == []
    assert await log.depth() == 0


async def test_an_intent_never_settled_is_repaired_after_the_grace(any_log: LogFactory) -> None:
    """The writer died between the two stores: its intent falls due and is claimed."""
    log = await opened(any_log(intent_grace_seconds=0.3))
    [intent] = await log.intend("users", ["7"], op="update")
    assert await log.claim(10) == []  # still within the grace: the writer may be alive
    assert await log.in_flight() == 1
    deadline = asyncio.get_running_loop().time() + 10
    entries: list[RepairEntry] = []
    while not entries:
        assert asyncio.get_running_loop().time() < deadline, "the intent never fell due"
        await asyncio.sleep(0.1)
        entries = await log.claim(10)
    [entry] = entries
    assert await log.in_flight() == 0  # fallen due: a repair, not a write in flight
    assert (entry.resource, entry.key, entry.op) == ("users", "7", "update")
    assert entry.hold and "not confirmed" in entry.reason
    assert await log.depth() == 1
    assert (await log.unsettled("users", ["7"])).held == 1  # until repaired
    await log.settle([intent])  # a late writer settling cannot drop the claimed entry
    assert await log.depth() == 1
    await log.done(entry)
    assert (await log.unsettled("users", ["7"])).quiet
    assert await log.depth() == 0


async def test_an_escalated_intent_waits_retry_after_then_is_repaired(any_log: LogFactory) -> None:
    log = await opened(any_log(intent_grace_seconds=60, retry_after_seconds=0.3))
    [intent] = await log.intend("users", ["9"], op="put")
    await log.escalate([intent], "put on dynamo failed: StoreTimeout")
    assert await log.depth() == 1  # a failed write is a backlog at once
    assert await log.claim(10) == []  # not yet: a timed-out request may still land
    await asyncio.sleep(0.5)
    [entry] = await log.claim(10)
    assert entry.key == "9" and entry.reason == "put on dynamo failed: StoreTimeout"
    assert (await log.unsettled("users", ["9"])).held == 1
    await log.done(entry)
    assert (await log.unsettled("users", ["9"])).quiet and await log.depth() == 0


async def test_the_mark_changes_when_a_write_starts(any_log: LogFactory) -> None:
    """Two equal quiet readings mean no write of the key began in between, even one that
    settled before the second reading."""
    log = await opened(any_log())
    first = await log.unsettled("users", ["1", "2"])
    await log.settle(await log.intend("users", ["2"], op="put"))
    second = await log.unsettled("users", ["1", "2"])
    assert second.quiet and second != first
    await log.settle(await log.intend("users", ["3"], op="put"))  # another key
    assert await log.unsettled("users", ["1", "2"]) == second
    assert (await log.unsettled("orders", ["2"])).mark != second.mark  # per resource


async def test_a_stuck_entry_no_longer_holds_its_key(any_log: LogFactory) -> None:
    log = await opened(any_log(intent_grace_seconds=60, retry_after_seconds=0.01, max_attempts=1))
    [intent] = await log.intend("users", ["5"], op="put")
    await log.escalate([intent], "put failed")
    await asyncio.sleep(0.05)
    [entry] = await log.claim(10)
    await log.failed(entry, "still failing")
    assert await log.stuck_count() == 1
    assert (await log.unsettled("users", ["5"])).quiet  # a known difference, not in flight


async def test_a_write_of_unknown_outcome_is_repaired_only_after_late_write_seconds(
    any_log: LogFactory,
) -> None:
    """A timed-out request may still land: its repair must come after it, not before."""
    log = await opened(any_log(intent_grace_seconds=60, retry_after_seconds=0.1,
                               late_write_seconds=1.0))  # fmt: skip
    [sure, unsure] = await log.intend("users", ["1", "2"], op="put")
    await log.escalate([sure], "put on dynamo failed: BreakerOpen")
    await log.escalate([unsure], "put on dynamo failed: StoreTimeout", late=True)
    await asyncio.sleep(0.4)
    [first] = await log.claim(10)
    assert first.key == "1"
    await log.done(first)
    await asyncio.sleep(0.9)
    assert keys(await log.claim(10)) == ["2"]


async def test_a_repair_whose_write_may_still_land_waits_late_write_seconds(
    any_log: LogFactory,
) -> None:
    log = await opened(any_log(intent_grace_seconds=60, retry_after_seconds=0.1,
                               late_write_seconds=1.0))  # fmt: skip
    [intent] = await log.intend("users", ["4"], op="put")
    await log.escalate([intent], "put on dynamo failed: BreakerOpen")
    await asyncio.sleep(0.2)
    [entry] = await log.claim(10)
    await log.failed(entry, "StoreTimeout: dynamodb: no answer within 5s", late=True)
    assert await log.depth() == 1 and (await log.unsettled("users", ["4"])).held == 1
    await asyncio.sleep(0.4)
    assert await log.claim(10) == []  # past retry_after, not yet past late_write_seconds
    await asyncio.sleep(0.8)
    [again] = await log.claim(10)
    assert again.key == "4" and again.attempts == 1
    assert again.last_error is not None and "StoreTimeout" in again.last_error
    await log.done(again)
    assert (await log.unsettled("users", ["4"])).quiet and await log.depth() == 0


async def test_escalate_names_the_intents_a_repairer_already_took(any_log: LogFactory) -> None:
    """A primary write that outlived the grace: its intent was claimed (and maybe repaired
    from the state before the write). Escalating it says so, and the writer logs again."""
    log = await opened(any_log(intent_grace_seconds=0.2, retry_after_seconds=60))
    [taken, live] = await log.intend("users", ["1", "2"], op="put")
    await asyncio.sleep(0.4)
    entries = await log.claim(1)  # one of the two, fallen due
    assert len(entries) == 1
    claimed = entries[0]
    other = live if claimed.hold == taken else taken
    await log.done(claimed)
    assert await log.escalate([claimed.hold], "put on dynamo failed") == [claimed.hold]
    [again] = await log.intend("users", [claimed.key], op="put")
    assert await log.escalate([again], "put on dynamo failed") == []
    assert await log.depth() >= 1 and (await log.unsettled("users", [claimed.key])).held == 1
    assert await log.escalate([other, "999999"], "put failed") == ["999999"]


# --- take-over: reconcile beside live and dead claimers -------------------------------------


async def test_a_take_over_claims_what_a_dead_claimer_held(make_log: LogFactory) -> None:
    dead, reconcile = await opened(make_log()), await opened(make_log())
    for key in ("1", "2", "3"):
        await dead.append("users", key, "x")
    assert len(await dead.claim(10)) == 3  # then the process dies mid-repair
    assert await reconcile.claim(10) == []  # their lease has not run out
    taken = await reconcile.claim(10, take_over=True)
    assert sorted(keys(taken)) == ["1", "2", "3"]
    for entry in taken:
        await reconcile.done(entry)
    assert await reconcile.depth() == 0


async def test_a_take_over_claims_what_a_live_claimer_keeps_failing(make_log: LogFactory) -> None:
    """The reported case: a repairer that cannot reach the other store claims its entries
    again whenever they fall due, so a claim by idle time never gets them."""
    live, reconcile = (
        await opened(make_log(max_attempts=10)),
        await opened(make_log(max_attempts=10)),
    )
    for key in ("1", "2"):
        await live.append("users", key, "x")
    for _ in range(3):
        await asyncio.sleep(RETRY * 1.5)
        for entry in await live.claim(10):
            await live.failed(entry, "StoreUnavailable: refused")
        assert await reconcile.claim(10) == []  # hidden: failed a moment ago
    taken = await reconcile.claim(10, take_over=True)
    assert sorted((e.key, e.attempts) for e in taken) == [("1", 3), ("2", 3)]
    await reconcile.failed(taken[0], "StoreUnavailable: refused")
    # Its own failure keeps its wait: a drain does not retry it in a loop.
    assert await reconcile.claim(10, take_over=True) == []
    await reconcile.done(taken[1])
    await asyncio.sleep(RETRY * 1.5)
    [again] = await live.claim(10)
    assert (again.key, again.attempts) == (taken[0].key, 4)


async def test_a_failure_or_done_of_an_entry_taken_over_corrupts_nothing(
    make_log: LogFactory,
) -> None:
    """The repairer that lost an entry to a take-over finishes late: its failure counts
    nothing, and its done, after the other's, releases no newer write of the key."""
    live = await opened(make_log(intent_grace_seconds=60, retry_after_seconds=RETRY))
    reconcile = await opened(make_log(intent_grace_seconds=60))
    [intent] = await live.intend("users", ["5"], op="put")
    await live.escalate([intent], "put on dynamo failed: BreakerOpen")
    await asyncio.sleep(RETRY * 1.5)
    [entry] = await live.claim(10)
    [taken] = await reconcile.claim(10, take_over=True)
    assert taken.id == entry.id and taken.hold == entry.hold != ""
    await live.failed(entry, "StoreUnavailable: refused")  # it no longer holds the entry
    await reconcile.failed(taken, "StoreUnavailable: still refused")
    await asyncio.sleep(RETRY * 1.5)
    [again] = await reconcile.claim(10, take_over=True)
    assert (again.attempts, again.last_error) == (1, "StoreUnavailable: still refused")
    assert (await live.unsettled("users", ["5"])).held == 1
    await reconcile.done(again)
    assert (await live.unsettled("users", ["5"])).quiet and await live.depth() == 0

    [newer] = await live.intend("users", ["5"], op="put")  # a new write of the key
    await live.done(entry)  # the stale repairer's done, after the other's
    await live.failed(entry, "StoreUnavailable: refused")
    assert (await live.unsettled("users", ["5"])).held == 1
    assert await live.depth() == 0
    await live.settle([newer])
    assert (await live.unsettled("users", ["5"])).quiet


async def test_a_late_failure_is_not_taken_over_before_late_write_seconds(
    make_log: LogFactory,
) -> None:
    settings = {"retry_after_seconds": 0.1, "late_write_seconds": 1.0}
    live, reconcile = await opened(make_log(**settings)), await opened(make_log(**settings))
    await live.append("users", "4", "x")
    [entry] = await live.claim(10)
    await live.failed(entry, "StoreTimeout: dynamodb: no answer within 5s", late=True)
    assert await reconcile.claim(10, take_over=True) == []
    await asyncio.sleep(0.3)
    assert await reconcile.claim(10, take_over=True) == []  # past retry_after only
    assert await reconcile.depth() == 1
    await asyncio.sleep(1.0)
    [again] = await reconcile.claim(10, take_over=True)
    assert (again.key, again.attempts) == ("4", 1)


async def test_a_late_failure_of_an_entry_taken_over_outlives_the_others_repair(
    make_log: LogFactory,
) -> None:
    """The repairer that lost the entry to a take-over had a write of unknown outcome: it
    may land after the other repair's copy, so the key is repaired again after
    late_write_seconds, whichever of the two finishes first."""
    settings = {"intent_grace_seconds": 60, "retry_after_seconds": 0.1, "late_write_seconds": 1.0}
    live, reconcile = await opened(make_log(**settings)), await opened(make_log(**settings))
    for key in ("1", "2"):
        [intent] = await live.intend("users", [key], op="put")
        await live.escalate([intent], "put on dynamo failed: BreakerOpen")
    await asyncio.sleep(0.2)
    entries = {e.key: e for e in await live.claim(10)}
    taken = {e.key: e for e in await reconcile.claim(10, take_over=True)}
    assert sorted(taken) == ["1", "2"]
    await reconcile.done(taken["1"])  # the take-over repairs "1" first ...
    await live.failed(entries["1"], "StoreTimeout", late=True)  # ... then the old write
    await live.failed(entries["2"], "StoreTimeout", late=True)  # "2": the old write first,
    await reconcile.done(taken["2"])  # then the take-over's repair
    assert await live.depth() == 2
    assert (await live.unsettled("users", ["1", "2"])).held == 2
    assert await reconcile.claim(10, take_over=True) == []
    await asyncio.sleep(1.2)
    again = await reconcile.claim(10, take_over=True)
    assert sorted((e.key, e.attempts) for e in again) == [("1", 1), ("2", 0)]
    for entry in again:
        await reconcile.done(entry)
    assert (await live.unsettled("users", ["1", "2"])).quiet and await live.depth() == 0


async def test_done_or_failed_twice_changes_nothing_more(any_log: LogFactory) -> None:
    log = await opened(any_log(intent_grace_seconds=60, retry_after_seconds=0.1,
                               late_write_seconds=0.5))  # fmt: skip
    [intent] = await log.intend("users", ["3"], op="put")
    await log.escalate([intent], "put on dynamo failed: BreakerOpen")
    await asyncio.sleep(0.2)
    [entry] = await log.claim(10, take_over=True)
    await log.done(entry)
    await log.done(entry)
    await log.failed(entry, "StoreUnavailable: refused")
    assert await log.depth() == 0 and (await log.unsettled("users", ["3"])).quiet
    # A write of unknown outcome that was still on its way: the key is due again, held.
    await log.failed(entry, "StoreTimeout", late=True)
    assert await log.depth() == 1 and (await log.unsettled("users", ["3"])).held == 1
    assert await log.claim(10, take_over=True) == []
    await asyncio.sleep(0.7)
    [again] = await log.claim(10, take_over=True)
    assert (again.key, again.attempts, again.last_error) == ("3", 1, "StoreTimeout")
    await log.done(again)
    assert await log.depth() == 0 and (await log.unsettled("users", ["3"])).quiet
