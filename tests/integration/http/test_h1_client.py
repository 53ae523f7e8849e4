"""The lean HTTP/1.1 client against raw sockets: reuse, HEAD, broken and hostile backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from multidict import CIMultiDict

from proxy import h1
from proxy.tasks import spawn

pytestmark = pytest.mark.integration

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RawServer = Callable[[Serve], Awaitable[tuple[int, list[int]]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    servers: list[asyncio.Server] = []

    async def start(serve: Serve) -> tuple[int, list[int]]:
        connections: list[int] = []

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                await serve(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], connections

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        writer.write(OK)
        await writer.drain()


def answers_then_stalls(answer: bytes, seconds: float) -> Serve:
    """A backend that reads one request head, writes ``answer`` and then sends nothing."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(seconds)

    return serve


def head(method: str = "GET") -> bytes:
    return h1.request_head(method, "/x", "h", b"", None)


async def test_connections_are_reused(raw_server: RawServer) -> None:
    port, connections = await raw_server(keep_alive)
    pool = h1.Pool("127.0.0.1", port, limit=4, connect_timeout=1)
    for _ in range(5):
        response, _ = await h1.send(pool, "GET", head(), None)
        assert await response.read() == b"ok"
        response.release()
    assert len(connections) == 1
    pool.close()


async def test_head_answers_are_complete_and_not_reused(raw_server: RawServer) -> None:
    head_then_ok = answers_then_stalls(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 0.5)
    port, connections = await raw_server(head_then_ok)
    pool = h1.Pool("127.0.0.1", port, limit=4, connect_timeout=1)
    for _ in range(2):
        response, _ = await h1.send(pool, "HEAD", head("HEAD"), None)
        assert response.content_length == 1234
        assert await asyncio.wait_for(response.read(), 1) == b""
        response.release()
    assert len(connections) == 2
    pool.close()


async def test_garbage_is_a_protocol_error(raw_server: RawServer) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SPLAT\r\n\r\n")
        await writer.drain()

    port, _ = await raw_server(garbage)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    with pytest.raises(h1.ProtocolError):
        await h1.send(pool, "GET", head(), None)
    # the slot came back: a second request is not stuck waiting for the only slot
    with pytest.raises(h1.ProtocolError):
        await asyncio.wait_for(h1.send(pool, "GET", head(), None), 2)


async def test_body_cut_short_is_a_payload_error(raw_server: RawServer) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    port, _ = await raw_server(short)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    response, _ = await h1.send(pool, "GET", head(), None)
    with pytest.raises(h1.PayloadError):
        await response.read()
    response.release()


async def test_closed_before_answering_is_disconnected(raw_server: RawServer) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    port, _ = await raw_server(hang_up)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    with pytest.raises(h1.Disconnected):
        await h1.send(pool, "GET", head(), None)


async def test_refused_is_connect_failed() -> None:
    from tests.support.servers import free_port

    pool = h1.Pool("127.0.0.1", free_port(), limit=1, connect_timeout=1)
    with pytest.raises(h1.ConnectFailed):
        await h1.send(pool, "GET", head(), None)


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/x\r\nEvil: 1", {}),
        ("/x y", {}),
        ("/x\nEvil: 1", {}),
        ("/x", {"X-A": "1\r\nEvil: 1"}),
        ("/x", {"X\nB": "1"}),
        ("/x", {"X-A": "1\rB"}),
    ],
)
def test_line_breaks_never_reach_the_wire(target: str, headers: dict[str, str]) -> None:
    with pytest.raises(h1.ProtocolError):
        h1.request_head("GET", target, "h", h1.header_lines(CIMultiDict(headers)), None)


def test_request_head_bytes() -> None:
    lines = h1.header_lines(CIMultiDict({"X-Bin": "caf\udce9"}))
    got = h1.request_head("POST", "/a?b=1", "up:80", lines, b"{}")
    assert got == (
        b"POST /a?b=1 HTTP/1.1\r\nHost: up:80\r\nX-Bin: caf\xe9\r\nContent-Length: 2\r\n\r\n"
    )


async def test_stale_kept_alive_connection_is_retried_for_idempotent_only(
    raw_server: RawServer,
) -> None:
    from proxy.http.upstream import HttpUpstream
    from proxy.settings import HttpBackend

    async def one_answer_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # keep-alive promised, but the next request on this connection gets a hang-up
        await reader.readuntil(b"\r\n\r\n")

    port, connections = await raw_server(one_answer_per_connection)
    upstream = HttpUpstream("b", HttpBackend(kind="http", url=f"http://127.0.0.1:{port}"))
    await upstream.start()
    try:
        for method, expected in (("GET", "ok"), ("GET", "ok"), ("POST", "disconnected")):
            try:
                response = await upstream.send(method, "/x", b"", None)
            except h1.Disconnected:
                outcome = "disconnected"
            else:
                outcome = (await response.read()).decode()
                response.release()
            assert outcome == expected, method
        # GET #2 found connection 1 stale and went again on connection 2; the POST found
        # connection 2 stale and was not sent again (it may have been acted on)
        assert len(connections) == 2
    finally:
        await upstream.close()


async def test_read_takes_a_body_larger_than_the_high_water_mark(raw_server: RawServer) -> None:
    """Past HIGH_WATER buffered bytes the connection stops reading until they are taken;
    ``read()`` must take them as they come (a 1 MB DynamoDB Scan page once waited for its
    read timeout here)."""
    body = bytes(range(256)) * (4 * h1.HIGH_WATER // 256)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 65536):  # in pieces, as a network delivers it
            writer.write(body[start : start + 65536])
            await writer.drain()

    port, _ = await raw_server(big)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    response, _ = await h1.send(pool, "GET", head(), None)
    async with asyncio.timeout(20):
        assert await response.read() == body
    response.release()
    pool.close()


async def test_the_slot_queue_is_first_come_first_served_and_loses_no_slot(
    raw_server: RawServer,
) -> None:
    """One connection, five callers: they are answered in the order they asked; one that
    times out, and one cancelled, in the queue leave no slot taken."""
    gate = asyncio.Event()

    async def gated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            await gate.wait()
            writer.write(OK)
            await writer.drain()

    port, _ = await raw_server(gated)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    loop = asyncio.get_running_loop()
    order: list[int] = []

    async def ask(n: int, deadline: float | None = None) -> None:
        response, _ = await h1.send(pool, "GET", head(), None, deadline)
        assert await response.read() == b"ok"
        response.release()
        order.append(n)

    first = spawn(ask(0), name="first")
    await asyncio.sleep(0.1)  # holds the only connection, waiting on the gate
    queued = [spawn(ask(n), name=f"q{n}") for n in (1, 2)]
    doomed = spawn(ask(9, deadline=loop.time() + 0.2), name="doomed")
    cancelled = spawn(ask(8), name="cancelled")
    queued.append(spawn(ask(3), name="q3"))
    await asyncio.sleep(0.05)
    assert pool.waiting == 5
    cancelled.cancel()
    with pytest.raises(TimeoutError):
        await doomed
    assert pool.waiting == 3
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), 5)
    assert order == [0, 1, 2, 3]
    assert cancelled.cancelled() and pool.waiting == 0
    pool.close()


async def test_a_slot_handed_to_a_cancelled_caller_passes_on(raw_server: RawServer) -> None:
    port, _ = await raw_server(keep_alive)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    conn, _ = await pool.acquire(head=False)
    handed = spawn(h1.send(pool, "GET", head(), None), name="handed")
    after = spawn(h1.send(pool, "GET", head(), None), name="after")
    await asyncio.sleep(0.05)
    assert pool.waiting == 2
    pool.release(conn)  # the slot goes to `handed`, which has not run yet...
    handed.cancel()  # ...and never will
    response, _ = await asyncio.wait_for(after, 2)
    assert await response.read() == b"ok"
    response.release()
    assert handed.cancelled() and pool.waiting == 0
    response, _ = await asyncio.wait_for(h1.send(pool, "GET", head(), None), 2)
    response.release()
    pool.close()


async def test_a_deadline_bounds_the_wait_for_the_answer(raw_server: RawServer) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    port, _ = await raw_server(silent)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await h1.send(pool, "GET", head(), None, loop.time() + 0.2)
    # the connection was dropped and its slot freed: the next call is not stuck behind it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(h1.send(pool, "GET", head(), None, loop.time() + 0.2), 2)
    pool.close()


async def test_a_deadline_bounds_the_body_read_and_the_connection_is_not_reused(
    raw_server: RawServer,
) -> None:
    stalls_mid_body = answers_then_stalls(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", 5)
    port, connections = await raw_server(stalls_mid_body)
    pool = h1.Pool("127.0.0.1", port, limit=1, connect_timeout=1)
    loop = asyncio.get_running_loop()
    response, _ = await h1.send(pool, "GET", head(), None, loop.time() + 2)
    async with asyncio.timeout(4) as guard:  # expiring raises out of the block: test fails
        with pytest.raises(TimeoutError):
            await response.read(loop.time() + 0.2)
    assert not guard.expired()
    response.release()
    # the half-read connection was closed, not put back: the next call opens another
    response, reused = await h1.send(pool, "GET", head(), None, loop.time() + 2)
    assert not reused and len(connections) == 2
    response.release()
    pool.close()
