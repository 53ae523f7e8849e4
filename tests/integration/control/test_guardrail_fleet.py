"""The guardrail over a fleet, in the real Redis on this machine: two instances (each its own
flag store client, guardrail and tally) share one prefix, as two ``shadowproxy serve``
processes with ``flags.kind: redis`` and ``readiness.store: redis`` do. Reads that neither
instance alone would judge add up to a rollback; a later instance joins the watch in force;
a rollback forgets it; with Redis unreachable an instance judges its own counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from comparators.model import Comparison, Outcome
from proxy.control.guardrail import Guardrail
from proxy.control.guardrail_tally import RedisTally
from proxy.experiment.publish import Experiment
from proxy.flags.audit import FileAuditLog
from proxy.flags.model import FlagSnapshot, ResourceFlagState
from proxy.flags.redis_store import RedisFlagStore
from proxy.flags.store import MemoryFlagStore
from proxy.settings import GuardrailSettings
from tests.integration.conftest import REDIS_URL
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

LIMITS = GuardrailSettings(
    watch_seconds=120, min_comparisons=40, max_mismatch_rate=0.1, max_primary_error_rate=0.5
)
FLUSH = 0.05


def config() -> FlagSnapshot:
    state = ResourceFlagState("postgres", ("postgres", "dynamodb"), 1.0)
    return FlagSnapshot(0, {"users": state}, {})


def read(outcome: Outcome) -> Experiment:
    """A read the new store served (a canary key), compared against the old store."""
    return Experiment(
        route="users", operation="get", method="GET", path="/users/1", request_id="r",
        requester=None, primary_status=None, shadow_status=None, primary_seconds=0.001,
        shadow_seconds=0.001, comparison=Comparison(outcome), new_side="primary",
    )  # fmt: skip


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Instance:
    def __init__(self, flags: RedisFlagStore, guard: Guardrail) -> None:
        self.flags = flags
        self.guard = guard

    @property
    def fraction(self) -> float:
        return self.flags.snapshot().resources["users"].new_store_read_fraction


@pytest.fixture
async def fleet(prefix: str) -> AsyncIterator[Callable[[], Awaitable[Instance]]]:
    made: list[Instance] = []

    async def start() -> Instance:
        flags = RedisFlagStore(REDIS_URL, f"{prefix}:flags", config(), None, poll_seconds=0.05)
        guard = Guardrail(
            flag_store=flags,
            settings={"users": LIMITS},
            new_stores={"users": "dynamodb"},
            tally=RedisTally(REDIS_URL, prefix=f"{prefix}:readiness"),
            flush_interval_seconds=FLUSH,
        )
        flags.on_change(guard.on_change)
        await flags.start()
        guard.start()
        instance = Instance(flags, guard)
        made.append(instance)
        return instance

    yield start
    for instance in made:
        await instance.guard.close()
        await instance.flags.close()


async def test_reads_on_two_instances_add_up_to_a_canary_rollback(
    fleet: Callable[[], Awaitable[Instance]], redis: aioredis.Redis, prefix: str
) -> None:
    a, b = await fleet(), await fleet()
    await a.flags.set("users", "new_store_read_fraction", 0.5, actor="cli:test",
                      reason="canary 50%", force=True)  # fmt: skip
    await eventually(lambda: "users" in b.guard.watches)
    await eventually(lambda: a.guard.watches["users"].joined and b.guard.watches["users"].joined)
    assert a.guard.watches["users"].id == b.guard.watches["users"].id  # one watch, fleet-wide
    watch_key = f"{prefix}:readiness:guardrail:users"
    assert (await redis.hget(watch_key, "signature")) == b"canary=0.5"

    # 25 reads each, 5 mismatches each (20%): under min_comparisons (40) on either instance
    for instance in (a, b):
        for n in range(25):
            instance.guard.observe(read(Outcome.MISMATCH if n % 5 == 0 else Outcome.MATCH))
    assert a.guard.watches["users"].local.reads == 25  # neither alone could judge
    await eventually(lambda: a.fraction == 0.0 and b.fraction == 0.0)

    newest = (await a.flags.history(5))[0]
    assert (newest.actor, newest.flag, newest.new, newest.forced) == (
        "guardrail",
        "new_store_read_fraction",
        0.0,
        True,
    )
    assert "mismatch rate 20.00% over 50 comparisons" in newest.reason
    assert "on every instance" in newest.reason
    assert [e.actor for e in await a.flags.history(5)].count("guardrail") == 1
    await eventually(lambda: a.guard.watches == {} and b.guard.watches == {})
    assert not await redis.exists(watch_key)  # a later canary starts from zero


async def test_an_instance_started_later_joins_the_watch_in_force(
    fleet: Callable[[], Awaitable[Instance]], redis: aioredis.Redis, prefix: str
) -> None:
    a = await fleet()
    await a.flags.set("users", "read_from", "dynamodb", actor="cli:test", reason="flip",
                      force=True)  # fmt: skip
    await eventually(lambda: a.guard.watches["users"].joined)
    for _ in range(30):
        a.guard.observe(read(Outcome.MATCH))
    counts_key = f"{prefix}:readiness:guardrail:users:{a.guard.watches['users'].id}"
    await eventually(lambda: a.guard.watches["users"].pending.reads == 0)
    assert int(await redis.hget(counts_key, "comparisons") or 0) == 30
    assert 0 < await redis.ttl(counts_key) <= 120 + 60

    b = await fleet()  # finds reads already on the new store in Redis: arms, and joins
    await eventually(lambda: "users" in b.guard.watches and b.guard.watches["users"].joined)
    assert b.guard.watches["users"].id == a.guard.watches["users"].id
    assert b.guard.watches["users"].until == a.guard.watches["users"].until
    for _ in range(10):
        b.guard.observe(read(Outcome.PRIMARY_ERROR))  # 10 errors in 50 reads: under 50%
        b.guard.observe(read(Outcome.MATCH))
    await eventually(lambda: b.guard.watches["users"].pending.reads == 0)
    assert int(await redis.hget(counts_key, "primary_errors") or 0) == 10
    for _ in range(30):
        b.guard.observe(read(Outcome.PRIMARY_ERROR))  # 40 in 80: 50%, not over; one more is
    await asyncio.sleep(FLUSH * 4)
    assert a.flags.snapshot().resources["users"].read_from == "dynamodb"
    a.guard.observe(read(Outcome.PRIMARY_ERROR))
    await eventually(lambda: b.flags.snapshot().resources["users"].read_from == "postgres")
    reason = (await b.flags.history(1))[0].reason
    assert "new primary dynamodb error rate 50.62% over 81 reads on every instance" in reason


async def test_with_redis_unreachable_an_instance_judges_its_own_reads(tmp_path: Path) -> None:
    flags = MemoryFlagStore(config(), FileAuditLog(tmp_path / "audit.jsonl"))
    await flags.start()
    guard = Guardrail(
        flag_store=flags,
        settings={"users": LIMITS},
        new_stores={"users": "dynamodb"},
        tally=RedisTally(f"redis://127.0.0.1:{free_port()}/0", prefix="x", timeout_seconds=0.2),
        flush_interval_seconds=FLUSH,
    )
    flags.on_change(guard.on_change)
    guard.start()
    try:
        await flags.set("users", "new_store_read_fraction", 0.25, actor="cli:test",
                        reason="canary", force=True)  # fmt: skip
        for n in range(40):
            guard.observe(read(Outcome.MISMATCH if n % 2 else Outcome.MATCH))
        await eventually(lambda: flags.snapshot().resources["users"].new_store_read_fraction == 0.0)
        reason = (await flags.history(1))[0].reason
        assert "over 40 comparisons" in reason and "on this instance (Redis failed)" in reason
    finally:
        await guard.close()
        await flags.close()
