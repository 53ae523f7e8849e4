"""The triage page of a store-mode proxy (PostgreSQL and a DynamoDB endpoint): the resource's
flags, both its verdicts (flip reads, stop old-store writes), its counters, and a store
divergence in a sensitive field shown side by side, redacted, to the token holder only."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.integration.api.conftest import StoreProxyFactory, outcomes, stores, user

pytestmark = pytest.mark.integration

TOKEN = "store-triage-t0ken"
ENV = {"SHADOWPROXY_ADMIN_TOKEN": TOKEN, "SHADOWPROXY_REDACTION_KEY": "store-triage-key"}
PLANTED = "planted.in.dynamodb@example.com"


async def test_a_resource_on_the_triage_page(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(env=ENV)
    body = user(7, email="original.secret@example.com")
    async with http.put(f"{proxy.url}/users/{body['id']}", json=body) as r:
        assert r.status in (200, 201), await r.text()
    ddb: Any = stores(proxy)["dynamodb"]
    await proxy.wait_for(lambda: proxy.apps.resources.services["users"].writes.pending == 0)
    await ddb._call(
        "UpdateItem",
        TableName=ddb.table,
        Key={"id": {"S": body["id"]}},
        UpdateExpression="SET #e = :v",
        ExpressionAttributeNames={"#e": "email"},
        ExpressionAttributeValues={":v": {"S": PLANTED}},
    )
    async with http.get(f"{proxy.url}/users/{body['id']}") as r:
        assert r.status == 200
    await proxy.wait_for(lambda: outcomes(proxy).get("mismatch", 0) >= 1, timeout=30)

    async with http.get(proxy.admin_url + "/") as r:
        assert r.status == 200
        summary = await r.text()
    assert 'data-target="users" data-kind="resource"' in summary
    assert "<code>postgres, dynamodb</code>" in summary  # write_to
    assert 'data-target="users" data-decision="flip_reads" data-ready="false"' in summary
    assert 'data-target="users" data-decision="stop_old_writes" data-ready="false"' in summary
    assert "reads_on_new_store" in summary and "repair_log" in summary
    assert 'id="mismatches"' not in summary

    async with http.get(proxy.admin_url + "/?route=users&field=email", headers={
        "Authorization": f"Bearer {TOKEN}"
    }) as r:  # fmt: skip
        assert r.status == 200
        records = await r.text()
    assert records.count('<article class="record" data-route="users"') == 1
    assert "primary · postgres" in records and "shadow · dynamodb" in records
    assert 'class="difference hit" data-path="email"' in records
    for html in (summary, records):
        for secret in (TOKEN, PLANTED, "original.secret@example.com"):
            assert secret not in html
