"""The HTTP drop-in story: legacy and candidate users APIs, the proxy in front, traffic,
then the summary and the URLs. Runs until Ctrl-C, or ``duration`` seconds."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
import time
from importlib import resources
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.demo.services import DIVERGENCES, LAST_NAMES, legacy_and_candidate
from proxy.demo.summary import render
from proxy.logs import configure_logging
from proxy.serve import serve
from proxy.settings import Settings, settings_from_mapping
from proxy.tasks import spawn


def default_config() -> dict[str, Any]:
    text = resources.files("proxy").joinpath("defaults/demo.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def demo_settings(legacy_url: str, candidate_url: str, workdir: str) -> Settings:
    raw = default_config()
    raw["backends"]["legacy"]["url"] = legacy_url
    raw["backends"]["candidate"]["url"] = candidate_url
    raw["listen"]["port"] = 0
    raw["admin"]["port"] = 0
    raw["sink"] = {"kind": "jsonl", "path": os.path.join(workdir, "mismatches.jsonl")}
    return settings_from_mapping(raw, source="embedded demo config", env=os.environ)


async def drive_traffic(proxy_url: str, requests: int, user_count: int) -> int:
    headers = {"X-Requester-ID": "demo-client"}
    sem = asyncio.Semaphore(16)
    sent = 0

    async def one(session: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> None:
        nonlocal sent
        async with sem, session.request(method, proxy_url + path, headers=headers, **kw) as r:
            await r.read()
            sent += 1

    async with aiohttp.ClientSession() as session:
        jobs = [one(session, "GET", f"/users/{1 + i % user_count}") for i in range(requests)]
        jobs += [one(session, "GET", f"/users?last_name={name}") for name in LAST_NAMES]
        await asyncio.gather(*jobs)
        # Writes go to the primary only: this route has no shadow.
        await one(session, "POST", "/users", json={"email": "new@example.com"})
    return sent


async def wait_for_shadows(admin_url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(admin_url + "/healthz") as r:
                if (await r.json())["shadow_queue_depth"] == 0:
                    await asyncio.sleep(0.2)  # the last jobs may still be comparing
                    return
            await asyncio.sleep(0.05)


async def fetch_report(admin_url: str, token: str) -> tuple[list[Any], list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url + "/metrics") as r:
            families = list(text_string_to_metric_families(await r.text()))
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(admin_url + "/mismatches?limit=10", headers=auth) as r:
            examples = (await r.json())["mismatches"]
    return families, examples


async def run_http_demo(*, duration: float | None, requests: int) -> int:
    configure_logging("auto", "WARNING")
    token = os.environ.setdefault("SHADOWPROXY_ADMIN_TOKEN", secrets.token_urlsafe(16))
    os.environ.setdefault("SHADOWPROXY_REDACTION_KEY", secrets.token_hex(16))
    legacy_app, candidate_app = legacy_and_candidate()
    legacy, legacy_url = await start_app(legacy_app)
    candidate, candidate_url = await start_app(candidate_app)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shadowproxy-demo-") as workdir:
        settings = demo_settings(legacy_url, candidate_url, workdir)
        stop = asyncio.Event()
        ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        server = spawn(serve(settings, stop=stop, on_ready=ready.set_result), name="demo-proxy")
        try:
            proxy_url, admin_url = (await ready)[0], (await ready)[-1]
            sent = await drive_traffic(proxy_url, requests, user_count=200)
            await wait_for_shadows(admin_url)
            families, examples = await fetch_report(admin_url, token)
            urls = {
                "proxy:": proxy_url + "/users/7",
                "metrics:": admin_url + "/metrics",
                "mismatches:": f"{admin_url}/mismatches?limit=5  (header: Authorization: "
                f"Bearer $SHADOWPROXY_ADMIN_TOKEN = {token})",
            }
            print(
                f"sent {sent} requests through the proxy; planted divergences: "
                + "; ".join(f"user {k}: {v}" for k, v in DIVERGENCES.items())
            )
            print(render(families, examples, urls))
            sys.stdout.flush()
            if duration is None:
                print("\nserving until Ctrl-C")
                await asyncio.shield(server)
            else:
                remaining = duration - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.wait({server}, timeout=remaining)
        finally:
            stop.set()
            await asyncio.gather(server, return_exceptions=True)
            await legacy.cleanup()
            await candidate.cleanup()
    return 0
