"""Store reads' shadow jobs are gathered (``shadow.gather_seconds``): reads by key that arrive
milliseconds apart, each in its own loop turn, still share one DynamoDB ``BatchGetItem``, and
every one is compared as if read alone."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping
from proxy.store.dynamodb import DynamoDBStore
from tests.integration.api.conftest import StoreProxyFactory, outcomes, stores, user

pytestmark = pytest.mark.integration


async def read_apart(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession, gather: float
) -> tuple[DynamoDBStore, dict[str, float]]:
    proxy = await store_proxy("postgres", shadow={"gather_seconds": gather})
    users = [user(i) for i in range(5)]
    for u in users:
        async with http.post(proxy.url + "/users", json=u) as r:
            assert r.status == 201
    ddb = stores(proxy)["dynamodb"]
    assert isinstance(ddb, DynamoDBStore) and ddb._reads is not None
    before = ddb._reads.batches, ddb._reads.keys_batched
    for u in users:  # one at a time: each read is answered before the next is sent
        async with http.get(f"{proxy.url}/users/{u['id']}") as r:
            assert r.status == 200
        await asyncio.sleep(0.005)
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= len(users), timeout=30)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0, timeout=30)
    batches = ddb._reads.batches - before[0], ddb._reads.keys_batched - before[1]
    return ddb, {"batches": batches[0], "keys": batches[1], **outcomes(proxy)}


async def test_shadow_reads_milliseconds_apart_share_one_batch(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    _, seen = await read_apart(store_proxy, http, gather=1.0)
    assert seen == {"batches": 1, "keys": 5, "match": 5}


async def test_without_gathering_each_shadow_read_goes_alone(
    store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    _, seen = await read_apart(store_proxy, http, gather=0.0)
    assert seen == {"batches": 0, "keys": 0, "match": 5}


@pytest.mark.parametrize("bad", [-0.1, 2, "soon", None])
def test_gather_seconds_is_a_number_from_0_to_1(bad: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"shadow": {"gather_seconds": bad}})
    assert f"shadow.gather_seconds = {bad!r}" in str(raised.value)
