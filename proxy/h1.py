"""A lean HTTP/1.1 client for the hot path: keep-alive pools on asyncio protocols, responses
parsed by llhttp (httptools), headers kept as the raw bytes the backend sent.

Why not aiohttp's client: per call it cost about as much CPU as everything else the proxy
does for a request (measured: see the performance section of the README). This
client does only what a proxy needs — one request at a time per connection, no cookies, no
redirects, no decompression, no automatic headers — and passes the same pass-through tests.

Interim answers (``1xx`` other than ``101``) are consumed: ``send()`` returns the final answer
only, and a connection goes back to the pool only when its final answer has been read whole,
the request was written out whole, and nothing arrived that nobody asked for. A ``101`` is a
protocol error (the proxy never asks to upgrade); trailers of a chunked body are dropped.

Errors (all ``BackendError``): ``ConnectFailed`` (nothing was sent), ``Disconnected`` (the
connection closed before a response began), ``PayloadError`` (it broke off mid-body),
``ProtocolError`` (not HTTP/1.1 we can parse). The first two are safe to retry for idempotent
requests. Deadlines are loop times given to ``send`` and ``Response.read``: a timer is armed
only while one waits, cheaper than an ``asyncio.timeout`` around each call.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator

import httptools
from multidict import CIMultiDict

from comparators.errors import ShadowProxyError

HIGH_WATER = 256 * 1024  # buffered body bytes before we stop reading from the backend


class BackendError(ShadowProxyError):
    kind = "protocol"


class ConnectFailed(BackendError):
    kind = "connect"


class PoolBusy(BackendError):
    """Every connection of the pool is in use and ``max_waiting`` callers already wait for
    one: refused at once rather than queued (a slow backend must not pile up requests)."""

    kind = "busy"


class Disconnected(BackendError):
    kind = "disconnected"
    reused = False  # on a kept-alive connection: the backend likely closed it while idle


class PayloadError(BackendError):
    kind = "payload"


class ProtocolError(BackendError):
    kind = "protocol"


class Connection(asyncio.Protocol):
    """One keep-alive connection; the parser's callbacks fill in the current response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.reset(head=False)

    def reset(self, *, head: bool) -> None:
        self.busy = True  # a request of ours is out; cleared by the pool on release
        self.head = head
        self.interim = False
        self.unasked = False  # bytes after the final answer: never reuse, never read them
        self.status = 0
        self.reason = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_complete = False
        self.complete = False
        self.keep_alive = False
        self.error: BackendError | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for (on an idle pooled connection): they would be read as the
            # next request's answer. Never reuse such a connection.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the backend switched protocols (101) unasked"))
            self.close()
        except httptools.HttpParserError as e:
            self._fail(ProtocolError(f"unparseable response: {e}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_complete:
                self.error = PayloadError("the backend closed the connection mid-body")
            else:
                self.error = Disconnected("the backend closed the connection")
        self._wake()

    # --- llhttp callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # another answer after the final one, in the same read
            self.unasked = True
            return
        # A new answer on this connection: after an interim one, start its head afresh.
        self.reason = b""
        self.raw_headers = []

    def on_status(self, status: bytes) -> None:
        if not self.unasked:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_complete:  # trailers of a chunked body are dropped
            self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.unasked:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints, ...: not the answer. llhttp finishes it as a
            # bodiless message and goes on parsing the final one on the same connection.
            self.interim = True
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_complete = True
        if self.head:
            # llhttp would wait for a body a HEAD answer never has: finish here, and never
            # reuse the connection (the parser still expects those bytes).
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head or self.unasked:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.unasked:
            return
        if self.interim:
            self.interim = False
            return
        if not self.head:
            self.complete = True
        self._wake()

    # --- for the response ---------------------------------------------------------------

    def _fail(self, error: BackendError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float | None = None) -> None:
        """Until the parser or the connection has news; TimeoutError at ``deadline`` (loop
        time), when given."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        """The final answer was read whole and the backend keeps the connection; our request
        went out whole too (a backend that answered before reading a large body would read
        its rest as the next request)."""
        transport = self.transport
        return (
            self.complete
            and not self.unasked
            and self.keep_alive
            and not self.closed
            and self.error is None
            and transport is not None
            and transport.get_write_buffer_size() == 0
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to one host:port, at most ``limit`` in use at once; over TLS
    when ``ssl`` is given (SNI and the certificate check use ``server_name``, else ``host``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int,
        connect_timeout: float,
        idle_seconds: float = 15.0,
        ssl: ssl_module.SSLContext | None = None,
        server_name: str | None = None,
        max_waiting: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.limit = limit
        self.max_waiting = max_waiting  # None: callers wait for a slot without a bound
        self.waiting = 0
        self._busy = 0  # slots held: connections handed out and not yet released
        self._ssl = ssl
        self._server_name = server_name or host
        self._idle: deque[tuple[float, Connection]] = deque()
        # Callers waiting for a slot, first come first served. A released slot passes to the
        # first of them without being freed in between, so nobody can overtake the queue.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._connect_timeout = connect_timeout
        # Below the keep-alive timeout of most servers (Node 5 s aside): an older idle
        # connection is more likely closed by the backend than worth reusing.
        self._idle_seconds = idle_seconds

    async def acquire(
        self, *, head: bool, deadline: float | None = None
    ) -> tuple[Connection, bool]:
        """(connection, reused). ``deadline`` (loop time) bounds the wait for a slot and the
        connect (TimeoutError); with ``max_waiting`` callers already waiting, ``PoolBusy``
        at once.

        The slots are a counter and a queue of futures rather than an ``asyncio.Semaphore``:
        a free slot costs one comparison, where ``Semaphore.acquire`` scans its waiters on
        every call (a few percent of a proxied request's CPU in the HTTP benchmark)."""
        if self._busy >= self.limit or self._waiters:
            await self._queue_for_slot(deadline)  # the slot is ours, counted, on return
        else:
            self._busy += 1
        try:
            loop = asyncio.get_running_loop()
            oldest = loop.time() - self._idle_seconds
            while self._idle:
                since, conn = self._idle.pop()
                if not conn.closed and since >= oldest:
                    conn.reset(head=head)
                    return conn, True
                conn.close()
            until = loop.time() + self._connect_timeout
            try:
                async with asyncio.timeout_at(until if deadline is None else min(until, deadline)):
                    if self._ssl is None:
                        _, conn = await loop.create_connection(Connection, self.host, self.port)
                    else:
                        _, conn = await loop.create_connection(
                            Connection,
                            self.host,
                            self.port,
                            ssl=self._ssl,
                            server_hostname=self._server_name,
                        )
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise  # the caller's time is up, not the connect's
                raise ConnectFailed(
                    f"cannot connect to {self.host}:{self.port}: no answer in "
                    f"{self._connect_timeout} s"
                ) from None
            except OSError as e:
                raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {e!r}") from e
            conn.reset(head=head)
            return conn, False
        except BaseException:
            self._free_slot()
            raise

    async def _queue_for_slot(self, deadline: float | None) -> None:
        if self.max_waiting is not None and self.waiting >= self.max_waiting:
            raise PoolBusy(
                f"{self.host}:{self.port}: all {self.limit} connections in use and "
                f"{self.waiting} requests waiting"
            )
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[None] = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _expire, slot)
        self._waiters.append(slot)
        self.waiting += 1
        try:
            await slot
        except BaseException:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self._free_slot()  # handed to us as we were cancelled: pass it on
            elif slot in self._waiters:  # timed out or cancelled while queued
                self._waiters.remove(slot)
            raise
        finally:
            self.waiting -= 1
            if timer is not None:
                timer.cancel()

    def _free_slot(self) -> None:
        """Give a held slot to the first live waiter, or back to the pool."""
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # still counted in _busy: it changes hands
                return
        self._busy -= 1

    def release(self, conn: Connection) -> None:
        conn.busy = False
        if conn.reusable():
            self._idle.append((asyncio.get_running_loop().time(), conn))
        else:
            conn.close()
        self._free_slot()

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


class Response:
    """The backend's answer, body not yet read; ``release()`` exactly once."""

    def __init__(self, conn: Connection, pool: Pool) -> None:
        self._conn = conn
        self._pool = pool
        self._released = False
        self.status = conn.status
        self.reason = conn.reason.decode("latin-1")
        self.raw_headers = conn.raw_headers
        self._headers: CIMultiDict[str] | None = None
        self.deadline: float | None = None  # loop time by which the body must be read

    @property
    def headers(self) -> CIMultiDict[str]:
        """Decoded like aiohttp's server does (UTF-8, surrogateescape): the original bytes
        come back when the proxy writes them out again."""
        if self._headers is None:
            self._headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
                for k, v in self.raw_headers
            )
        return self._headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), as the bytes the backend sent."""
        for key, value in self.raw_headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None

    @property
    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def complete(self) -> bool:
        """The whole body has arrived (a small answer usually comes in one read)."""
        return self._conn.complete

    @property
    def content(self) -> Response:
        return self  # aiohttp's ``response.content.iter_any()`` spelling

    async def iter_any(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                return
            await conn.wait()

    async def read(self, deadline: float | None = None) -> bytes:
        """The whole body; TimeoutError at ``deadline`` (loop time), when given. What has
        arrived is taken as it comes: past ``HIGH_WATER`` bytes buffered the connection stops
        reading until someone takes them, so waiting for the end without taking would wait
        forever on a large body."""
        conn = self._conn
        parts: list[bytes] = []
        while not conn.complete:
            if conn.chunks:
                parts.append(conn.take())
            await conn.wait(deadline)
        if conn.chunks:
            parts.append(conn.take())
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._conn)


async def read_capped(response: Response, cap: int) -> bytes | None:
    """The body, or None past ``cap`` bytes (the rest is not read: the connection closes)."""
    if response.content_length is not None and response.content_length > cap:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def send(
    pool: Pool, method: str, head: bytes, body: bytes | None, deadline: float | None = None
) -> tuple[Response, bool]:
    """Write one request and wait for the response head. Returns (response, reused).
    ``deadline`` (loop time) bounds the whole: TimeoutError. One timer per wait instead of
    an ``asyncio.timeout`` around the call, which costs several µs a request on the hot
    path."""
    conn, reused = await pool.acquire(head=method == "HEAD", deadline=deadline)
    try:
        if conn.transport is None or conn.closed:
            raise Disconnected("the connection closed before the request was sent")
        conn.transport.write(head + body if body else head)
        while not conn.headers_complete:
            await conn.wait(deadline)
    except BaseException as e:
        conn.close()
        pool.release(conn)
        if isinstance(e, Disconnected):
            e.reused = reused
        raise
    return Response(conn, pool), reused


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def header_lines(headers: CIMultiDict[str]) -> bytes:
    """``Name: value`` lines, as bytes. Header values arrive decoded with surrogateescape
    (aiohttp's server) and go out as the bytes they came in as."""
    text = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ProtocolError("a line break inside a header: refused")
    return text.encode("utf-8", "surrogateescape")


def request_head(method: str, target: str, host: str, lines: bytes, body: bytes | None) -> bytes:
    """The request line, ``Host``, the header ``lines`` (``header_lines``) and the body's
    length, as bytes."""
    if "\r" in target or "\n" in target or " " in target:
        raise ProtocolError("a line break or space inside the target: refused")
    start = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("utf-8", "surrogateescape")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        return start + lines + b"Content-Length: %d\r\n\r\n" % len(body or b"")
    return start + lines + b"\r\n"
