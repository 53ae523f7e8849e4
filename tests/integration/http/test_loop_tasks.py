"""``shadowproxy_event_loop_tasks`` counts the tasks alive on the proxy's event loop."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory

pytestmark = pytest.mark.integration


async def test_the_event_loop_task_gauge_is_set_and_exported(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory())
    await proxy.wait_for(lambda: proxy.value("shadowproxy_event_loop_tasks") > 0)
    assert proxy.value("shadowproxy_event_loop_tasks") <= len(asyncio.all_tasks()) + 1
    async with client.get(
        proxy.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}
    ) as r:
        text = await r.text()
    assert "\nshadowproxy_event_loop_tasks " in text
