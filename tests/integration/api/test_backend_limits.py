"""A primary store that throttles or stalls: throttling is retried within the call's deadline
and then answered 503 with ``Retry-After``; a stalled store gets at most its connections plus
``max_waiting`` calls, and the rest are refused at once instead of piling up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.errors import ConfigError
from proxy.settings import settings_from_mapping
from tests.integration.api.conftest import StoreProxyFactory, outcomes, stores, user
from tests.support.dynamohop import DynamoHop, dynamo_hop
from tests.support.servers import RunningProxy
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.integration


@pytest.fixture
async def hop(moto_endpoint: str) -> AsyncIterator[DynamoHop]:
    async with dynamo_hop(moto_endpoint) as hop:
        yield hop


async def created(http: aiohttp.ClientSession, url: str, i: int) -> str:
    u = user(i)
    async with http.post(url + "/users", json=u) as r:
        assert r.status == 201, await r.text()
    return str(u["id"])


async def test_a_throttled_read_is_retried_then_answered_503_with_retry_after(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    proxy = await store_proxy(
        "dynamodb", write_to=("dynamodb",), shadow_reads=0.0, dynamo_url=hop.url,
        dynamo={"sdk_max_attempts": 3},
    )  # fmt: skip
    key = await created(http, proxy.url, 1)
    hop.throttle_every["GetItem"] = 2  # every other call: the retry gets through
    async with http.get(f"{proxy.url}/users/{key}") as r:
        assert r.status == 200, await r.text()
    hop.throttle_every.clear()
    hop.throttle_all.add("GetItem")
    before = hop.seen["GetItem"]
    async with http.get(f"{proxy.url}/users/{key}") as r:
        body = await r.json()
        assert r.status == 503, body
        assert r.headers["Retry-After"] == "1"
    assert body["error"]["code"] == "unavailable"
    assert "throttling" in body["error"]["message"]
    assert body["error"]["request_id"]
    assert hop.seen["GetItem"] - before == 3  # every attempt of sdk_max_attempts was made
    hop.throttle_all.clear()
    async with http.get(f"{proxy.url}/users/{key}") as r:
        assert r.status == 200


async def test_throttling_is_retried_only_within_the_deadline(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Ten attempts would take seconds of backoff (25 ms doubling, full jitter: ~6 s on
    average); the call's 1 s deadline stops the retries long before: the client gets its 503
    after a few. (The deadline bounds the proxy's start-up calls too: at 0.3 s a loaded
    machine's DescribeTable missed it.)"""
    proxy = await store_proxy(
        "dynamodb", write_to=("dynamodb",), shadow_reads=0.0, dynamo_url=hop.url,
        dynamo={"sdk_max_attempts": 10, "deadline_seconds": 1.0},
    )  # fmt: skip
    key = await created(http, proxy.url, 2)
    hop.throttle_all.add("GetItem")
    before = hop.seen["GetItem"]
    async with http.get(f"{proxy.url}/users/{key}") as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
    assert 1 <= hop.seen["GetItem"] - before < 10


async def test_a_deadline_that_cuts_a_retry_of_a_throttled_read_answers_503(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """The first attempt is throttled, the retry hangs until the call's deadline: the client
    hears the throttling (503, Retry-After), not a gateway timeout."""
    proxy = await store_proxy(
        "dynamodb", write_to=("dynamodb",), shadow_reads=0.0, dynamo_url=hop.url,
        dynamo={"sdk_max_attempts": 10, "deadline_seconds": 1.0},
    )  # fmt: skip
    key = await created(http, proxy.url, 2)
    before = hop.seen["GetItem"]
    hop.throttle_all.add("GetItem")
    hop.stall_from["GetItem"] = before + 2
    async with http.get(f"{proxy.url}/users/{key}") as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
    assert hop.seen["GetItem"] - before == 2


def test_bad_limit_values_are_config_errors_naming_the_key_and_the_value() -> None:
    for kind, bad in (
        ("dynamodb", {"deadline_seconds": 0}),
        ("dynamodb", {"max_waiting": -1}),
        ("dynamodb", {"max_connections": 0}),
        ("postgres", {"max_waiting": "lots"}),
        ("http", {"max_waiting": -5}),
    ):
        backend = {"kind": kind, **bad}
        backend.update(
            {"dynamodb": {"region": "us-east-1"}, "http": {"url": "http://a"}}.get(kind, {})
        )
        with pytest.raises(ConfigError) as raised:
            settings_from_mapping({"backends": {"b": backend}})
        ((key, value),) = bad.items()
        assert f"backends.b.{key} = {value!r}" in str(raised.value)


async def burst(
    http: aiohttp.ClientSession, url: str, n: int
) -> list[tuple[int, dict[str, str], str]]:
    async def one() -> tuple[int, dict[str, str], str]:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, dict(r.headers), await r.text()

    return await asyncio.gather(*(one() for _ in range(n)))


async def six_while_stalled(link: CuttableLink, http: aiohttp.ClientSession, url: str) -> None:
    """Six reads at once while the store behind ``link`` stalls, with 2 connections and 1
    caller allowed to wait: 3 are refused at once, the others answered 503/504, none 500."""
    link.hang()
    answers = await burst(http, url, 6)
    link.restore()
    busy = [a for a in answers if a[0] == 503 and "connection limit" in a[2]]
    assert len(busy) == 3, answers  # 6 callers - 2 connections - 1 waiting
    assert all(a[1]["Retry-After"] == "1" for a in busy)
    assert all(a[0] in (503, 504) for a in answers), answers  # the stalled ones: no 500


async def test_a_stalled_postgres_gets_its_pool_plus_max_waiting_and_no_more(
    pg_link: CuttableLink, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{pg_link.port}/postgres"
    proxy = await store_proxy(
        "postgres", write_to=("postgres",), shadow_reads=0.0, pg_dsn=dsn,
        pg={"pool_max": 2, "max_waiting": 1, "timeout_seconds": 2,
            "connect_timeout_seconds": 2},
    )  # fmt: skip
    key = await created(http, proxy.url, 3)
    await six_while_stalled(pg_link, http, f"{proxy.url}/users/{key}")

    async def served() -> bool:
        async with http.get(f"{proxy.url}/users/{key}") as r:
            return r.status == 200

    for _ in range(100):
        if await served():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("PostgreSQL did not serve again after the stall")


async def test_a_stalled_dynamodb_gets_its_connections_plus_max_waiting_and_no_more(
    dynamo_link: CuttableLink, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    # gathered (coalesce_reads), the six reads would be one call: test_dynamo_coalesce.py
    proxy = await store_proxy(
        "dynamodb", write_to=("dynamodb",), shadow_reads=0.0, dynamo_url=dynamo_link.url,
        dynamo={"max_connections": 2, "max_waiting": 1, "timeout_seconds": 2,
                "sdk_max_attempts": 1, "coalesce_reads": False},
    )  # fmt: skip
    key = await created(http, proxy.url, 4)
    await six_while_stalled(dynamo_link, http, f"{proxy.url}/users/{key}")


async def planted_difference(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession, i: int,
    **extra: Any,
) -> tuple[RunningProxy, dict[str, Any]]:  # fmt: skip
    """A proxy reading from PostgreSQL and shadowing every read to DynamoDB through ``hop``
    (one attempt per call), and user ``i`` whose DynamoDB copy has another last name."""
    proxy = await store_proxy(
        "postgres", write_to=("postgres",), shadow_reads=1.0, dynamo_url=hop.url,
        dynamo={"sdk_max_attempts": 1, "max_attempts": 1}, **extra,
    )  # fmt: skip
    u = user(i)
    async with http.post(proxy.url + "/users", json=u) as r:
        assert r.status == 201
    schema = proxy.apps.resources.services["users"].schema
    await stores(proxy)["dynamodb"].put(schema.validate({**u, "last_name": "Else"}, partial=False))
    return proxy, u


async def test_a_difference_no_re_read_could_confirm_is_a_shadow_error_not_a_mismatch(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """The shadow read differs; every re-read of the shadow then fails (DynamoDB at its
    limit, throttling): nothing confirmed the difference, so it must not count as a
    mismatch, and it is not lost either: a shadow_error, with its reason."""
    proxy, u = await planted_difference(hop, store_proxy, http, 7)
    hop.throttle_from["GetItem"] = hop.seen["GetItem"] + 2  # the shadow read passes, re-reads fail
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200 and (await r.json())["last_name"] == "Test"
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 1, timeout=30)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0, timeout=30)
    assert outcomes(proxy) == {"shadow_error": 1}
    assert hop.throttled >= 1


async def test_a_difference_confirmed_by_a_later_re_read_is_still_a_mismatch(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """The first re-read fails, the next one works and still differs: a real mismatch
    is never missed because one re-read failed."""
    proxy, u = await planted_difference(hop, store_proxy, http, 8)
    first_reread = hop.seen["GetItem"] + 2
    hop.throttle_every["GetItem"] = first_reread  # only the first re-read's call fails
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 1, timeout=30)
    assert outcomes(proxy) == {"mismatch": 1}
    assert hop.throttled == 1


async def test_past_the_comparison_cpu_budget_a_store_difference_is_skipped_unread(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """No comparison CPU at all: the differing read is neither a match nor a mismatch but
    skipped, and nothing is re-read for it (a broken store costs the primary nothing more)."""
    shadow = {"compare_cpu_share": 0, "compare_cpu_burst_seconds": 0}
    proxy, u = await planted_difference(hop, store_proxy, http, 9, shadow=shadow)
    before = hop.seen["GetItem"]
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200 and (await r.json())["last_name"] == "Test"
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 1, timeout=30)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0, timeout=30)
    assert outcomes(proxy) == {"skipped": 1}
    assert hop.seen["GetItem"] == before + 1  # the shadow read itself, no re-read
    skipped = proxy.value("shadowproxy_compare_skipped_total", route="users", reason="cpu_budget")
    assert skipped == 1


async def test_a_recheck_the_comparison_cpu_budget_cannot_afford_ends_skipped(
    hop: DynamoHop, store_proxy: StoreProxyFactory, http: aiohttp.ClientSession
) -> None:
    """The first comparison may start (the bucket holds a nanosecond) and overdraws it; the
    re-read's comparison then cannot be afforded: the difference is unconfirmed, so it is
    skipped, not a mismatch (a race must not be reported) and not a match."""
    shadow = {"compare_cpu_share": 0, "compare_cpu_burst_seconds": 1e-9}
    proxy, u = await planted_difference(hop, store_proxy, http, 10, shadow=shadow)
    before = hop.seen["GetItem"]
    async with http.get(f"{proxy.url}/users/{u['id']}") as r:
        assert r.status == 200
    await proxy.wait_for(lambda: sum(outcomes(proxy).values()) >= 1, timeout=30)
    await proxy.wait_for(lambda: proxy.apps.runner.depth == 0, timeout=30)
    assert outcomes(proxy) == {"skipped": 1}
    assert hop.seen["GetItem"] == before + 2  # the shadow read and one re-read, no more
