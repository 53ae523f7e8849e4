"""Real HTTP servers on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy import serve
from proxy.app import Apps, build
from proxy.settings import Settings, settings_from_mapping

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Upstream:
    """A real aiohttp server whose answer is a swappable handler; records what it received."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.raw_path, list(request.headers.items()), body)
        )
        return await self.handler(request)

    async def start(self) -> Upstream:
        server = web.Server(self._dispatch)
        self.runner = web.ServerRunner(server, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class RunningProxy:
    settings: Settings
    apps: Apps
    registry: CollectorRegistry
    url: str
    admin_url: str
    exits: contextlib.AsyncExitStack

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached within timeout")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        await self.exits.aclose()


async def start_proxy(
    raw: dict[str, Any], env: dict[str, str] | None = None, *, server: str = "as configured"
) -> RunningProxy:
    """The proxy as ``shadowproxy serve`` runs it (the same runners, listeners and client
    timeouts), on free ports. ``server="app"`` serves HTTP routes through the application
    (as when resources are configured too) instead of the direct handler."""
    listen = {"port": 0, **raw.get("listen", {})}
    admin = {"port": 0, **raw.get("admin", {})}
    raw = {**raw, "listen": listen, "admin": admin}
    if "flags" not in raw:
        fd, audit_path = tempfile.mkstemp(prefix="flags-audit-", suffix=".jsonl")
        os.close(fd)
        raw["flags"] = {"kind": "memory", "audit_path": audit_path}
    raw.setdefault("logging", {"access_log": False})
    settings = settings_from_mapping(raw, env=env or {})
    registry = CollectorRegistry()
    apps = build(settings, registry=registry, env=env or {})
    if server == "app":
        apps = dataclasses.replace(apps, direct_handler=None)
    exits = contextlib.AsyncExitStack()
    try:
        proxy = await exits.enter_async_context(
            serve.proxy_runner(apps, settings.listen.idle_timeout_seconds, shutdown_timeout=5)
        )
        admin_runner = await exits.enter_async_context(
            serve.admin_runner(apps, settings.admin.idle_timeout_seconds)
        )
        urls = await serve.listen(settings, apps.metrics, proxy, admin_runner)
    except BaseException:
        await exits.aclose()
        raise
    return RunningProxy(settings, apps, registry, urls[0], urls[-1], exits)
