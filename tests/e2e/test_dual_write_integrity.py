"""Dual writes across real ``shadowproxy serve`` processes sharing Redis (flags and repair
log), a real PostgreSQL and a DynamoDB endpoint in its own process (moto's server), under
concurrent load on a few hot keys; then both stores are read directly (asyncpg, botocore:
none of our codecs) and must hold the same records.

These are the tests behind the promise "every write lands in both stores or is repaired":
ordering across instances, in both directions of a flip, and SIGKILL in the middle."""

from __future__ import annotations

import asyncio
import copy
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import boto3
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ROOT, run_cli, shadowproxy, wait_http
from tests.integration.api.conftest import USERS, user
from tests.integration.conftest import PG_DSN, REDIS_URL
from tests.support.servers import free_port
from tests.support.tcpproxy import DelayedLink

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123456789"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
HOT_KEYS = 20
GRACE = 10
"""intent_grace_seconds: a dual write's primary call is cut at half of it (a 504), so it sits
above the stores' own 5 s timeouts and loaded writes are not cut."""


@dataclass
class Fleet:
    """N proxy processes over one config; the stores and Redis they share."""

    config: Path
    table: str
    moto_url: str
    stream: str
    processes: list[subprocess.Popen[bytes]]
    ports: list[tuple[int, int]] = field(default_factory=list)  # (listen, admin)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **AWS, "SHADOWPROXY_ADMIN_TOKEN": TOKEN}

    def start(self, index: int | None = None) -> None:
        """Start a new instance, or restart instance ``index`` on its ports."""
        if index is None:
            self.ports.append((free_port(), free_port()))
            self.procs.append(None)
            index = len(self.ports) - 1
        listen, admin = self.ports[index]
        env = {
            **self.env,
            "SHADOWPROXY__LISTEN__PORT": str(listen),
            "SHADOWPROXY__ADMIN__PORT": str(admin),
        }
        proc = subprocess.Popen(
            shadowproxy("serve", "-c", str(self.config)), cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.processes.append(proc)
        self.procs[index] = proc
        wait_http(f"http://127.0.0.1:{admin}/healthz", timeout=30)

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[index] = None

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{listen}" for listen, _ in self.ports]

    def admin_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index][1]}"

    def outcomes(
        self, metric: str = "shadowproxy_comparisons", label: str = "outcome"
    ) -> dict[str, float]:
        """shadowproxy_comparisons_total by outcome, summed over the live instances."""
        import urllib.request

        seen: dict[str, float] = {}
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            request = urllib.request.Request(
                self.admin_url(index) + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                text = r.read().decode()
            for family in text_string_to_metric_families(text):
                if family.name != metric:
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_total") and sample.value:
                        outcome = sample.labels[label]
                        seen[outcome] = seen.get(outcome, 0) + sample.value
        return seen

    def flags_set(self, assignment: str) -> None:
        result = run_cli(
            "flags", "set", "-c", str(self.config), "--admin-url", self.admin_url(),
            "users", assignment, "--reason", "e2e", "--force",
            env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def repair_backlog(self) -> int:
        """Intents, escalated and stream entries still in the shared repair log."""
        client = redis.Redis.from_url(REDIS_URL)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(f"{self.stream}:intents")
            pipe.zcard(f"{self.stream}:escalated")
            pipe.xlen(self.stream)
            pipe.xlen(f"{self.stream}:stuck")
            return int(sum(pipe.execute()))
        finally:
            client.close()

    def wait_drained(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.repair_backlog():
            assert time.monotonic() < deadline, f"repair log never drained: {self.repair_backlog()}"
            time.sleep(0.2)

    def differences(self) -> list[str]:
        """Records that differ between the stores, read without shadowproxy's code."""
        pg = asyncio.run(_pg_rows(self.table))
        ddb = _ddb_rows(self.moto_url, self.table)
        out = [f"only in PostgreSQL: {k} {pg[k]}" for k in pg.keys() - ddb.keys()]
        out += [f"only in DynamoDB: {k} {ddb[k]}" for k in ddb.keys() - pg.keys()]
        out += [f"{k}: {pg[k]} != {ddb[k]}" for k in pg.keys() & ddb.keys() if pg[k] != ddb[k]]
        return sorted(out)


async def _pg_rows(table: str) -> dict[str, tuple[Any, ...]]:
    conn = await asyncpg.connect(PG_DSN)
    try:
        rows = await conn.fetch(f'SELECT id::text, email, first_name, last_name FROM "{table}"')
    finally:
        await conn.close()
    return {r["id"]: (r["email"], r["first_name"], r["last_name"]) for r in rows}


def _ddb_rows(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", **_aws_kwargs())
    out: dict[str, tuple[Any, ...]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            text = [item.get(f, {}).get("S") for f in ("email", "first_name", "last_name")]
            out[item["id"]["S"]] = tuple(text)
    return out


def _aws_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def fleet(
    tmp_path: Path, moto_url: str, prefix: str, processes: list[subprocess.Popen[bytes]]
) -> Iterator[Fleet]:
    table = f"users_{uuid.uuid4().hex[:10]}"
    resource = copy.deepcopy(USERS)
    resource["stores"] = {
        "postgres": {"backend": "pg", "table": table},
        "dynamodb": {"backend": "ddb", "table": table},
    }
    resource["new_store"] = "dynamodb"
    resource["flags"] = {
        "read_from": "postgres", "write_to": ["postgres", "dynamodb"], "shadow_reads": 1.0,
    }  # fmt: skip
    resource["recheck_delay_seconds"] = 0.05
    resource["write_verify"] = 0.05
    resource["guardrail"] = {"enabled": False}
    stream = f"{prefix}:repair"
    cfg = {
        "logging": {"format": "json", "access_log": False},
        "backends": {
            "pg": {"kind": "postgres", "dsn": PG_DSN, "pool_max": 8},
            "ddb": {"kind": "dynamodb", "endpoint_url": moto_url, "region": "us-east-1"},
        },
        "resources": {"users": resource},
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        "flags": {"kind": "redis", "prefix": f"{prefix}:flags", "poll_seconds": 0.25},
        "repair": {
            "kind": "redis",
            "url": REDIS_URL,
            "stream": stream,
            "interval_seconds": 0.2,
            "retry_after_seconds": 0.5,
            "late_write_seconds": 2,
            "intent_grace_seconds": GRACE,
        },
    }
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(cfg))
    made = run_cli("init-stores", "-c", str(path), env=AWS)
    assert made.returncode == 0, made.stderr
    yield Fleet(path, table, moto_url, stream, processes)
    asyncio.run(_drop_pg(table))


async def _drop_pg(table: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        await conn.close()


@dataclass
class Load:
    """Clients writing (create, replace, update, delete, batch) and reading a few hot keys
    through every live instance; counts what the clients were told."""

    urls: list[str]
    seconds: float
    clients: int = 24
    reads: float = 0.3
    pause: float = 0.0  # between a client's requests: none, as fast as the instances answer
    fresh: bool = False  # each client writes keys of its own, most written once
    statuses: dict[str, int] = field(default_factory=dict)
    writes_acknowledged: int = 0
    errors: int = 0

    async def run(self) -> None:
        users = [user(i) for i in range(HOT_KEYS)]
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            deadline = time.monotonic() + self.seconds
            clients = [self._client(http, users, c, deadline) for c in range(self.clients)]
            await asyncio.gather(*clients)

    async def _client(
        self, http: aiohttp.ClientSession, users: list[dict[str, Any]], c: int, deadline: float
    ) -> None:
        rng = random.Random(c)
        n = 0
        own: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            n += 1
            await asyncio.sleep(rng.uniform(0, 2 * self.pause))
            url = rng.choice(self.urls)
            u = rng.choice(users)
            mark = f"c{c}-{n}"
            roll = rng.random()
            if self.fresh:
                # A write lost between the stores stays visible: no later write of the key
                # comes to cover it (hot keys are rewritten whole every few milliseconds).
                if own and roll < 0.3:
                    v = rng.choice(own)
                    method, path, body = "PATCH", f"/users/{v['id']}", {"last_name": mark}
                elif own and roll < 0.4:
                    v = own.pop(rng.randrange(len(own)))
                    method, path, body = "DELETE", f"/users/{v['id']}", None
                else:
                    v = user(100_000 + c * 100_000 + n, first_name=mark)
                    own.append(v)
                    method, path, body = "POST", "/users", v
            elif roll < self.reads:
                method, path, body = "GET", f"/users/{u['id']}", None
            else:
                method, path, body = rng.choice(
                    [
                        ("PUT", f"/users/{u['id']}", {**u, "first_name": mark, "last_name": mark}),
                        ("PATCH", f"/users/{u['id']}", {"first_name": mark}),
                        ("PATCH", f"/users/{u['id']}", {"last_name": mark}),
                        ("DELETE", f"/users/{u['id']}", None),
                        ("POST", "/users", {**u, "first_name": mark}),
                        (
                            "POST",
                            "/users/batch",
                            {
                                "items": [
                                    {**v, "first_name": mark, "last_name": mark}
                                    for v in rng.sample(users, 3)
                                ]
                            },
                        ),
                    ]
                )
            try:
                async with http.request(method, url + path, json=body) as r:
                    await r.read()
                    key = f"{method} {r.status}"
                    self.statuses[key] = self.statuses.get(key, 0) + 1
                    assert r.status < 500, f"{method} {path}: {r.status}"
                    if method != "GET" and r.status < 300:
                        self.writes_acknowledged += 1
            except (TimeoutError, aiohttp.ClientError):
                self.errors += 1  # an instance being killed: the write may or may not be in


def _run(load: Load) -> Load:
    asyncio.run(load.run())
    return load


# Its own bounds (two 20 s loads, each drain up to 90 s) are longer than the default 120 s.
@pytest.mark.timeout(300)
def test_three_instances_on_hot_keys_leave_both_stores_equal_in_both_directions(
    fleet: Fleet,
) -> None:
    for _ in range(3):
        fleet.start()
    load = _run(Load(fleet.urls(), seconds=20))
    print("PostgreSQL primary:", load.statuses, "errors", load.errors)
    assert load.errors == 0
    assert load.writes_acknowledged > 1000, load.statuses
    fleet.wait_drained()
    assert fleet.differences() == []
    seen = fleet.outcomes()
    print("outcomes:", seen)
    print("dual write failures:", fleet.outcomes("shadowproxy_dual_write_failures", "operation"))
    print("repairs:", fleet.outcomes("shadowproxy_repairs", "result"))
    print("append failures:", fleet.outcomes("shadowproxy_repair_append_failures", "resource"))
    assert seen.get("match", 0) > 100 and "mismatch" not in seen, seen

    fleet.flags_set("read_from=dynamodb")  # DynamoDB primary, PostgreSQL secondary
    time.sleep(1.0)  # every instance polls the flag store at 0.25 s
    before = fleet.outcomes()
    load = _run(Load(fleet.urls(), seconds=20))
    print("DynamoDB primary:", load.statuses, "errors", load.errors)
    # moto as the primary answers every client write itself: fewer writes, same contention
    assert load.errors == 0 and load.writes_acknowledged > 300, load.statuses
    fleet.wait_drained()
    assert fleet.differences() == []
    after = fleet.outcomes()
    assert after.get("match", 0) > before.get("match", 0)
    assert "mismatch" not in after, after


def test_sigkill_during_writes_loses_nothing_after_reconcile(fleet: Fleet) -> None:
    """One of two instances is killed mid-load (twice) and restarted; writes between the two
    stores at that moment are left as intents, which fall due and are repaired.

    The proxies reach DynamoDB through a link that delivers each request 30 ms late and drops
    it if its sender dies meanwhile, so a kill lands between the two writes of several of
    the killed instance's writes (without intents they are lost: the test fails on a proxy
    that logs the key only after a failed second write)."""
    url = urlparse(fleet.moto_url)
    link = DelayedLink(url.hostname or "127.0.0.1", url.port or 80, delay=0.03).start()
    try:
        cfg = yaml.safe_load(fleet.config.read_text())
        cfg["backends"]["ddb"]["endpoint_url"] = link.url
        fleet.config.write_text(yaml.safe_dump(cfg))
        _kill_twice_then_reconcile(fleet)
    finally:
        link.stop()


def _kill_twice_then_reconcile(fleet: Fleet) -> None:
    fleet.start()
    fleet.start()
    total = Load(fleet.urls(), seconds=0, reads=0.0)
    rounds = 0
    # At least two rounds, each with a kill; more on a slow machine until 2,000 writes were
    # acknowledged (a count, not a speed: the rounds are what is bounded).
    while rounds < 2 or (total.writes_acknowledged < 2000 and rounds < 8):
        rounds += 1
        load = Load(fleet.urls(), seconds=8, reads=0.0, clients=16, pause=0.02, fresh=True)

        async def load_then_kill(load: Load = load) -> None:
            async def kill_later() -> None:
                await asyncio.sleep(3)
                fleet.kill(1)  # SIGKILL: no shutdown hooks, in-flight writes cut anywhere

            await asyncio.gather(load.run(), kill_later())

        asyncio.run(load_then_kill())
        total.writes_acknowledged += load.writes_acknowledged
        total.errors += load.errors
        fleet.start(1)
    print("acknowledged writes:", total.writes_acknowledged, "cut:", total.errors)
    assert total.writes_acknowledged >= 2000
    time.sleep(GRACE + 0.5)  # the dead writer's intents fall due
    deadline = time.monotonic() + 90
    while True:
        done = run_cli("reconcile", "-c", str(fleet.config), env=AWS)
        assert done.returncode == 0, done.stderr
        if fleet.repair_backlog() == 0:
            break
        assert time.monotonic() < deadline, done.stdout
        time.sleep(0.5)
    assert fleet.differences() == []
