"""Scenario e: DynamoDB (the secondary of the dual writes) is cut off in the middle of 5,000
writes and brought back. Every write is acknowledged from the primary; the ones the
secondary missed are in the repair log, and after ``shadowproxy reconcile``,
``shadowproxy verify`` over every key written finds no difference."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.faults.client import closed_loop, metric
from tests.faults.relay import Mode
from tests.faults.store import new_user, put, reconcile_until_drained, verify_keys
from tests.faults.targets import StoreTarget

pytestmark = pytest.mark.needs("dynamodb", "store_config")

CLIENTS = 16


@pytest.fixture
def restore_dynamodb(store_target: StoreTarget) -> Iterator[None]:
    yield
    assert store_target.dynamodb is not None
    store_target.dynamodb.set(Mode.PASS)


async def test_dynamodb_cut_during_dual_writes_then_reconcile_verifies_clean(
    store_target: StoreTarget,
    http: aiohttp.ClientSession,
    pytestconfig: pytest.Config,
    restore_dynamodb: None,
) -> None:
    target = store_target
    relay = target.dynamodb
    assert relay is not None
    count = pytestconfig.getoption("fault_writes")
    cut_at, back_at = count // 5, count * 3 // 5
    records = [new_user(f"dynamodb-{i}") for i in range(count)]
    failures_before = await metric(
        http, target.admin_url, "shadowproxy_dual_write_failures_total", resource=target.resource
    )

    async def one(i: int) -> str | None:
        if i == cut_at:
            await asyncio.to_thread(relay.set, Mode.CUT)
        elif i == back_at:
            await asyncio.to_thread(relay.set, Mode.PASS)
        status = await put(http, target, records[i])
        return None if status in (200, 201) else f"PUT {records[i]['id']}: {status}"

    result = await closed_loop(count, CLIENTS, one)
    assert result.failures == [], f"{len(result.failures)} writes failed: {result.failures[:3]}"
    failures = await metric(
        http, target.admin_url, "shadowproxy_dual_write_failures_total", resource=target.resource
    )
    print(f"{count} writes, {failures - failures_before:.0f} secondary writes failed")
    assert failures > failures_before, "no secondary write failed: the cut was not felt"

    reconciled = await asyncio.to_thread(reconcile_until_drained, target)
    print(reconciled)
    verified = await asyncio.to_thread(verify_keys, target, [r["id"] for r in records], "ddb")
    assert verified.returncode == 0, f"verify: {verified.stdout}{verified.stderr}"
