"""Store-mode helpers of the fault scenarios: records of the reference ``users`` resource
(docs/faults.md says what a deployment's resource must accept), idempotent writes, and
``shadowproxy reconcile`` / ``verify`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.faults.targets import ROOT, StoreTarget


def new_user(mark: str = "") -> dict[str, Any]:
    key = uuid.uuid4()
    return {
        "id": str(key),
        "email": f"fault-{key.hex[:16]}@example.com",
        "first_name": "Fault",
        "last_name": mark or "Suite",
        "is_active": True,
        "created_at": "2026-01-01T00:00:00Z",
    }


async def put(http: aiohttp.ClientSession, target: StoreTarget, record: dict[str, Any]) -> int:
    """PUT (an upsert: safe to send again) of ``record``; the status."""
    url = f"{target.proxy_url}/{target.resource}/{record['id']}"
    async with http.put(url, json=record) as r:
        await r.read()
        return r.status


async def get(http: aiohttp.ClientSession, target: StoreTarget, key: str) -> tuple[int, Any]:
    async with http.get(f"{target.proxy_url}/{target.resource}/{key}") as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None


def cli(target: StoreTarget, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert target.config is not None, "no --store-config"
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args[:1], "-c", str(target.config), *args[1:]],
        cwd=ROOT, env=target.cli_env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def reconcile_until_drained(target: StoreTarget, timeout: float = 180.0) -> str:
    """``shadowproxy reconcile`` again and again until the repair log is empty and no write is
    in flight (a dead writer's intents fall due after ``intent_grace_seconds``)."""
    deadline = time.monotonic() + timeout
    while True:
        done = cli(target, "reconcile")
        assert done.returncode == 0, f"reconcile exited {done.returncode}: {done.stderr}"
        if "repair log depth now 0" in done.stdout and "in flight" not in done.stdout:
            return done.stdout
        assert time.monotonic() < deadline, f"repair log not drained: {done.stdout}"
        time.sleep(1.0)


def verify_keys(
    target: StoreTarget, keys: list[str], name: str
) -> subprocess.CompletedProcess[str]:
    """``shadowproxy verify --keys`` over the keys the scenario wrote."""
    path: Path = target.keys_dir / f"{name}-keys.txt"
    path.write_text("".join(f"{k}\n" for k in keys))
    diffs = target.keys_dir / f"{name}-differences.jsonl"
    return cli(
        target, "verify", "--resource", target.resource, "--keys", str(path),
        "--output", str(diffs), "--recheck-delay", "0.2",
    )  # fmt: skip
