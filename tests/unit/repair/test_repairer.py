"""repair_key and Repairer semantics against in-memory stores and an in-memory log."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.errors import ConfigError
from proxy.repair.config import RepairConfig
from proxy.repair.log import RepairEntry, open_repair_log
from proxy.repair.repairer import (
    DrainRound,
    Repairer,
    RepairMetrics,
    RepairRace,
    RepairTarget,
    repair_key,
)
from proxy.store.base import Record, RecordNotFound, StoreUnavailable
from proxy.tasks import spawn


class FakeStore:
    """A dict keyed by ``id``; ``down`` makes every call raise; ``on_put`` runs inside put."""

    def __init__(self, records: Sequence[Record] = ()) -> None:
        self.data: dict[Any, Record] = {r["id"]: dict(r) for r in records}
        self.down = False
        self.on_put: Callable[[Record], Awaitable[None]] | None = None
        self.calls: list[str] = []

    def _check(self, op: str) -> None:
        self.calls.append(op)
        if self.down:
            raise StoreUnavailable("connection refused")

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
        self._check("get")
        record = self.data.get(key)
        return None if record is None else dict(record)

    async def put(self, record: Record) -> None:
        self._check("put")
        if self.on_put is not None:
            hook, self.on_put = self.on_put, None
            await hook(record)
        self.data[record["id"]] = dict(record)

    async def delete(self, key: Any) -> None:
        self._check("delete")
        if key not in self.data:
            raise RecordNotFound(str(key))
        del self.data[key]


class MemoryLog:
    """The RepairLog contract without the durability: failed entries are due again at once."""

    def __init__(self, max_attempts: int = 100) -> None:
        self.entries: dict[str, RepairEntry] = {}
        self.max_attempts = max_attempts
        self._ids = itertools.count(1)
        self.broken = False
        self.take_overs: list[bool] = []

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError("log down")

    async def init(self) -> None:
        return None

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        self._check()
        entry_id = str(next(self._ids))
        self.entries[entry_id] = RepairEntry(entry_id, resource, key, reason, op=op)

    async def claim(self, limit: int, *, take_over: bool = False) -> list[RepairEntry]:
        self._check()
        self.take_overs.append(take_over)
        due = [e for e in self.entries.values() if e.attempts < self.max_attempts]
        return due[:limit]

    async def done(self, entry: RepairEntry) -> None:
        self._check()
        self.entries.pop(entry.id, None)

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        self._check()
        current = self.entries[entry.id]
        self.entries[entry.id] = replace(current, attempts=current.attempts + 1, last_error=error)

    async def depth(self) -> int:
        self._check()
        return len(self.entries)

    async def stuck_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.attempts >= self.max_attempts)

    async def stuck(self, limit: int = 100) -> list[RepairEntry]:
        return [e for e in self.entries.values() if e.attempts >= self.max_attempts][:limit]

    async def retry_stuck(self) -> int:
        return 0

    async def close(self) -> None:
        return None


def user(key: int, email: str) -> Record:
    return {"id": key, "email": email}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_repairer(
    log: MemoryLog,
    primary: FakeStore,
    secondary: FakeStore,
    registry: CollectorRegistry,
    **kwargs: Any,
) -> Repairer:
    target = RepairTarget(primary, secondary, int)
    return Repairer(log, {"users": target}, RepairMetrics.create(registry), **kwargs)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within timeout")
        await asyncio.sleep(0.005)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --- repair_key ----------------------------------------------------------------------------


async def test_repair_copies_the_primary_record() -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()
    assert await repair_key(primary, secondary, 1) == "copied"
    assert secondary.data == primary.data


async def test_repair_deletes_what_the_primary_no_longer_has() -> None:
    primary, secondary = FakeStore(), FakeStore([user(1, "a@x")])
    assert await repair_key(primary, secondary, 1) == "deleted"
    assert secondary.data == {}


async def test_repair_is_idempotent() -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore([user(1, "old@x")])
    for _ in range(2):
        assert await repair_key(primary, secondary, 1) == "copied"
    assert secondary.data == primary.data
    primary.data.clear()
    for _ in range(2):  # the second delete meets RecordNotFound, which is success
        assert await repair_key(primary, secondary, 1) == "deleted"
    assert secondary.data == {}


async def test_repair_overtaking_a_newer_dual_write_copies_again() -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()

    async def newer_write_lands_first(_: Record) -> None:
        primary.data[1] = user(1, "b@x")
        secondary.data[1] = user(1, "b@x")  # ... and our stale put lands after it

    secondary.on_put = newer_write_lands_first
    assert await repair_key(primary, secondary, 1) == "copied"
    assert secondary.data[1] == user(1, "b@x")


async def test_repair_gives_up_on_a_record_that_never_settles() -> None:
    versions = itertools.count()

    class Moving(FakeStore):
        async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
            return user(key, f"v{next(versions)}@x")

    with pytest.raises(RepairRace):
        await repair_key(Moving(), FakeStore(), 1)


async def test_a_failing_primary_or_secondary_raises() -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()
    secondary.down = True
    with pytest.raises(StoreUnavailable):
        await repair_key(primary, secondary, 1)
    secondary.down, primary.down = False, True
    with pytest.raises(StoreUnavailable):
        await repair_key(primary, secondary, 1)
    assert secondary.data == {}


# --- Repairer ------------------------------------------------------------------------------


async def test_run_once_repairs_and_empties_the_log(registry: CollectorRegistry) -> None:
    primary = FakeStore([user(1, "a@x"), user(2, "b@x")])
    secondary = FakeStore([user(3, "gone@x")])
    log = MemoryLog()
    for key in ("1", "2", "3"):
        await log.append("users", key, "secondary put failed")
    repairer = make_repairer(log, primary, secondary, registry)

    assert await repairer.run_once() == (3, 0)
    assert secondary.data == primary.data
    assert log.entries == {}
    assert sample(registry, "shadowproxy_repairs_total", resource="users", result="repaired") == 3
    assert sample(registry, "shadowproxy_repair_log_depth") == 0


async def test_entries_for_one_key_in_any_order_end_on_the_primary_state(
    registry: CollectorRegistry,
) -> None:
    primary, secondary = FakeStore(), FakeStore([user(1, "v0@x")])
    log = MemoryLog()
    primary.data[1] = user(1, "v1@x")
    await log.append("users", "1", "write 1 failed")
    primary.data[1] = user(1, "v2@x")
    await log.append("users", "1", "write 2 failed")
    log.entries = dict(reversed(log.entries.items()))  # the later entry first

    assert await make_repairer(log, primary, secondary, registry).run_once() == (2, 0)
    assert secondary.data == {1: user(1, "v2@x")}


async def test_failing_secondary_keeps_entries_until_it_recovers(
    registry: CollectorRegistry,
) -> None:
    primary, secondary = FakeStore([user(k, f"{k}@x") for k in range(10)]), FakeStore()
    log = MemoryLog()
    for key in range(10):
        await log.append("users", str(key), "secondary down")
    repairer = make_repairer(log, primary, secondary, registry, batch=4)

    secondary.down = True
    assert await repairer.run_once() == (0, 4)
    assert len(log.entries) == 10
    assert {e.attempts for e in log.entries.values()} == {0, 1}
    assert "StoreUnavailable" in (next(iter(log.entries.values())).last_error or "")
    assert sample(registry, "shadowproxy_repairs_total", resource="users", result="failed") == 4
    assert sample(registry, "shadowproxy_repair_log_depth") == 10

    secondary.down = False
    assert await repairer.drain() == (10, 0)
    assert secondary.data == primary.data
    assert sample(registry, "shadowproxy_repair_log_depth") == 0


async def test_a_drain_tries_each_entry_once(registry: CollectorRegistry) -> None:
    """This log hands a failed entry out again at once; the drain still ends, leaving it to
    the next drain or the background repairers rather than failing it until it is stuck."""
    primary, secondary = FakeStore([user(k, f"{k}@x") for k in range(10)]), FakeStore()
    log = MemoryLog()
    for key in range(10):
        await log.append("users", str(key), "secondary down")
    secondary.down = True
    repairer = make_repairer(log, primary, secondary, registry, batch=20)
    assert await repairer.drain(take_over=True) == (0, 10)
    assert {e.attempts for e in log.entries.values()} == {1}
    assert log.take_overs == [True, True]


async def test_a_drain_reports_every_round(registry: CollectorRegistry) -> None:
    primary, secondary = FakeStore([user(k, f"{k}@x") for k in range(10)]), FakeStore()
    log = MemoryLog()
    for key in range(10):
        await log.append("users", str(key), "secondary down")
    rounds: list[DrainRound] = []
    repairer = make_repairer(log, primary, secondary, registry, batch=4)
    assert await repairer.drain(on_round=rounds.append) == (10, 0)
    assert rounds == [(4, 0), (4, 0), (2, 0)]
    assert log.take_overs == [False] * 4


async def test_unknown_resource_and_bad_key_stay_in_the_log(registry: CollectorRegistry) -> None:
    log = MemoryLog(max_attempts=1)
    await log.append("orders", "1", "x")
    await log.append("users", "not-a-number", "x")
    repairer = make_repairer(log, FakeStore(), FakeStore(), registry)

    assert await repairer.run_once() == (0, 2)
    errors = sorted(e.last_error or "" for e in log.entries.values())
    assert errors[0].startswith("LookupError: resource 'orders'")
    assert errors[1].startswith("ValueError")
    assert await repairer.run_once() == (0, 0)  # stuck: no longer claimed, still counted
    assert sample(registry, "shadowproxy_repair_log_depth") == 2
    assert sample(registry, "shadowproxy_repair_log_stuck") == 2


async def test_run_forever_repairs_in_the_background_and_stops(
    registry: CollectorRegistry,
) -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()
    log = MemoryLog()
    repairer = make_repairer(log, primary, secondary, registry, interval_seconds=0.01)
    stop = asyncio.Event()
    task = spawn(repairer.run_forever(stop), name="test-repairer")

    await log.append("users", "1", "x")
    await until(lambda: secondary.data == primary.data)
    stop.set()
    async with asyncio.timeout(5):
        await task


async def test_run_forever_survives_a_broken_log(registry: CollectorRegistry) -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()
    log = MemoryLog()
    await log.append("users", "1", "x")
    log.broken = True
    repairer = make_repairer(log, primary, secondary, registry, interval_seconds=0.01)
    stop = asyncio.Event()
    task = spawn(repairer.run_forever(stop), name="test-repairer")

    await until(lambda: sample(registry, "shadowproxy_repair_log_errors_total") >= 2)
    log.broken = False
    await until(lambda: not log.entries)
    stop.set()
    await task
    assert secondary.data == primary.data


async def test_a_log_failure_after_the_repair_counts_and_keeps_the_entry(
    registry: CollectorRegistry,
) -> None:
    primary, secondary = FakeStore([user(1, "a@x")]), FakeStore()
    log = MemoryLog()
    await log.append("users", "1", "x")
    repairer = make_repairer(log, primary, secondary, registry)

    async def broken_done(entry: RepairEntry) -> None:
        raise ConnectionError("log down")

    log.done = broken_done  # type: ignore[method-assign]
    assert await repairer.run_once() == (0, 1)
    assert len(log.entries) == 1  # repaired again later; harmless
    assert sample(registry, "shadowproxy_repair_log_errors_total") == 1


def test_postgres_log_needs_a_dsn() -> None:
    with pytest.raises(ConfigError, match=r"repair\.dsn"):
        open_repair_log(RepairConfig(kind="postgres"))


def test_config_rejects_unknown_keys_and_bad_tables() -> None:
    with pytest.raises(ValueError, match="extra"):
        RepairConfig.model_validate({"kind": "redis", "nope": 1})
    with pytest.raises(ValueError, match="table"):
        RepairConfig(table='x"; DROP TABLE users; --')
