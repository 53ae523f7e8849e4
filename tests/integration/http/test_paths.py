"""Request paths through the real proxy: ambiguous ones refused, dot segments, absolute-form."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory, json_ok
from tests.support.servers import RunningProxy, start_proxy

pytestmark = pytest.mark.integration

NORMALIZE = {"path_policy": "normalize"}


def raw_url(proxy: RunningProxy, target: str) -> URL:
    """The proxy's URL for ``target`` exactly as written: yarl neither resolves dot segments
    nor re-encodes it."""
    return URL(proxy.url + target, encoded=True)


async def raw_exchange(proxy: RunningProxy, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is on a new connection; the status and body of the answer."""
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def absolute_form(target: str, host: str = "example.com") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def assert_envelope(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    assert response.status == status
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    message: str = body["error"]["message"]
    return message


async def test_encoded_slash_is_400_and_reaches_nothing(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, route={"path": "/users/*"})
    async with client.get(raw_url(proxy, "/users/..%2fstats")) as r:
        message = await assert_envelope(r, 400, "bad_request")
    assert "encoded slash" in message
    assert primary.seen == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_dot_segments_are_400_by_default(
    method: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary)
    async with client.request(method, raw_url(proxy, "/users/../admin/mode"), data=b"{}") as r:
        message = await assert_envelope(r, 400, "bad_request")
    assert "dot segment" in message
    assert primary.seen == []


async def test_normalize_forwards_the_resolved_path(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, listen=NORMALIZE)
    async with client.post(
        raw_url(proxy, "/users/../admin/mode?x=/../y"), data=b'{"mode": "on"}'
    ) as r:
        assert r.status == 200
        assert await r.json() == {"id": 1, "name": "Ada"}
    assert [(s.method, s.path_qs, s.body) for s in primary.seen] == [
        ("POST", "/admin/mode?x=/../y", b'{"mode": "on"}')
    ]


async def test_normalize_routes_on_the_resolved_path(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, route={"path": "/users/*"}, listen=NORMALIZE)
    async with client.post(raw_url(proxy, "/users/../admin/mode"), data=b"{}") as r:
        message = await assert_envelope(r, 404, "not_found")
    assert message == "no route for /admin/mode"
    assert primary.seen == []
    # inside the route, the resolved path is routed and forwarded alike
    async with client.get(raw_url(proxy, "/users/7/./orders/../profile")) as r:
        assert r.status == 200
    assert [s.path_qs for s in primary.seen] == ["/users/7/profile"]


async def test_normalize_still_refuses_encoded_slashes(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, listen=NORMALIZE)
    for target in ("/users/..%2fstats", "/users/%2e%2e;x/admin", "/a%5cb"):
        async with client.get(raw_url(proxy, target)) as r:
            await assert_envelope(r, 400, "bad_request")
    assert primary.seen == []


@pytest.mark.parametrize("target", ["/a%0ab", "/users/1%0d%0aX-Injected:%201", "/a%00"])
async def test_encoded_control_characters_are_400(
    target: str,
    upstream_factory: UpstreamFactory,
    proxy_factory: ProxyFactory,
    client: aiohttp.ClientSession,
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary)
    async with client.get(raw_url(proxy, target)) as r:
        message = await assert_envelope(r, 400, "bad_request")
    assert "control character" in message
    assert primary.seen == []


async def test_percent_encoding_reaches_the_backend_as_sent(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, route={"path": "/users/{id}"})
    async with client.get(raw_url(proxy, "/users/a%20b?q=%2f..%2f")) as r:
        assert r.status == 200
    assert [s.path_qs for s in primary.seen] == ["/users/a%20b?q=%2f..%2f"]


async def test_absolute_form_is_forwarded_in_origin_form(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary, route={"path": "/users/{id}"})
    status, body = await raw_exchange(proxy, absolute_form("http://example.com/users/1?x=1"))
    assert status == 200
    assert orjson.loads(body) == {"id": 1, "name": "Ada"}
    assert [s.path_qs for s in primary.seen] == ["/users/1?x=1"]


async def test_absolute_form_gets_the_same_checks(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await proxy_factory(primary)
    for target in ("http://example.com/users/..%2fstats", "http://example.com/a/../admin"):
        status, body = await raw_exchange(proxy, absolute_form(target))
        assert status == 400
        assert orjson.loads(body)["error"]["code"] == "bad_request"
    status, body = await raw_exchange(proxy, absolute_form("ftp://example.com/users/1"))
    assert status == 400
    assert primary.seen == []


async def test_absolute_form_with_a_backend_base_path(
    upstream_factory: UpstreamFactory, tmp_path: Any
) -> None:
    primary = await upstream_factory(json_ok)
    proxy = await start_proxy(
        {
            "backends": {"primary": {"kind": "http", "url": primary.url + "/base"}},
            "routes": [{"name": "r", "path": "/users/*", "methods": ["*"], "primary": "primary"}],
            "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        }
    )
    try:
        status, _ = await raw_exchange(proxy, absolute_form("http://example.com/users/1?x=1"))
        assert status == 200
        status, _ = await raw_exchange(proxy, absolute_form("/users/2"))
        assert status == 200
    finally:
        await proxy.stop()
    assert [s.path_qs for s in primary.seen] == ["/base/users/1?x=1", "/base/users/2"]


@pytest.mark.parametrize("server", ["as configured", "app"])
async def test_both_listeners_read_the_path_alike(
    server: str, upstream_factory: UpstreamFactory, tmp_path: Any
) -> None:
    """The direct handler and the application (with its URL dispatcher) in front of it."""
    primary = await upstream_factory(json_ok)
    proxy = await start_proxy(
        {
            "listen": NORMALIZE,
            "backends": {"primary": {"kind": "http", "url": primary.url}},
            "routes": [{"name": "r", "path": "/users/*", "methods": ["*"], "primary": "primary"}],
            "sink": {"kind": "jsonl", "path": str(tmp_path / "mismatches.jsonl")},
        },
        server=server,
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(raw_url(proxy, "/users/../admin/mode")) as r:
                await assert_envelope(r, 404, "not_found")
            async with session.get(raw_url(proxy, "/users/..%2fstats")) as r:
                await assert_envelope(r, 400, "bad_request")
            async with session.get(raw_url(proxy, "/users/a/../b")) as r:
                assert r.status == 200
        status, _ = await raw_exchange(proxy, absolute_form("http://example.com/users/1?x=1"))
        assert status == 200
    finally:
        await proxy.stop()
    assert [s.path_qs for s in primary.seen] == ["/users/b", "/users/1?x=1"]
