"""Admin API limits: body size, unknown paths and the length of a flag change's reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.control.admin import MAX_ADMIN_BODY
from proxy.flags.store import MAX_REASON
from tests.integration.http.conftest import ProxyFactory, UpstreamFactory, json_ok
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def proxy(upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory) -> RunningProxy:
    """A route with a shadow, so that it has flags; the admin token configured."""
    return await proxy_factory(
        await upstream_factory(json_ok),
        await upstream_factory(json_ok),
        env={"SHADOWPROXY_ADMIN_TOKEN": TOKEN},
    )


async def sample_flag(proxy: RunningProxy, client: aiohttp.ClientSession) -> str:
    async with client.get(proxy.admin_url + "/flags", headers=AUTH) as r:
        assert r.status == 200
        flags: dict[str, Any] = (await r.json())["flags"]
    names = [name for name in flags if name.endswith(".sample")]
    assert names, flags
    return names[0]


async def history(proxy: RunningProxy, client: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with client.get(proxy.admin_url + "/flags/history?limit=1000", headers=AUTH) as r:
        assert r.status == 200
        entries: list[dict[str, Any]] = (await r.json())["history"]
    return entries


async def envelope_of(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    assert response.status == status
    assert response.content_type == "application/json"
    body = orjson.loads(await response.read())
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    return message


async def test_oversized_flag_body_is_413_in_the_envelope(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    name = await sample_flag(proxy, client)
    body = orjson.dumps({"value": 0.5, "reason": "x" * MAX_ADMIN_BODY})
    assert len(body) > 64 * 1024
    async with client.put(
        f"{proxy.admin_url}/flags/{name}",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
    ) as r:
        await envelope_of(r, 413, "payload_too_large")
    assert all(e["new"] != 0.5 for e in await history(proxy, client))


async def test_oversized_chunked_flag_body_is_413_in_the_envelope(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    """No Content-Length to refuse up front: the limit holds while the body is read."""
    name = await sample_flag(proxy, client)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"value": 0.5, "reason": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    async with client.put(f"{proxy.admin_url}/flags/{name}", data=chunks(), headers=AUTH) as r:
        await envelope_of(r, 413, "payload_too_large")


async def test_unauthenticated_oversized_body_is_refused_in_the_envelope(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    name = await sample_flag(proxy, client)
    async with client.put(f"{proxy.admin_url}/flags/{name}", data=b"x" * (MAX_ADMIN_BODY + 1)) as r:
        await envelope_of(r, 401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path"),
    # GET / is the triage page (tests/integration/http/test_triage.py)
    [("GET", "/nope"), ("GET", "/flags/a/b"), ("PUT", "/mismatches/x"), ("GET", "/index.html")],
)
async def test_unknown_admin_path_is_404_in_the_envelope(
    method: str, path: str, proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    async with client.request(method, proxy.admin_url + path, headers=AUTH) as r:
        await envelope_of(r, 404, "not_found")


async def test_wrong_method_on_an_admin_path_is_405_in_the_envelope(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    async with client.delete(proxy.admin_url + "/flags", headers=AUTH) as r:
        await envelope_of(r, 405, "method_not_allowed")


async def test_reason_over_the_limit_is_422_and_not_audited(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    name = await sample_flag(proxy, client)
    reason = "r" * (MAX_REASON + 1)
    assert len(reason) == 1001
    async with client.put(
        f"{proxy.admin_url}/flags/{name}", json={"value": 0.25, "reason": reason}, headers=AUTH
    ) as r:
        message = await envelope_of(r, 422, "unprocessable")
    assert "1001 characters" in message
    assert all(e["reason"] != reason for e in await history(proxy, client))
    async with client.get(proxy.admin_url + "/flags", headers=AUTH) as r:
        assert (await r.json())["flags"][name] == 1.0  # unchanged


async def test_reason_at_the_limit_is_accepted_and_audited(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    name = await sample_flag(proxy, client)
    reason = "é" * MAX_REASON  # characters, not bytes
    assert len(reason) == 1000
    async with client.put(
        f"{proxy.admin_url}/flags/{name}", json={"value": 0.25, "reason": reason}, headers=AUTH
    ) as r:
        assert r.status == 200, await r.text()
        changed = (await r.json())["changed"]
    assert (changed["new"], changed["reason"], changed["actor"]) == (0.25, reason, "admin:token")
    entries = [e for e in await history(proxy, client) if e["reason"] == reason]
    assert len(entries) == 1
    assert f"{entries[0]['target']}.{entries[0]['flag']}" == name
    async with client.get(proxy.admin_url + "/flags", headers=AUTH) as r:
        assert (await r.json())["flags"][name] == 0.25
