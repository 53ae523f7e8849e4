"""The store story (the default demo): the users table moving from PostgreSQL to DynamoDB.

An embedded DynamoDB endpoint, the local PostgreSQL (or an embedded one), a few thousand users
in both stores with four planted divergences, then reads and writes through the proxy; the
summary must show every planted divergence and nothing else."""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from proxy.demo.common import (
    embedded_config,
    fetch_report,
    running_proxy,
    serve_until,
    wait_for_shadows,
)
from proxy.demo.summary import render
from proxy.resources.admin_ops import init_stores
from proxy.resources.wiring import build_parts
from proxy.settings import Settings, settings_from_mapping
from proxy.store.embedded import start_moto_server

FIRST = ("Ada", "Grace", "Linus", "Ken", "Barbara", "Edsger", "Frances", "Dennis")
LAST = ("Lovelace", "Hopper", "Torvalds", "Thompson", "Liskov", "Dijkstra", "Allen")


@dataclass(frozen=True)
class Planted:
    key: str
    what: str
    field: str


def make_users(count: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    base = datetime(2023, 6, 1, tzinfo=UTC)
    users = []
    for i in range(count):
        created = base + timedelta(minutes=17 * i, microseconds=rng.randrange(1_000_000))
        users.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "email": f"user{i}@example.com",
                "first_name": rng.choice(FIRST),
                "last_name": rng.choice(LAST),
                "is_active": rng.random() > 0.1,
                "created_at": created.isoformat(),
                "updated_at": (created + timedelta(days=rng.randrange(90))).isoformat(),
                "preferences": {"theme": rng.choice(["dark", "light"]), "digest": i % 3 == 0},
                "roles": rng.sample(["admin", "editor", "viewer", "billing"], k=rng.randint(0, 3)),
            }
        )
    return users


async def local_postgres(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@asynccontextmanager
async def postgres_dsn(dsn: str, workdir: str) -> AsyncIterator[str]:
    """The configured PostgreSQL when it answers, else an embedded one (pgserver)."""
    if await local_postgres(dsn):
        yield dsn
        return
    try:
        pgserver = importlib.import_module("pgserver")
    except ImportError as e:
        raise SystemExit(
            f"no PostgreSQL answers on {dsn} and the embedded one is not installed: "
            "pip install 'shadowproxy[demo]' (or start PostgreSQL)"
        ) from e
    print("no local PostgreSQL answered; starting an embedded one (pgserver)", flush=True)
    server = await asyncio.to_thread(pgserver.get_server, os.path.join(workdir, "pg"), "stop")
    try:
        yield str(server.get_uri())
    finally:
        await asyncio.to_thread(server.cleanup)


def demo_settings(pg_dsn: str, dynamo_url: str, table: str, workdir: str) -> Settings:
    raw = embedded_config("demo.yaml")
    raw["backends"]["rds"]["dsn"] = pg_dsn
    raw["backends"]["dynamo"]["endpoint_url"] = dynamo_url
    for store in raw["resources"]["users"]["stores"].values():
        store["table"] = table
    raw["listen"]["port"] = 0
    raw["admin"]["port"] = 0
    raw["sink"] = {"kind": "jsonl", "path": os.path.join(workdir, "mismatches.jsonl")}
    raw["flags"] = {"kind": "memory", "audit_path": os.path.join(workdir, "flags-audit.jsonl")}
    return settings_from_mapping(raw, source="embedded demo config", env=os.environ)


async def seed(settings: Settings, users: list[dict[str, Any]]) -> list[Planted]:
    """Both stores get every user; then DynamoDB is made to differ in four records."""
    parts = build_parts(settings.resources["users"], settings)
    schema, pg, ddb = parts.schema, parts.stores["postgres"], parts.stores["dynamodb"]
    records = [schema.validate(u, partial=False) for u in users]
    async with AsyncExitStack() as stack:
        for store in (pg, ddb):
            await store.open()
            stack.push_async_callback(store.close)
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            await asyncio.gather(pg.batch_put(chunk), ddb.batch_put(chunk))
        changed, missing, drifted, shifted = records[7], records[13], records[21], records[42]
        await ddb.put({**changed, "email": "someone.else@example.org"})
        await ddb.delete(missing["id"])
        await ddb.put({**shifted, "created_at": shifted["created_at"] + timedelta(hours=1)})
        # A type drift only a raw write can make: a boolean stored as the string "true".
        item = ddb._encode(drifted)  # type: ignore[attr-defined]
        item["is_active"] = {"S": str(drifted["is_active"]).lower()}
        await ddb._call("PutItem", TableName=ddb.table, Item=item)  # type: ignore[attr-defined]
    return [
        Planted(str(changed["id"]), "email changed", "email"),
        Planted(str(missing["id"]), "missing in DynamoDB", "$"),
        Planted(str(drifted["id"]), "is_active stored as a string", "is_active"),
        Planted(str(shifted["id"]), "created_at off by one hour", "created_at"),
    ]


async def drive(proxy_url: str, users: list[dict[str, Any]]) -> int:
    headers = {"X-Requester-ID": "demo-client"}
    sem = asyncio.Semaphore(32)
    sent = 0

    async def one(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> int:
        nonlocal sent
        async with sem, session.request(method, proxy_url + path, headers=headers, **kw) as r:
            await r.read()
            sent += 1
            return r.status

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, "GET", f"/users/{u['id']}") for u in users))
        await asyncio.gather(
            *(one(session, "GET", f"/users?email=user{i}@example.com") for i in range(100, 120)),
            *(one(session, "GET", f"/users?last_name={name}&limit=50") for name in LAST),
        )
        fresh = make_users(40, seed=99)
        for i, u in enumerate(fresh):
            u["email"] = f"new{i}@example.com"
        await asyncio.gather(*(one(session, "POST", "/users", json=u) for u in fresh))
        await asyncio.gather(
            *(
                one(session, "PATCH", f"/users/{u['id']}", json={"first_name": "Updated"})
                for u in users[200:240]
            ),
            *(one(session, "DELETE", f"/users/{u['id']}") for u in users[300:310]),
        )
        await one(session, "POST", "/users/batch", json={"items": make_users(100, seed=5)})
        # Read back what was written: dual writes leave nothing to report.
        await asyncio.gather(*(one(session, "GET", f"/users/{u['id']}") for u in fresh))
        await asyncio.gather(*(one(session, "GET", f"/users/{u['id']}") for u in users[200:240]))
    return sent


def verdict(planted: list[Planted], examples: list[dict[str, Any]]) -> list[str]:
    by_key = {p.key: p for p in planted}
    found: set[str] = set()
    unexpected = []
    for record in examples:
        text = record["path"] + " " + " ".join(d["path"] for d in record["differences"])
        keys = {k for k in by_key if k in text}
        if not keys:
            unexpected.append(record["path"])
        found |= keys
    lines = ["", "  planted divergences:"]
    for p in planted:
        mark = "found" if p.key in found else "MISSED"
        lines.append(f"    {mark:<6} {p.what:<32} users/{p.key}  (field {p.field})")
    lines.append(
        "  nothing else reported" if not unexpected else f"  UNEXPECTED mismatches: {unexpected}"
    )
    return lines


async def run_store_demo(*, duration: float | None, users: int, token: str) -> int:
    started = time.monotonic()
    table = f"shadowproxy_demo_{uuid.uuid4().hex[:8]}"
    moto, dynamo_url = start_moto_server()
    try:
        with tempfile.TemporaryDirectory(prefix="shadowproxy-demo-") as workdir:
            dsn = embedded_config("demo.yaml")["backends"]["rds"]["dsn"]
            async with postgres_dsn(os.environ.get("SHADOWPROXY_DEMO_PG_DSN", dsn), workdir) as pg:
                settings = demo_settings(pg, dynamo_url, table, workdir)
                try:
                    await init_stores(settings)
                    people = make_users(users)
                    planted = await seed(settings, people)
                    async with running_proxy(settings) as (proxy_url, admin_url, server):
                        sent = await drive(proxy_url, people)
                        await wait_for_shadows(admin_url)
                        families, examples = await fetch_report(admin_url, token, limit=200)
                        print(
                            f"{users} users in PostgreSQL and DynamoDB ({pg.split('@')[-1]}, "
                            f"{dynamo_url}); {sent} requests through the proxy"
                        )
                        urls = {
                            "proxy:": f"{proxy_url}/users/{planted[0].key}",
                            "triage:": f"{admin_url}/  (sign in with the token below: diffs)",
                            "metrics:": admin_url + "/metrics",
                            "mismatches:": f"{admin_url}/mismatches?limit=5  (header: "
                            f"Authorization: Bearer $SHADOWPROXY_ADMIN_TOKEN = {token})",
                        }
                        report = render(families, examples, urls)
                        print(report + "\n".join(verdict(planted, examples)), flush=True)
                        await serve_until(server, started, duration)
                finally:
                    await drop_pg_table(pg, table)
    finally:
        moto.stop()
    return 0


async def drop_pg_table(dsn: str, table: str) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()
