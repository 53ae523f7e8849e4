"""The guardrail across two real ``shadowproxy serve`` processes sharing Redis (flags and
readiness), a real PostgreSQL and a DynamoDB endpoint (moto's server): a 50% canary whose new
store differs is rolled back by the reads of both instances together, when neither
instance's own reads reach ``min_comparisons``."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import yaml

from proxy.flags import sticky_share
from tests.e2e.conftest import ROOT, run_cli, shadowproxy, wait_http
from tests.integration.api.conftest import USERS, user
from tests.integration.conftest import PG_DSN, REDIS_URL
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

TOKEN = "e2e-guardrail-token"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
MIN_COMPARISONS = 40
PER_INSTANCE = 30  # under MIN_COMPARISONS; both together are over it


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def config(tmp_path: Path, moto_url: str, prefix: str, table: str) -> Path:
    resource = copy.deepcopy(USERS)
    resource["stores"] = {
        "postgres": {"backend": "pg", "table": table},
        "dynamodb": {"backend": "ddb", "table": table},
    }
    resource.update(
        new_store="dynamodb",
        flags={"read_from": "postgres", "write_to": ["postgres", "dynamodb"], "shadow_reads": 1.0},
        recheck_delay_seconds=0.02,
        write_verify=0,
        guardrail={"watch_seconds": 300, "min_comparisons": MIN_COMPARISONS,
                   "max_mismatch_rate": 0.05, "max_primary_error_rate": 0.5},
    )  # fmt: skip
    cfg = {
        "logging": {"format": "json", "access_log": False},
        "backends": {
            "pg": {"kind": "postgres", "dsn": PG_DSN, "pool_max": 4},
            "ddb": {"kind": "dynamodb", "endpoint_url": moto_url, "region": "us-east-1"},
        },
        "resources": {"users": resource},
        "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        "flags": {"kind": "redis", "prefix": f"{prefix}:flags", "poll_seconds": 0.25},
        "readiness": {"store": "redis", "redis_url": REDIS_URL, "prefix": f"{prefix}:readiness",
                      "flush_interval_seconds": 0.2},
    }  # fmt: skip
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def drift_dynamodb(moto_url: str, table: str, keys: list[str]) -> None:
    """The new store's copy differs from the old store's in every record."""
    client = boto3.client(
        "dynamodb", endpoint_url=moto_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    for key in keys:
        client.update_item(
            TableName=table, Key={"id": {"S": key}}, UpdateExpression="SET last_name = :v",
            ExpressionAttributeValues={":v": {"S": "from-dynamodb"}},
        )  # fmt: skip


def fleet_counts(prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        watch = client.hget(f"{prefix}:readiness:guardrail:users", "id")
        if watch is None:
            return {}
        counts = client.hgetall(f"{prefix}:readiness:guardrail:users:{watch.decode()}")
        return {k.decode(): int(v) for k, v in counts.items()}
    finally:
        client.close()


def test_two_instances_together_roll_a_mismatching_canary_back(
    tmp_path: Path, moto_url: str, prefix: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    table = f"users_{uuid.uuid4().hex[:10]}"
    path = config(tmp_path, moto_url, prefix, table)
    made = run_cli("init-stores", "-c", str(path), env=AWS)
    assert made.returncode == 0, made.stderr
    ports = [(free_port(), free_port()) for _ in range(2)]
    for listen, admin in ports:
        env = {
            **os.environ,
            **AWS,
            "SHADOWPROXY_ADMIN_TOKEN": TOKEN,
            "SHADOWPROXY__LISTEN__PORT": str(listen),
            "SHADOWPROXY__ADMIN__PORT": str(admin),
        }
        command = shadowproxy("serve", "-c", str(path))
        quiet = subprocess.DEVNULL
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=quiet, stderr=quiet))
    for _, admin in ports:
        wait_http(f"http://127.0.0.1:{admin}/healthz", timeout=30)
    proxies = [f"http://127.0.0.1:{listen}" for listen, _ in ports]
    admins = [f"http://127.0.0.1:{admin}" for _, admin in ports]

    users = [user(i) for i in range(300)]
    call(proxies[0] + "/users/batch", "POST", {"items": users})
    keys = [u["id"] for u in users]
    drift_dynamodb(moto_url, table, keys)
    canary = [k for k in keys if sticky_share(k, 0.5, "users")]  # served by the new store
    assert len(canary) >= 2 * PER_INSTANCE

    flipped = run_cli(
        "flags", "set", "-c", str(path), "--admin-url", admins[0], "users",
        "new_store_read_fraction=0.5", "--force", "--reason", "canary 50%",
        env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    assert flipped.returncode == 0, flipped.stderr
    deadline = time.monotonic() + 5
    while call(admins[1] + "/flags")["flags"]["users.new_store_read_fraction"] != 0.5:
        assert time.monotonic() < deadline, "the second instance never saw the canary"
        time.sleep(0.05)

    def fraction(admin: str) -> float:
        return float(call(admin + "/flags")["flags"]["users.new_store_read_fraction"])

    for key in canary[:PER_INSTANCE]:  # the first instance alone: under min_comparisons
        assert call(f"{proxies[0]}/users/{key}")["last_name"] == "from-dynamodb"
    deadline = time.monotonic() + 10
    while fleet_counts(prefix).get("comparisons", 0) < PER_INSTANCE:
        assert time.monotonic() < deadline, fleet_counts(prefix)
        time.sleep(0.1)
    assert fleet_counts(prefix) == {
        "comparisons": PER_INSTANCE,
        "mismatches": PER_INSTANCE,
        "primary_errors": 0,
    }
    assert fraction(admins[0]) == 0.5  # one instance's reads judged alone: no rollback

    for key in canary[PER_INSTANCE : 2 * PER_INSTANCE]:  # the second instance's add up
        call(f"{proxies[1]}/users/{key}")
    deadline = time.monotonic() + 15
    while fraction(admins[0]) != 0.0 or fraction(admins[1]) != 0.0:
        assert time.monotonic() < deadline, fleet_counts(prefix)
        time.sleep(0.1)

    history = call(admins[1] + "/flags/history?limit=10")["history"]
    rollbacks = [e for e in history if e["actor"] == "guardrail"]
    assert len(rollbacks) == 1, history
    [rollback] = rollbacks
    assert (rollback["flag"], rollback["old"], rollback["new"], rollback["forced"]) == (
        "new_store_read_fraction",
        0.5,
        0.0,
        True,
    )
    assert (
        "canary (new_store_read_fraction 0.5) dynamodb mismatch rate 100.00%"
        in (rollback["reason"])
    )
    assert "on every instance" in rollback["reason"]
    print("rolled back:", rollback["reason"])
    for key in canary[:5]:  # every key reads the old store again, on both instances
        for url in proxies:
            assert call(f"{url}/users/{key}")["last_name"] == "Test"
