"""Admin token, bad requests, retries."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-Admin-Token": "wrong"}, 401),
        ({"Authorization": "Bearer tok"}, 200),
        ({"X-Admin-Token": "tok"}, 200),
    ],
)
async def test_mismatches_need_the_admin_token(
    headers: dict[str, str],
    status: int,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env={"SHADOWPROXY_ADMIN_TOKEN": "tok"})
    async with client.get(proxy.admin_url + "/mismatches", headers=headers) as r:
        assert r.status == status
        body = await r.json()
    if status == 401:
        assert body["error"]["code"] == "unauthorized"
    else:
        assert body == {"count": 0, "mismatches": []}


async def test_admin_is_closed_without_a_configured_token(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory())
    async with client.get(
        proxy.admin_url + "/mismatches", headers={"Authorization": "Bearer "}
    ) as r:
        assert r.status == 403


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "100000", "1.5"])
async def test_bad_limit_is_400(
    limit: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    proxy = await proxy_factory(await upstream_factory(), env={"SHADOWPROXY_ADMIN_TOKEN": "tok"})
    async with client.get(
        proxy.admin_url + f"/mismatches?limit={limit}", headers={"X-Admin-Token": "tok"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_request"


async def test_metrics_and_healthz_are_open(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(await upstream_factory())
    async with client.get(proxy.url + "/x") as r:
        assert r.status == 200
    async with client.get(proxy.admin_url + "/healthz") as r:
        assert (await r.json())["status"] == "ok"
    async with aiohttp.ClientSession() as plain, plain.get(proxy.admin_url + "/metrics") as r:
        text = await r.text()
    assert (
        'shadowproxy_requests_total{method="GET",requester="none",route="r",status="200"} 1.0'
        in text
    )
    assert "shadowproxy_backend_request_duration_seconds_bucket" in text


async def test_oversized_body_is_413_and_never_reaches_the_primary(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory()
    proxy = await proxy_factory(primary, limits={"max_body_bytes": 100})
    async with client.post(proxy.url + "/x", data=b"x" * 101) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "payload_too_large"

    async def gen():  # chunked upload: no Content-Length to check up front
        for _ in range(5):
            yield b"y" * 50

    async with client.post(proxy.url + "/x", data=gen()) as r:
        assert r.status == 413
    assert primary.seen == []


async def test_unrouted_path_and_method(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_factory(
        await upstream_factory(), route={"path": "/users/{id}", "methods": ["GET"]}
    )
    async with client.get(proxy.url + "/orders/1") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    async with client.delete(proxy.url + "/users/1") as r:
        assert r.status == 405


async def test_malformed_http_is_400(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    primary = await upstream_factory()
    proxy = await proxy_factory(primary)
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GARBAGE\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert raw.split(b" ", 2)[1] == b"400"
    assert primary.seen == []


class FlakyServer:
    """Drops the first ``drops`` connections without answering, then answers 200."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.connections = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if self.connections <= self.drops:
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return server


@pytest.mark.parametrize(("method", "status", "connections"), [("GET", 200, 2), ("POST", 502, 1)])
async def test_only_idempotent_requests_are_retried(
    method: str, status: int, connections: int, proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:  # fmt: skip
    flaky = FlakyServer(drops=1)
    server = await flaky.start()
    try:
        proxy = await proxy_factory(
            flaky,  # type: ignore[arg-type]
            env={"SHADOWPROXY__BACKENDS__PRIMARY__RETRIES": "2"},
        )
        async with client.request(method, proxy.url + "/x", data=b"{}") as r:
            assert r.status == status
        assert flaky.connections == connections
    finally:
        server.close()
        await server.wait_closed()
