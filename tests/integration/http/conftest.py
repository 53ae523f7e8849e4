from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.servers import Handler, RunningProxy, Upstream, start_proxy

pytestmark = pytest.mark.integration

UpstreamFactory = Callable[[Handler], Awaitable[Upstream]]
ProxyFactory = Callable[..., Awaitable[RunningProxy]]


async def json_ok(request: web.Request) -> web.Response:
    return web.json_response({"id": 1, "name": "Ada"})


@pytest.fixture
async def upstream_factory() -> AsyncIterator[UpstreamFactory]:
    started: list[Upstream] = []

    async def make(handler: Handler = json_ok) -> Upstream:
        upstream = await Upstream(handler).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def proxy_factory(tmp_path: Any) -> AsyncIterator[ProxyFactory]:
    started: list[RunningProxy] = []

    async def make(
        primary: Upstream,
        shadow: Upstream | None = None,
        /,
        *,
        route: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> RunningProxy:
        backends = {"primary": {"kind": "http", "url": primary.url, "timeout_seconds": 5}}
        route_cfg: dict[str, Any] = {
            "name": "r",
            "path": "/*",
            "methods": ["*"],
            "primary": "primary",
        }
        if shadow is not None:
            backends["shadow"] = {"kind": "http", "url": shadow.url, "timeout_seconds": 1}
            route_cfg["shadow"] = "shadow"
        route_cfg.update(route or {})
        raw: dict[str, Any] = {
            "backends": backends,
            "routes": [route_cfg],
            "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
            **overrides,
        }
        proxy = await start_proxy(raw, env=env)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
