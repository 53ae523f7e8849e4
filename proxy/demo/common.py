"""What both demo stories share: the embedded config, the proxy in-process, the report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.serve import serve
from proxy.settings import Settings
from proxy.tasks import spawn


def embedded_config(name: str) -> dict[str, Any]:
    text = resources.files("proxy").joinpath(f"defaults/{name}").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@asynccontextmanager
async def running_proxy(settings: Settings) -> AsyncIterator[tuple[str, str, asyncio.Task[Any]]]:
    """The proxy served in this process: yields (proxy URL, admin URL, server task)."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    server = spawn(serve(settings, stop=stop, on_ready=ready.set_result), name="demo-proxy")
    try:
        urls = await asyncio.wait_for(asyncio.shield(ready), 60)
        yield urls[0], urls[-1], server
    finally:
        stop.set()
        await asyncio.gather(server, return_exceptions=True)


async def wait_for_shadows(admin_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(admin_url + "/healthz") as r:
                if (await r.json())["shadow_queue_depth"] == 0:
                    await asyncio.sleep(0.5)  # the last jobs may still be re-checking
                    return
            await asyncio.sleep(0.05)


async def fetch_report(
    admin_url: str, token: str, limit: int = 50
) -> tuple[list[Any], list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url + "/metrics") as r:
            families = list(text_string_to_metric_families(await r.text()))
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{admin_url}/mismatches?limit={limit}", headers=auth) as r:
            examples = (await r.json())["mismatches"]
    return families, examples


async def serve_until(server: asyncio.Task[Any], started: float, duration: float | None) -> None:
    """Keep serving until Ctrl-C (duration None) or until ``duration`` seconds in all."""
    if duration is None:
        print("\nserving until Ctrl-C", flush=True)
        await asyncio.shield(server)
        return
    remaining = duration - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.wait({server}, timeout=remaining)
