"""MemoryFlagStore: set -> audit + listeners; refusals leave state and audit untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.flags.audit import FileAuditLog, MemoryAuditLog
from proxy.flags.metrics import FlagMetrics
from proxy.flags.model import (
    FlagError,
    FlagSnapshot,
    FlagState,
    InvalidFlagValue,
    UnknownFlag,
    UnsafeFlip,
)
from proxy.flags.store import FlagChange, MemoryFlagStore
from proxy.flags.topology import FlagTopology


class NotReady(Exception):
    pass


@pytest.fixture
async def store(snapshot: FlagSnapshot) -> MemoryFlagStore:
    store = MemoryFlagStore(snapshot, MemoryAuditLog(), audit_config_defaults=False)
    await store.start()
    return store


async def test_set_changes_audits_and_notifies(store: MemoryFlagStore) -> None:
    changes: list[FlagChange] = []
    store.on_change(changes.append)
    entry = await store.set(
        "users", "read_from", "dynamodb", actor="cli:alice", reason="readiness green"
    )
    assert (entry.actor, entry.target, entry.flag, entry.old, entry.new, entry.reason) == (
        "cli:alice",
        "users",
        "read_from",
        "postgres",
        "dynamodb",
        "readiness green",
    )
    assert not entry.forced
    snap = store.snapshot()
    assert snap.version == 1
    assert snap.resources["users"].read_from == "dynamodb"
    assert await store.history(10) == [entry]
    assert len(changes) == 1
    assert changes[0].entries == (entry,)
    assert changes[0].changed == [("users", "read_from", "postgres", "dynamodb")]
    assert store.healthy and store.last_error is None


async def test_write_to_as_a_list_and_a_string(store: MemoryFlagStore) -> None:
    await store.set("users", "write_to", ["postgres"], actor="admin:ops", reason="")
    e = await store.set("users", "write_to", "postgres,dynamodb", actor="admin:ops", reason="")
    assert (e.old, e.new) == (["postgres"], ["postgres", "dynamodb"])
    assert store.snapshot().version == 2


@pytest.mark.parametrize(
    ("target", "flag", "value", "error", "message"),
    [
        ("users", "write_to", "dynamodb", UnsafeFlip, "is not in write_to"),
        ("users", "write_to", "", UnsafeFlip, "write_to is empty"),
        ("users", "read_from", "mysql", UnsafeFlip, "unknown store 'mysql'"),
        ("users", "shadow_reads", "2", UnsafeFlip, "between 0 and 1"),
        ("users", "shadow_reads", "lots", InvalidFlagValue, "expected a number"),
        ("users-get", "shadow", "legacy", UnsafeFlip, "cannot shadow itself"),
        ("users-get", "primary", "other", UnsafeFlip, "unknown backend"),
        ("orders", "read_from", "postgres", UnknownFlag, "unknown resource 'orders'"),
        ("users", "colour", "red", UnknownFlag, "unknown flag"),
    ],
)
async def test_refused_flips_leave_state_and_audit_untouched(
    store: MemoryFlagStore,
    target: str,
    flag: str,
    value: str,
    error: type[Exception],
    message: str,
) -> None:
    changes: list[FlagChange] = []
    store.on_change(changes.append)
    before = store.snapshot()
    with pytest.raises(error, match=message):
        await store.set(target, flag, value, actor="cli:alice", reason="try")
    assert store.snapshot() is before
    assert await store.history(10) == []
    assert changes == []


async def test_new_store_fraction_refused_when_the_new_store_gets_no_writes(
    store: MemoryFlagStore,
) -> None:
    await store.set("users", "new_store_read_fraction", "0.1", actor="cli:a", reason="canary")
    with pytest.raises(UnsafeFlip, match="is not in write_to"):
        await store.set("users", "write_to", "postgres", actor="cli:a", reason="")
    await store.set("users", "new_store_read_fraction", 0, actor="cli:a", reason="")
    await store.set("users", "write_to", "postgres", actor="cli:a", reason="")
    with pytest.raises(UnsafeFlip, match="new store 'dynamodb', which is not in write_to"):
        await store.set("users", "new_store_read_fraction", "0.1", actor="cli:a", reason="")


async def test_check_hook_refuses_and_force_skips_it(store: MemoryFlagStore) -> None:
    seen: list[tuple[str, FlagState, FlagState]] = []

    async def not_ready(target: str, old: FlagState, new: FlagState) -> None:
        seen.append((target, old, new))
        raise NotReady("readiness fails: 12 comparisons, need 1000")

    with pytest.raises(NotReady, match="readiness fails"):
        await store.set("users", "read_from", "dynamodb", actor="cli:a", reason="", check=not_ready)
    assert store.snapshot().version == 0
    assert await store.history(10) == []
    assert seen[0][0] == "users"
    assert seen[0][2].read_from == "dynamodb"  # type: ignore[union-attr]

    with pytest.raises(FlagError, match="forced flag change needs a reason"):
        await store.set(
            "users",
            "read_from",
            "dynamodb",
            actor="cli:a",
            reason=" ",
            force=True,
            check=not_ready,
        )
    entry = await store.set(
        "users",
        "read_from",
        "dynamodb",
        actor="cli:a",
        reason="incident 42",
        force=True,
        check=not_ready,
    )
    assert entry.forced
    assert len(seen) == 1  # forced: the check was not consulted
    assert (await store.history(1))[0].forced


async def test_force_never_overrides_safety(store: MemoryFlagStore) -> None:
    with pytest.raises(UnsafeFlip):
        await store.set("users", "write_to", "", actor="cli:a", reason="yolo", force=True)


async def test_setting_the_current_value_changes_nothing(store: MemoryFlagStore) -> None:
    changes: list[FlagChange] = []
    store.on_change(changes.append)
    entry = await store.set("users", "read_from", "postgres", actor="cli:a", reason="")
    assert entry.old == entry.new == "postgres"
    assert store.snapshot().version == 0
    assert await store.history(10) == []
    assert changes == []


async def test_actor_required(store: MemoryFlagStore) -> None:
    with pytest.raises(FlagError, match="needs an actor"):
        await store.set("users", "read_from", "dynamodb", actor="", reason="")


async def test_listener_failure_does_not_fail_the_change(
    store: MemoryFlagStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(change: FlagChange) -> None:
        raise RuntimeError("listener bug")

    calls: list[FlagChange] = []
    store.on_change(broken)
    off = store.on_change(calls.append)
    await store.set("users", "shadow_reads", "0.5", actor="cli:a", reason="")
    assert store.snapshot().resources["users"].shadow_reads == 0.5
    assert "flag change listener failed" in caplog.text
    off()
    await store.set("users", "shadow_reads", "0.25", actor="cli:a", reason="")
    assert len(calls) == 1


async def test_audit_failure_refuses_the_change(snapshot: FlagSnapshot, tmp_path: Path) -> None:
    store = MemoryFlagStore(
        snapshot,
        FileAuditLog(tmp_path / "missing-dir" / "audit.jsonl"),
        audit_config_defaults=False,
    )
    with pytest.raises(OSError):
        await store.set("users", "read_from", "dynamodb", actor="cli:a", reason="")
    assert store.snapshot() is snapshot


async def test_config_defaults_audited_at_start_only_when_they_differ(
    snapshot: FlagSnapshot, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    first = MemoryFlagStore(snapshot, FileAuditLog(path))
    await first.start()
    seeded = await first.history(100)
    assert len(seeded) == 7
    assert {e.actor for e in seeded} == {"config"}
    assert {(e.target, e.flag, e.old) for e in seeded} >= {("users", "read_from", None)}
    await first.set("users", "read_from", "dynamodb", actor="admin:ops", reason="flip")
    await first.close()

    second = MemoryFlagStore(snapshot, FileAuditLog(path))  # a restart: config wins again
    changes: list[FlagChange] = []
    second.on_change(changes.append)
    await second.start()
    newest = await second.history(100)
    assert len(newest) == 9
    assert (newest[0].actor, newest[0].flag, newest[0].old, newest[0].new) == (
        "config",
        "read_from",
        "dynamodb",
        "postgres",
    )
    assert changes[0].entries == (newest[0],)

    third = MemoryFlagStore(snapshot, FileAuditLog(path))
    await third.start()
    assert len(await third.history(100)) == 9  # nothing differs: nothing audited


async def test_topology_limits_the_names(snapshot: FlagSnapshot) -> None:
    from proxy.flags.topology import ResourceTopology

    topology = FlagTopology(
        resources={"users": ResourceTopology(frozenset({"postgres", "dynamodb", "spanner"}), None)},
        backends=frozenset({"legacy", "candidate", "v3"}),
    )
    store = MemoryFlagStore(snapshot, MemoryAuditLog(), topology=topology)
    await store.set("users", "write_to", "postgres,dynamodb,spanner", actor="cli:a", reason="")
    await store.set("users-get", "shadow", "v3", actor="cli:a", reason="")
    with pytest.raises(UnsafeFlip, match="no new store"):
        await store.set("users", "new_store_read_fraction", "0.5", actor="cli:a", reason="")


def test_inferred_topology(snapshot: FlagSnapshot) -> None:
    topology = FlagTopology.from_snapshot(snapshot)
    assert topology.resources["users"].stores == {"postgres", "dynamodb"}
    assert topology.resources["users"].new_store == "dynamodb"
    assert topology.backends == {"legacy", "candidate"}


async def test_metrics_follow_the_store(store: MemoryFlagStore) -> None:
    registry = CollectorRegistry()
    metrics = FlagMetrics.create(registry)
    metrics.attach(store)

    def state(target: str, flag: str, value: str) -> float | None:
        return registry.get_sample_value(
            "shadowproxy_flag_state", {"target": target, "flag": flag, "value": value}
        )

    assert state("users", "read_from", "postgres") == 1
    assert state("users", "write_to", "dynamodb") == 1
    assert state("users", "shadow_reads", "fraction") == 1.0
    assert state("users-get", "shadow", "candidate") == 1
    assert registry.get_sample_value("shadowproxy_flag_store_up") == 1
    zero = {"target": "users", "flag": "read_from", "actor_kind": "cli"}
    assert registry.get_sample_value("shadowproxy_flag_changes_total", zero) == 0

    await store.set("users", "read_from", "dynamodb", actor="cli:a", reason="")
    await store.set("users", "new_store_read_fraction", "0.3", actor="admin:ops", reason="")
    await store.set("users-get", "shadow", "none", actor="guardrail", reason="")
    assert state("users", "read_from", "postgres") == 0
    assert state("users", "read_from", "dynamodb") == 1
    assert state("users", "new_store_read_fraction", "fraction") == 0.3
    assert state("users-get", "shadow", "candidate") == 0
    assert state("users-get", "shadow", "none") == 1

    def changes(target: str, flag: str, kind: str) -> float | None:
        return registry.get_sample_value(
            "shadowproxy_flag_changes_total",
            {"target": target, "flag": flag, "actor_kind": kind},
        )

    assert changes("users", "read_from", "cli") == 1
    assert changes("users", "new_store_read_fraction", "admin") == 1
    assert changes("users-get", "shadow", "guardrail") == 1
