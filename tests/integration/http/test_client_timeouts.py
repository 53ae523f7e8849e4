"""Header, body and idle timeouts on the proxy and admin ports: slow clients are cut, and a
legitimate request is served while hundreds of them hold connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.http.conftest import ProxyFactory, UpstreamFactory
from tests.support.servers import RunningProxy

pytestmark = pytest.mark.integration

FAST = {"header_timeout_seconds": 1, "body_timeout_seconds": 1.5, "idle_timeout_seconds": 2}


@pytest.fixture
async def proxy(upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory) -> RunningProxy:
    return await proxy_factory(await upstream_factory(), listen=FAST, admin=FAST)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it did not)."""
    async with asyncio.timeout(seconds):
        return await reader.read()


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


@pytest.fixture
async def connections() -> AsyncIterator[list[asyncio.StreamWriter]]:
    writers: list[asyncio.StreamWriter] = []
    yield writers
    for writer in writers:
        writer.close()


async def open_slow(url: str, writers: list[asyncio.StreamWriter]) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection(*address(url))
    writers.append(writer)
    return reader


async def test_hundreds_of_slow_heads_are_cut_and_others_served(
    proxy: RunningProxy, connections: list[asyncio.StreamWriter]
) -> None:
    readers = [await open_slow(proxy.url, connections) for _ in range(300)]
    head = b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    trickles = [
        asyncio.ensure_future(trickle(w, head, 0.2)) for w in connections[:150]
    ]  # the other 150 send nothing at all
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/users/1") as resp:
            assert resp.status == 200
        started = time.monotonic()
        answers = await asyncio.gather(*(closed_within(r, 5) for r in readers))
        assert time.monotonic() - started < 5
        async with client.get(proxy.url + "/users/1") as resp:
            assert resp.status == 200
    for task in trickles:
        task.cancel()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:150])
    assert all(a == b"" for a in answers[150:])
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="head") == 150
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="new") == 150


async def test_clients_still_sending_after_their_408_read_it_whole(
    proxy: RunningProxy, connections: list[asyncio.StreamWriter]
) -> None:
    """Lingering close: the 408 and then the end reach clients that keep sending (a close
    with their bytes unread would answer with a reset, which can destroy the 408 first);
    what they send after the 408 is dropped unparsed, and each socket is closed once the
    linger is over."""
    readers = [await open_slow(proxy.url, connections) for _ in range(100)]

    async def keep_sending(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while True:
                # After the 408, a whole request too: it must never be answered.
                writer.write(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n" if reader.at_eof() else b"a")
                await writer.drain()
                await asyncio.sleep(0.004)

    senders = [
        asyncio.ensure_future(keep_sending(w, r)) for w, r in zip(connections, readers, strict=True)
    ]
    try:
        answers = await asyncio.gather(
            *(closed_within(r, 5) for r in readers), return_exceptions=True
        )
    finally:
        for sender in senders:
            sender.cancel()
    assert [a for a in answers if not isinstance(a, bytes)] == []  # no reset, no timeout
    assert all(a.startswith(b"HTTP/1.1 408 ") and a.count(b"HTTP/1.1") == 1 for a in answers)
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="head") == 100
    writer = connections[0]
    with pytest.raises(ConnectionError):  # the linger ends: writes meet a closed socket
        async with asyncio.timeout(10):
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)


async def test_a_slow_body_is_cut(
    proxy: RunningProxy, connections: list[asyncio.StreamWriter]
) -> None:
    reader = await open_slow(proxy.url, connections)
    connections[0].write(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    task = asyncio.ensure_future(trickle(connections[0], b"x" * 100, 0.2))
    await closed_within(reader, 5)
    task.cancel()
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="body") == 1


async def test_a_whole_body_then_a_slow_backend_is_not_cut(
    upstream_factory: UpstreamFactory, proxy_factory: ProxyFactory
) -> None:
    async def slow(request: Any) -> Any:
        from aiohttp import web

        await asyncio.sleep(2.5)  # longer than every client timeout
        return web.json_response({"ok": True})

    proxy = await proxy_factory(await upstream_factory(slow), listen=FAST)
    async with (
        aiohttp.ClientSession() as client,
        client.post(proxy.url + "/users", data=b"{}") as resp,
    ):
        assert resp.status == 200
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="body") == 0


async def test_idle_keep_alive_connections_are_closed(
    proxy: RunningProxy, connections: list[asyncio.StreamWriter]
) -> None:
    reader = await open_slow(proxy.url, connections)
    connections[0].write(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    await closed_within(reader, 5)
    assert time.monotonic() - started >= 1.5  # the idle limit, not the header limit
    assert proxy.value("shadowproxy_client_timeouts_total", port="proxy", phase="idle") == 1


async def test_the_admin_port_cuts_slow_clients_too(
    proxy: RunningProxy, connections: list[asyncio.StreamWriter]
) -> None:
    reader = await open_slow(proxy.admin_url, connections)
    task = asyncio.ensure_future(trickle(connections[0], b"GET /healthz HTTP/1.1\r\n", 0.2))
    assert (await closed_within(reader, 5)).startswith(b"HTTP/1.1 408 ")
    task.cancel()
    async with aiohttp.ClientSession() as client, client.get(proxy.admin_url + "/healthz") as r:
        assert r.status == 200
    assert proxy.value("shadowproxy_client_timeouts_total", port="admin", phase="head") == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("header_timeout_seconds", 0), ("idle_timeout_seconds", -1), ("body_timeout_seconds", "x")],
)
def test_bad_timeouts_are_config_errors(key: str, value: Any) -> None:
    from proxy.errors import ConfigError
    from proxy.settings import settings_from_mapping

    with pytest.raises(ConfigError, match=f"listen.{key} = "):
        settings_from_mapping({"listen": {key: value}})
