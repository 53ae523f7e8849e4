"""The triage page in headless Chromium (Debian's ``chromium``): a screenshot is taken, the
expected elements are in the DOM, the console stays silent, and the token-guarded parts are
not there without the session cookie. A relay on loopback adds the cookie for the signed-in
view (Chromium's command line cannot), passing the admin port's headers through unchanged."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.control.triage import SESSION_COOKIE
from tests.integration.http.conftest import ProxyFactory, UpstreamFactory
from tests.integration.http.test_triage import (
    SECRET_EMAIL,
    SECRET_SSN,
    TOKEN,
    login,
    mismatching_proxy,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="no chromium (apt-get install chromium; scripts/services.sh installs it)",
    ),
]

HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding"}


@dataclass
class Loaded:
    dom: str
    console: list[str]
    screenshot: Path


async def chromium(url: str, directory: Path, name: str) -> Loaded:
    shot = directory / f"{name}.png"
    chromium = shutil.which("chromium")
    assert chromium is not None
    process = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={directory / (name + '-profile')}", "--window-size=1280,1800",
        f"--screenshot={shot}", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=directory,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    console = [line for line in err.decode(errors="replace").splitlines() if "CONSOLE" in line]
    return Loaded(out.decode(), console, shot)


Relay = Callable[[str, str], Awaitable[str]]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    """``await relay(admin_url, cookie)``: a loopback URL that serves the admin port's GETs
    with ``Cookie: cookie`` added; ``?canary`` appends an inline script to the page."""
    runners: list[web.AppRunner] = []

    async def start(admin_url: str, cookie: str) -> str:
        async def forward(request: web.Request) -> web.Response:
            query = {k: v for k, v in request.query.items() if k != "canary"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    admin_url + request.path, params=query, headers={"Cookie": cookie}
                ) as r,
            ):
                body = await r.read()
                headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
            if "canary" in request.query:
                body = body.replace(b"</body>", b"<script>document.title='ran'</script></body>")
            return web.Response(body=body, status=r.status, headers=headers)

        app = web.Application()
        app.router.add_get("/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def assert_clean(loaded: Loaded) -> None:
    assert loaded.screenshot.is_file() and loaded.screenshot.stat().st_size > 10_000
    assert loaded.console == [], loaded.console
    for secret in (TOKEN, SECRET_EMAIL, SECRET_SSN):
        assert secret not in loaded.dom


async def test_the_summary_in_chromium_without_a_cookie(
    tmp_path: Path, upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    loaded = await chromium(proxy.admin_url + "/", tmp_path, "summary")
    assert_clean(loaded)
    for element in ('id="flags"', 'id="readiness"', 'id="counters"', 'id="login"'):
        assert element in loaded.dom
    assert 'class="verdict"' in loaded.dom and 'id="comparisons"' in loaded.dom
    assert 'id="mismatches"' not in loaded.dom
    assert 'class="record"' not in loaded.dom and "redacted:" not in loaded.dom

    filtered = await chromium(proxy.admin_url + "/?route=users", tmp_path, "filtered")
    assert_clean(filtered)
    assert 'id="mismatches"' not in filtered.dom


async def test_the_records_in_chromium_with_the_session_cookie(
    tmp_path: Path,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
    relay: Relay,
) -> None:
    proxy = await mismatching_proxy(upstream_factory, proxy_factory)
    _, _, session = await login(client, proxy)
    url = await relay(proxy.admin_url, f"{SESSION_COOKIE}={session}")

    loaded = await chromium(url + "/", tmp_path, "records")
    assert_clean(loaded)
    assert 'id="mismatches"' in loaded.dom and 'id="logout"' in loaded.dom
    assert loaded.dom.count('<article class="record"') == 4
    assert 'table class="diff"' in loaded.dom and 'class="side shadow"' in loaded.dom

    filtered = await chromium(url + "/?route=orders&field=body.total", tmp_path, "orders")
    assert_clean(filtered)
    assert filtered.dom.count('<article class="record" data-route="orders"') == 2
    assert 'data-route="users"' not in filtered.dom.split('id="mismatches"', 1)[1]

    # the relay works, and the page's own policy is what stops an injected inline script
    canary = await chromium(url + "/?canary", tmp_path, "canary")
    assert any("inline script" in line for line in canary.console), canary.console
    assert "<title>ran</title>" not in canary.dom
