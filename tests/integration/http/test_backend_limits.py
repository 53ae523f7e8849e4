"""A primary HTTP backend that stalls gets at most ``max_connections`` requests plus
``max_waiting`` waiting for one; the rest are answered 503 with ``Retry-After`` at once, and
the stalled ones are answered as soon as the backend is."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory

pytestmark = pytest.mark.integration


async def test_a_stalled_primary_gets_its_connections_plus_max_waiting(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    go = asyncio.Event()
    arrived = 0

    async def stalls(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        await go.wait()
        return web.json_response({"ok": True})

    primary = await upstream_factory(stalls)
    proxy = await proxy_factory(
        primary,
        backends={
            "primary": {
                "kind": "http", "url": primary.url, "timeout_seconds": 30,
                "max_connections": 2, "max_waiting": 1,
            }
        },
    )  # fmt: skip

    async def one() -> tuple[int, str, str | None]:
        async with client.get(proxy.url + "/x", timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, await r.text(), r.headers.get("Retry-After")

    async with asyncio.TaskGroup() as group:
        calls = [group.create_task(one()) for _ in range(6)]
        done: list[tuple[int, str, str | None]] = []
        for _ in range(600):  # the refused ones come back while the others still wait
            done = [c.result() for c in calls if c.done()]
            if len(done) >= 3 and arrived >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(done) == 3, done
        assert all(s == 503 and "connection limit" in t and ra == "1" for s, t, ra in done)
        assert arrived == 2  # the backend saw its two connections' worth, no more
        go.set()
    rest = [c.result() for c in calls]
    assert sorted(s for s, _, _ in rest) == [200, 200, 200, 503, 503, 503]
    async with client.get(proxy.url + "/x") as r:
        assert r.status == 200
