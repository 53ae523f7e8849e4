"""From Settings to the initial snapshot, the topology and a store."""

from __future__ import annotations

from pathlib import Path

from proxy.flags.audit import FileAuditLog
from proxy.flags.config import FlagStoreConfig
from proxy.flags.model import ResourceFlagState, RouteFlagState
from proxy.flags.redis_store import RedisFlagStore
from proxy.flags.setup import initial_snapshot, make_flag_store, topology_from_settings
from proxy.flags.store import MemoryFlagStore
from proxy.settings import load_settings

CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_store_mode_config() -> None:
    settings = load_settings(CONFIG / "users.yaml", env={})
    snap = initial_snapshot(settings)
    assert snap.version == 0
    assert snap.resources == {
        "users": ResourceFlagState("postgres", ("postgres", "dynamodb"), 1.0, 0.0)
    }
    topology = topology_from_settings(settings)
    assert topology.resources["users"].stores == {"postgres", "dynamodb"}
    assert topology.resources["users"].new_store == "dynamodb"
    assert topology_from_settings(settings, {"users": None}).resources["users"].new_store is None
    for target, state in snap.resources.items():
        topology.validate(target, state)


def test_http_config() -> None:
    settings = load_settings(CONFIG / "http-dropin.yaml", env={})
    snap = initial_snapshot(settings)
    assert snap.routes["users-get"] == RouteFlagState("legacy", "candidate", 1.0)
    topology = topology_from_settings(settings)
    assert topology.backends == {"legacy", "candidate"}
    for target, route in snap.routes.items():
        topology.validate(target, route)


async def test_make_flag_store(tmp_path: Path) -> None:
    settings = load_settings(CONFIG / "users.yaml", env={})
    memory = make_flag_store(settings, FlagStoreConfig(audit_path=str(tmp_path / "a.jsonl")))
    assert isinstance(memory, MemoryFlagStore)
    await memory.start()
    assert len(await memory.history(10)) == 4
    assert isinstance(memory._audit, FileAuditLog)
    await memory.close()
    redis = make_flag_store(settings, FlagStoreConfig(kind="redis", prefix="never:started"))
    assert isinstance(redis, RedisFlagStore)
    assert redis.state_key == "never:started:state"
    await redis.close()
