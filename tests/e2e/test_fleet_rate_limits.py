"""Two ``shadowproxy serve`` processes sharing one Redis for their rate limits: one burst for
the fleet, a flood of distinct requester ids that grows no label and leaves no key behind,
and Redis going away: requests go through and the failures are counted."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
import redis
import yaml
from aiohttp import web

from tests.e2e.conftest import ROOT, shadowproxy
from tests.integration.conftest import REDIS_URL
from tests.support.servers import Upstream, free_port
from tests.support.tcpproxy import CuttableLink

pytestmark = pytest.mark.e2e

LIMITED = re.compile(r"^shadowproxy_rate_limited_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
STORE_ERRORS = re.compile(r"^shadowproxy_rate_limit_store_errors_total ([0-9.e+]+)$", re.M)


async def ok(_: web.Request) -> web.Response:
    return web.json_response({"id": 1})


async def wait_up(session: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s")


async def get(session: aiohttp.ClientSession, url: str, who: str) -> tuple[int, str | None]:
    async with session.get(url + "/users/1", headers={"X-Requester-ID": who}) as r:
        await r.read()
        return r.status, r.headers.get("Retry-After")


async def metrics(session: aiohttp.ClientSession, admin: str) -> str:
    async with session.get(admin + "/metrics") as r:
        return await r.text()


async def test_two_instances_share_the_limit_a_flood_stays_bounded_and_redis_down_is_open(
    tmp_path: Path, prefix: str
) -> None:
    backend = await Upstream(ok).start()
    target = urlparse(REDIS_URL)
    link = await CuttableLink(target.hostname or "127.0.0.1", target.port or 6379).start()
    cfg: dict[str, Any] = {
        "logging": {"format": "json", "access_log": False},
        "backends": {"a": {"kind": "http", "url": backend.url}},
        "routes": [{"name": "r", "path": "/*", "primary": "a"}],
        "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
        "requesters": {"known": ["web"]},
        "rate_limits": {
            "store": "redis",
            "redis_url": f"redis://127.0.0.1:{link.port}/0",
            "prefix": prefix,
            "timeout_seconds": 0.5,
            "retry_after_seconds": 0.2,
            "requesters": {"web": {"rate": 0.1, "burst": 10}},
            "default": {"rate": 1, "burst": 1},
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    urls, admins, procs = [], [], []
    for i in range(2):
        port, admin_port = free_port(), free_port()
        env = {
            **os.environ,
            "SHADOWPROXY__LISTEN__PORT": str(port),
            "SHADOWPROXY__ADMIN__PORT": str(admin_port),
        }
        with (tmp_path / f"stderr-{i}.log").open("wb") as stderr:
            procs.append(
                await asyncio.create_subprocess_exec(
                    *shadowproxy("serve", "-c", str(path)), cwd=ROOT, env=env, stderr=stderr
                )
            )
        urls.append(f"http://127.0.0.1:{port}")
        admins.append(f"http://127.0.0.1:{admin_port}")
    try:
        async with aiohttp.ClientSession() as session:
            for admin in admins:
                await wait_up(session, admin + "/healthz")

            # One burst of 10 for the fleet, however the requests are spread.
            answers = [await get(session, urls[i % 2], "web") for i in range(40)]
            passed = [status for status, _ in answers].count(200)
            refused = [after for status, after in answers if status == 429]
            print(f"shared burst: {passed} of 40 passed")
            assert 10 <= passed <= 11  # 0.1 tokens a second may add one while this runs
            assert len(refused) == 40 - passed
            assert all(after is not None and 1 <= int(after) <= 10 for after in refused)

            # 300 distinct ids, two requests each: the second is refused, one label for all.
            flood = [await get(session, urls[(i // 2) % 2], f"flood-{i // 2}") for i in range(600)]
            assert [s for s, _ in flood].count(429) >= 290
            series: list[dict[str, str]] = []
            for admin in admins:
                for labels, _ in LIMITED.findall(await metrics(session, admin)):
                    series.append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
            assert {s["requester"] for s in series} == {"web", "other"}
            assert len(series) <= 4  # two per instance, whatever the flood
            client = redis.Redis.from_url(REDIS_URL)
            try:
                assert len(list(client.scan_iter(f"{prefix}:*:flood-*"))) <= 300
                await asyncio.sleep(2.5)  # a flood bucket (1/s, burst 1) is full after 1 s
                assert list(client.scan_iter(f"{prefix}:*:flood-*")) == []
                assert client.exists(f"{prefix}:*:web")  # still being refilled: kept
            finally:
                client.close()

            # Redis unreachable: open by default, every failure counted.
            link.cut()
            down = [await get(session, urls[i % 2], "web") for i in range(10)]
            assert [s for s, _ in down] == [200] * 10
            errors = []
            for admin in admins:
                found = STORE_ERRORS.findall(await metrics(session, admin))
                errors.append(float(found[0]) if found else 0.0)
            assert all(e >= 1 for e in errors), errors
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await link.stop()
        await backend.stop()
    for i in range(2):
        log = (tmp_path / f"stderr-{i}.log").read_text()
        lines = [line for line in log.splitlines() if "rate-limit store Redis unreachable" in line]
        assert 1 <= len(lines) <= 2, log[-2000:]  # throttled: not one per request
