"""The JSONL and in-memory audit logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.flags.audit import AuditEntry, FileAuditLog, MemoryAuditLog, actor_kind


def entry(i: int, target: str = "users", **kw: object) -> AuditEntry:
    fields: dict[str, object] = {
        "time": 1000.0 + i,
        "actor": "cli:alice",
        "target": target,
        "flag": "read_from",
        "old": "postgres",
        "new": "dynamodb",
        "reason": f"change {i}",
        "forced": False,
    }
    fields.update(kw)
    return AuditEntry(**fields)  # type: ignore[arg-type]


async def test_file_log_newest_first_and_filtered(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    assert await log.history(10) == []  # no file yet
    for i in range(5):
        await log.append(entry(i, target="users" if i % 2 == 0 else "users-get"))
    history = await log.history(10)
    assert [e.reason for e in history] == [f"change {i}" for i in (4, 3, 2, 1, 0)]
    assert [e.reason for e in await log.history(2)] == ["change 4", "change 3"]
    assert [e.reason for e in await log.history(10, target="users-get")] == ["change 3", "change 1"]
    assert await log.history(0) == []
    await log.close()


async def test_file_log_round_trips_values(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl")
    e = entry(1, flag="write_to", old=["postgres", "dynamodb"], new=["dynamodb"], forced=True)
    await log.append(e)
    assert await log.history(1) == [e]


async def test_file_log_appends_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(entry(0).to_json() + b"\n" + b'{"time": 1, "act')  # a torn last line
    log = FileAuditLog(path)
    await log.append(entry(1))  # starts a new line after the torn bytes
    await log.append(entry(2))
    reasons = [e.reason for e in await log.history(10)]
    assert reasons == ["change 2", "change 1", "change 0"]


async def test_file_log_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [FileAuditLog(path) for _ in range(4)]
    await asyncio.gather(*(logs[i % 4].append(entry(i)) for i in range(40)))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 40
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in lines)
    assert len(await logs[0].history(100)) == 40


async def test_memory_log() -> None:
    log = MemoryAuditLog(maxlen=3)
    for i in range(5):
        await log.append(entry(i))
    assert [e.reason for e in await log.history(10)] == ["change 4", "change 3", "change 2"]
    assert await log.history(10, target="other") == []


def test_actor_kinds() -> None:
    assert actor_kind("cli:alice") == "cli"
    assert actor_kind("admin:ops-token") == "admin"
    assert actor_kind("config") == "config"
    assert actor_kind("guardrail") == "guardrail"
    assert actor_kind("restore") == "restore"
    assert actor_kind("mallory") == "other"
    assert entry(0).actor_kind == "cli"
