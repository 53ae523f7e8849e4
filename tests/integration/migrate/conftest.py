"""A users table in a real PostgreSQL and a real DynamoDB endpoint (moto's server), every
field type, for the backfill and verify commands; and the records to fill it with."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.migrate.job import Job, open_job
from proxy.resources.admin_ops import init_stores
from proxy.settings import Settings, settings_from_mapping
from tests.integration.conftest import PG_DSN, REDIS_URL
from tests.integration.store.conftest import USERS

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Tables:
    settings: Settings
    raw: dict[str, Any]
    table: str
    tmp: Path

    def job(self, **kw: Any) -> Any:
        return open_job(self.settings, "users", source=None, target=None, env=ENV, **kw)


def raw_config(moto_endpoint: str, table: str, prefix: str, tmp: Path) -> dict[str, Any]:
    resource = copy.deepcopy(USERS)
    del resource["name"]
    resource["stores"] = {
        "postgres": {"backend": "pg", "table": table},
        "dynamodb": {"backend": "ddb", "table": table},
    }
    resource["flags"] = {"read_from": "postgres", "write_to": ["postgres", "dynamodb"]}
    resource["new_store"] = "dynamodb"
    resource["write_verify"] = 0
    return {
        "backends": {
            "pg": {"kind": "postgres", "dsn": PG_DSN, "pool_max": 8, "scan_page": 500},
            "ddb": {
                "kind": "dynamodb",
                "endpoint_url": moto_endpoint,
                "region": "us-east-1",
                "scan_page": 500,
            },
        },
        "resources": {"users": resource},
        "sink": {"kind": "jsonl", "path": str(tmp / "mismatches.jsonl")},
        "flags": {"kind": "memory", "audit_path": str(tmp / "audit.jsonl")},
        "repair": {
            "kind": "redis",
            "url": REDIS_URL,
            "stream": f"{prefix}:repair",
            "retry_after_seconds": 0.2,
            "late_write_seconds": 0.5,
        },
        "readiness": {"store": "redis", "redis_url": REDIS_URL, "prefix": f"{prefix}:readiness"},
    }


@pytest.fixture
async def tables(moto_endpoint: str, prefix: str, tmp_path: Path) -> AsyncIterator[Tables]:
    table = f"users_{uuid.uuid4().hex[:10]}"
    raw = raw_config(moto_endpoint, table, prefix, tmp_path)
    settings = settings_from_mapping(raw, env=ENV)
    await init_stores(settings, ENV)
    yield Tables(settings, raw, table, tmp_path)
    async with open_job(settings, "users", source=None, target=None, env=ENV) as job:
        async with job.source_store._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        await job.target_store._client.call("DeleteTable", {"TableName": table})  # type: ignore[attr-defined]


def record(i: int, rng: random.Random) -> dict[str, Any]:
    """A user with edge values by turns: empty strings, unicode, exact large numbers, nulls,
    empty sets, deep JSON."""
    deep: Any = {"leaf": i}
    for depth in range(i % 12):
        deep = {f"d{depth}": [deep, None, "x" * (depth % 3)]}
    edge = i % 7
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "email": f"user{i}@example.com",
        "first_name": ["", "Zoë", "名前", "O'Brien", None, "a" * 300, "Ünïcødé 🎉"][edge],
        "last_name": f"Last{i}",
        "is_active": i % 2 == 0,
        "created_at": f"2024-0{1 + i % 9}-1{i % 10}T12:3{i % 10}:00.{i % 1000:03d}000Z",
        "updated_at": None if edge == 3 else "2025-01-02T03:04:05Z",
        "birthday": None if edge == 4 else f"19{50 + i % 50}-0{1 + i % 9}-2{i % 8}",
        "preferences": None
        if edge == 5
        else {"deep": deep, "n": Decimal("0.12345678901234567890")},
        "roles": [] if edge == 2 else ["user", *(["admin"] if i % 3 == 0 else [])],
        "tags": [] if edge == 1 else ["a", "b", str(i)],
        "balance": [
            Decimal("12345678901234567890.123456789012345678"),
            Decimal("-0.000001"),
            None,
            Decimal("0"),
            Decimal(i),
            Decimal("1E+20"),
            Decimal("99.99"),
        ][edge],
        "login_count": [2**63 - 1, -(2**63), 0, None, i, 1, 42][edge],
        "score": [0.1, -1.5e100, None, 0.0, float(i), 3.25, 1e-100][edge],
    }


async def fill(job: Job, count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` valid records in the source (PostgreSQL), in batches; returns them."""
    rng = random.Random(seed)
    schema = job.parts.schema
    records = [schema.validate(record(i, rng), partial=False) for i in range(count)]
    for start in range(0, count, 1000):
        results = await job.source_store.batch_put(records[start : start + 1000])
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return records
