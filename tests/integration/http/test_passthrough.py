"""Clients get exactly the primary's answer; the primary gets the client's request."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp import web

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory

pytestmark = pytest.mark.integration


async def test_status_headers_and_binary_body_pass_through(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    payload = bytes(range(256)) * 4

    async def binary(request: web.Request) -> web.Response:
        resp = web.Response(status=203, body=payload, content_type="application/x-thing")
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        resp.headers["X-Custom"] = "yes"
        resp.headers["Keep-Alive"] = "timeout=5"
        return resp

    primary = await upstream_factory(binary)
    proxy = await proxy_factory(primary)
    async with client.get(proxy.url + "/blob?x=1&x=2&y=%20z") as resp:
        body = await resp.read()
        assert resp.status == 203
        assert body == payload
        assert resp.headers["Content-Type"] == "application/x-thing"
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert resp.headers["X-Custom"] == "yes"
        assert "Keep-Alive" not in resp.headers
        assert len(resp.headers["X-Request-ID"]) == 32
    assert primary.seen[0].path_qs == "/blob?x=1&x=2&y=%20z"


async def test_request_reaches_primary_with_forwarding_headers(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    primary = await upstream_factory()
    proxy = await proxy_factory(primary)
    headers = {
        "X-Request-ID": "req-123",
        "X-Requester-ID": "billing",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "drop me",
        "X-Multi": "1",
    }
    async with client.post(proxy.url + "/users", data=b'{"a":1}', headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == "req-123"
    seen = primary.seen[0]
    got = dict((k.lower(), v) for k, v in seen.headers)
    assert seen.method == "POST" and seen.body == b'{"a":1}'
    assert got["x-request-id"] == "req-123"
    assert got["x-requester-id"] == "billing"
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == proxy.url.removeprefix("http://")
    assert "x-hop" not in got
    assert "user-agent" in got  # the client's own, not one added by the proxy
    assert next(v for k, v in seen.headers if k.lower() == "user-agent").startswith("Python")


async def test_large_chunked_body_is_streamed(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    chunk = os.urandom(64 * 1024)
    first_chunk_sent = asyncio.Event()
    release = asyncio.Event()

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(chunk)
        first_chunk_sent.set()
        await release.wait()
        for _ in range(63):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    primary = await upstream_factory(chunked)
    proxy = await proxy_factory(primary)
    async with client.get(proxy.url + "/big") as resp:
        # The first chunk reaches the client while the primary is still holding the rest:
        # the proxy streams instead of buffering the whole body.
        first = await asyncio.wait_for(resp.content.readexactly(len(chunk)), 5)
        assert first == chunk
        release.set()
        rest = await resp.read()
    assert len(first) + len(rest) == 64 * len(chunk)
    assert resp.headers.get("Transfer-Encoding") == "chunked"


async def test_non_utf8_header_bytes_pass_through_both_ways(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    async def echo_header(request: web.Request) -> web.Response:
        return web.Response(body=b"ok", headers={"X-Out": request.headers["X-Bin"]})

    primary = await upstream_factory(echo_header)
    proxy = await proxy_factory(primary)
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Bin: caf\xe9\xff!\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"\r\nX-Out: caf\xe9\xff!\r\n" in raw
    assert (b"X-Bin", b"caf\xe9\xff!") in [
        (k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in primary.seen[0].headers
    ]


async def test_head_keeps_content_length(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async def head(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    proxy = await proxy_factory(await upstream_factory(head))
    async with client.head(proxy.url + "/x") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"


async def test_gzip_body_is_not_decoded(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    import gzip

    packed = gzip.compress(b'{"a": 1}')

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=packed, headers={"Content-Encoding": "gzip"})

    proxy = await proxy_factory(await upstream_factory(gz))
    async with client.get(proxy.url + "/x") as resp:
        assert await resp.read() == packed
        assert resp.headers["Content-Encoding"] == "gzip"
