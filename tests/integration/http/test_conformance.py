"""HTTP/1.1 conformance of the drop-in path, on both server paths: every client gets exactly
one final answer, its own, and no backend connection is reused while an answer is pending."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httptools
import pytest

from tests.support.scripted import CLOSE, Exchange, ScriptedBackend, Step, answer
from tests.support.servers import RunningProxy, start_proxy

pytestmark = pytest.mark.integration

Script = Callable[[Exchange], list[Step]]
Factory = Callable[..., Awaitable[tuple[ScriptedBackend, RunningProxy]]]


def own(exchange: Exchange) -> list[Step]:
    """The default answer: the request's own target, so a crossed answer shows."""
    return [answer("200 OK", exchange.target.encode(), "Content-Type: text/plain")]


@pytest.fixture(params=["direct", "app"])
async def setup(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Factory]:
    started: list[tuple[ScriptedBackend, RunningProxy]] = []

    async def make(script: Script = own, **overrides: Any) -> tuple[ScriptedBackend, RunningProxy]:
        backend = await ScriptedBackend(script, **overrides.pop("backend", {})).start()
        raw = {
            "backends": {"legacy": {"kind": "http", "url": backend.url, "timeout_seconds": 5}},
            "routes": [{"name": "r", "path": "/api/*", "methods": ["*"], "primary": "legacy"}],
            "sink": {"kind": "jsonl", "path": str(tmp_path / "m.jsonl")},
            **overrides,
        }
        proxy = await start_proxy(raw, server=request.param)
        started.append((backend, proxy))
        return backend, proxy

    yield make
    for backend, proxy in started:
        await proxy.stop()
        await backend.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(client: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str, bytes]:
    async with client.request(kw.pop("method", "GET"), url, **kw) as resp:
        return resp.status, resp.reason or "", await resp.read()


async def test_interim_answer_is_consumed_and_never_crosses_to_another_client(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target == "/api/slow-create":
            created = answer("201 Created", b'{"secret": "for A only"}')
            return [b"HTTP/1.1 100 Continue\r\n\r\n", 0.5, created]
        return own(exchange)

    backend, proxy = await setup(script)
    a = asyncio.ensure_future(
        get(client, proxy.url + "/api/slow-create", method="POST", data=b"{}", expect100=True)
    )
    await asyncio.sleep(0.15)
    assert await get(client, proxy.url + "/api/users/101") == (200, "OK", b"/api/users/101")
    assert await a == (201, "Created", b'{"secret": "for A only"}')
    assert backend.violations() == []
    assert "expect" not in backend.exchanges[0].headers


async def test_early_hints_then_the_answer_then_reuse(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        return [hints, 0.05, *own(exchange)]

    backend, proxy = await setup(script)
    for i in range(3):
        status, reason, body = await get(client, f"{proxy.url}/api/{i}")
        assert (status, reason, body) == (200, "OK", f"/api/{i}".encode())
    assert backend.connections == 1
    assert backend.violations() == []


@pytest.mark.parametrize(
    "bodiless",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    ],
)
async def test_bodiless_answers_then_the_next_request(
    setup: Factory, client: aiohttp.ClientSession, bodiless: bytes
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        return [bodiless] if exchange.target == "/api/empty" else own(exchange)

    backend, proxy = await setup(script)
    status, _, body = await get(client, proxy.url + "/api/empty")
    assert status in (204, 304) and body == b""
    assert await get(client, proxy.url + "/api/next") == (200, "OK", b"/api/next")
    assert backend.connections == 1
    assert backend.violations() == []


async def test_head_answer_has_no_body_and_the_next_request_is_its_own(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.method == "HEAD":
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"]
        return own(exchange)

    backend, proxy = await setup(script)
    async with client.head(proxy.url + "/api/h") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""
    assert await get(client, proxy.url + "/api/after") == (200, "OK", b"/api/after")
    assert backend.violations() == []


async def test_chunked_body_with_trailers(setup: Factory, client: aiohttp.ClientSession) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target != "/api/chunked":
            return own(exchange)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        return [head, b"5\r\nhello\r\n", 0.02, b"6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"]

    backend, proxy = await setup(script)
    status, _, body = await get(client, proxy.url + "/api/chunked")
    assert (status, body) == (200, b"hello world")
    assert await get(client, proxy.url + "/api/next") == (200, "OK", b"/api/next")
    assert backend.connections == 1
    assert backend.violations() == []


async def test_connection_close_mid_pool(setup: Factory, client: aiohttp.ClientSession) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target == "/api/closing":
            return [answer("200 OK", b"bye", "Connection: close"), CLOSE]
        return own(exchange)

    backend, proxy = await setup(script)
    assert await get(client, proxy.url + "/api/first") == (200, "OK", b"/api/first")
    assert await get(client, proxy.url + "/api/closing") == (200, "OK", b"bye")
    assert await get(client, proxy.url + "/api/after") == (200, "OK", b"/api/after")
    assert backend.connections == 2
    assert backend.violations() == []


async def test_backend_answering_before_reading_a_large_body(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target == "/api/upload":
            return [answer("413 Payload Too Large", b"too big")]
        return own(exchange)

    backend, proxy = await setup(
        script,
        backend={"body_delay": lambda e: 1.0 if e.target == "/api/upload" else 0.0},
        limits={"max_body_bytes": 64 * 1024 * 1024},
    )
    body = b"x" * (32 * 1024 * 1024)
    upload = io.BytesIO(body)
    status, _, answered = await get(client, proxy.url + "/api/upload", method="POST", data=upload)
    assert (status, answered) == (413, b"too big")
    assert await get(client, proxy.url + "/api/next") == (200, "OK", b"/api/next")
    first, after = backend.exchanges
    assert after.conn != first.conn  # the upload's connection still had request bytes to send
    assert backend.violations() == []


async def test_unasked_bytes_on_an_idle_connection_are_never_an_answer(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target == "/api/chatty":
            return [answer("200 OK", b"mine"), 0.05, answer("200 OK", b"nobody asked")]
        return own(exchange)

    backend, proxy = await setup(script)
    assert await get(client, proxy.url + "/api/chatty") == (200, "OK", b"mine")
    await asyncio.sleep(0.2)
    assert await get(client, proxy.url + "/api/next") == (200, "OK", b"/api/next")
    assert backend.connections == 2


async def test_unasked_bytes_in_the_same_read_as_the_answer_are_dropped(
    setup: Factory, client: aiohttp.ClientSession
) -> None:
    def script(exchange: Exchange) -> list[Step]:
        if exchange.target == "/api/glued":
            return [answer("200 OK", b"mine") + answer("200 OK", b"nobody asked")]
        return own(exchange)

    backend, proxy = await setup(script)
    assert await get(client, proxy.url + "/api/glued") == (200, "OK", b"mine")
    assert await get(client, proxy.url + "/api/next") == (200, "OK", b"/api/next")
    assert backend.connections == 2


async def raw_exchange(url: str, data: bytes, *, answers: int = 1) -> list[tuple[int, bytes]]:
    """Send ``data`` on one connection and parse ``answers`` answers (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    got: list[tuple[int, bytes]] = []
    body: list[bytes] = []

    class Sink:
        def on_body(self, chunk: bytes) -> None:
            body.append(chunk)

        def on_message_complete(self) -> None:
            got.append((parser.get_status_code(), b"".join(body)))
            body.clear()

    parser = httptools.HttpResponseParser(Sink())
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            while len(got) < answers:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                parser.feed_data(chunk)
    finally:
        writer.close()
    return got


async def test_pipelined_requests_get_their_own_answers_in_order(setup: Factory) -> None:
    backend, proxy = await setup()
    requests = b"".join(f"GET /api/p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(1, 4))
    got = await raw_exchange(proxy.url, requests, answers=3)
    assert got == [(200, b"/api/p1"), (200, b"/api/p2"), (200, b"/api/p3")]
    assert backend.violations() == []


async def read_head(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(0.5):  # curl waits 1 s for a 100 before sending anyway
        return await reader.readuntil(b"\r\n\r\n")


async def test_expect_100_continue_end_to_end(setup: Factory) -> None:
    backend, proxy = await setup()
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = (
            "POST /api/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        writer.write(head.encode())
        assert await read_head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await read_head(reader)
        assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        writer.close()
    (exchange,) = backend.exchanges
    assert exchange.body == b"hello"
    assert "expect" not in exchange.headers


@pytest.mark.parametrize(
    ("target", "length", "status"),
    [("/elsewhere", 5, b"404"), ("/api/big", 11 * 1024 * 1024, b"413")],
)
async def test_expect_refused_before_the_body_is_sent(
    setup: Factory, target: str, length: int, status: bytes
) -> None:
    backend, proxy = await setup()
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        assert (await read_head(reader)).startswith(b"HTTP/1.1 " + status)
    finally:
        writer.close()
    assert backend.exchanges == []


async def test_unknown_expectation_is_417(setup: Factory, client: aiohttp.ClientSession) -> None:
    backend, proxy = await setup()
    async with client.post(proxy.url + "/api/x", data=b"1", headers={"Expect": "teapot"}) as r:
        assert r.status == 417
        assert (await r.json())["error"]["code"] == "expectation_failed"
    assert backend.exchanges == []
