"""The HTTP drop-in story: legacy and candidate users APIs, the proxy in front, traffic,
then the summary and the URLs. Runs until Ctrl-C, or ``duration`` seconds."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web

from proxy.demo.common import (
    embedded_config,
    fetch_report,
    running_proxy,
    serve_until,
    wait_for_shadows,
)
from proxy.demo.services import DIVERGENCES, LAST_NAMES, legacy_and_candidate
from proxy.demo.summary import render
from proxy.settings import Settings, settings_from_mapping


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def demo_settings(legacy_url: str, candidate_url: str, workdir: str) -> Settings:
    raw = embedded_config("demo-http.yaml")
    raw["backends"]["legacy"]["url"] = legacy_url
    raw["backends"]["candidate"]["url"] = candidate_url
    raw["listen"]["port"] = 0
    raw["admin"]["port"] = 0
    raw["sink"] = {"kind": "jsonl", "path": os.path.join(workdir, "mismatches.jsonl")}
    raw["flags"] = {"kind": "memory", "audit_path": os.path.join(workdir, "flags-audit.jsonl")}
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


async def run_http_demo(*, duration: float | None, requests: int, token: str) -> int:
    legacy_app, candidate_app = legacy_and_candidate()
    legacy, legacy_url = await start_app(legacy_app)
    candidate, candidate_url = await start_app(candidate_app)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="shadowproxy-demo-") as workdir:
            settings = demo_settings(legacy_url, candidate_url, workdir)
            async with running_proxy(settings) as (proxy_url, admin_url, server):
                sent = await drive_traffic(proxy_url, requests, user_count=200)
                await wait_for_shadows(admin_url)
                families, examples = await fetch_report(admin_url, token)
                planted = "; ".join(f"user {k}: {v}" for k, v in DIVERGENCES.items())
                print(f"sent {sent} requests through the proxy; planted divergences: {planted}")
                print(render(families, examples, _urls(proxy_url, admin_url, token)), flush=True)
                await serve_until(server, started, duration)
    finally:
        await legacy.cleanup()
        await candidate.cleanup()
    return 0


def _urls(proxy_url: str, admin_url: str, token: str) -> dict[str, str]:
    return {
        "proxy:": proxy_url + "/users/7",
        "triage:": admin_url + "/  (sign in with the token below to see the diffs)",
        "metrics:": admin_url + "/metrics",
        "mismatches:": f"{admin_url}/mismatches?limit=5  (header: Authorization: "
        f"Bearer $SHADOWPROXY_ADMIN_TOKEN = {token})",
    }
