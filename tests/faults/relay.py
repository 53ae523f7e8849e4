"""A TCP relay that plays a backend's faults, in a thread of its own (the code under test runs
in other processes, and a deployed proxy may be on another host).

    relay = FaultRelay(("10.0.0.7", 8002), listen=("0.0.0.0", 18002)).start()
    relay.set(Mode.RESET)             # every new connection: the request is read, then RST
    relay.set(Mode.PASS)              # bytes go through to the real backend again
    relay.stop()

Modes (a change breaks every open connection, so a pooled connection cannot keep passing):

``pass``     forward to the target
``delay``    forward, each chunk from the target held back ``delay`` seconds (a slow backend)
``down``     nothing listens: connections are refused (the port is taken again by ``pass``)
``cut``      connections are accepted and broken at once, before any byte
``hang``     connections are accepted, requests read and never answered
``reset``    the request head is read, then the connection is reset (RST)
``status500``, ``garbage`` (bytes that are not HTTP), ``huge`` (a 200 with a 1 GiB body,
written until the peer goes away), ``mismatch`` (a 200 JSON body unlike any backend's):
HTTP answers of the relay's own, one per request read, connection kept alive

The ideas are :class:`tests.support.tcpproxy.CuttableLink`'s (cut, hang, refuse/listen) and
:class:`~tests.support.tcpproxy.DelayedLink`'s (a loop in a thread); this one listens on a
given host and port and adds the HTTP faults. With ``record_ids`` it notes every
``X-Request-ID`` the client side sends through (:meth:`seen_ids`): what reached the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any


class Mode(enum.StrEnum):
    PASS = "pass"
    DELAY = "delay"
    DOWN = "down"
    CUT = "cut"
    HANG = "hang"
    RESET = "reset"
    STATUS_500 = "status500"
    GARBAGE = "garbage"
    HUGE = "huge"
    MISMATCH = "mismatch"


CANNED = {Mode.STATUS_500, Mode.GARBAGE, Mode.HUGE, Mode.MISMATCH}
HUGE_BYTES = 1 << 30
GARBAGE = b"\x00\xff\xfeSSH-2.0-not-http \x1b[31m\r\n\r\n\x00\x01\x02 garbage garbage\n" * 64
_REQUEST_ID = re.compile(rb"(?im)^x-request-id:[ \t]*([^\r\n]+?)[ \t]*\r?$")
_CHUNK = 65536


def parse_hostport(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError naming what is wrong."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 10.0.0.7:8002)")
    return host, int(port)


class FaultRelay:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        name: str = "relay",
        record_ids: bool = False,
    ) -> None:
        self.target = target
        self.host, self.port = listen
        self.name = name
        self.mode = Mode.PASS
        self.delay = 0.0
        self.record_ids = record_ids
        self.accepted = 0
        self._ids: set[str] = set()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"fault-{name}", daemon=True)

    # -- the test's side (any thread) -----------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> FaultRelay:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"{self.name} relay cannot listen on {self.address}: {self._error}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def set(self, mode: Mode | str, *, delay: float = 0.0) -> None:
        """Switch to ``mode``; open connections are broken."""
        self._call(self._set(Mode(mode), delay))

    def seen_ids(self) -> frozenset[str]:
        return frozenset(self._ids)

    def clear_ids(self) -> None:
        self._ids.clear()

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float = 30) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the relay's loop -------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen())
        except OSError as e:
            self._error = e
        self._ready.set()
        if self._error is None:
            self._loop.run_forever()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._abort_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _set(self, mode: Mode, delay: float) -> None:
        self.mode, self.delay = mode, delay
        if mode is Mode.DOWN:
            await self._close()
        else:
            self._abort_all()
            await self._listen()

    def _abort_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stop(): no "task cancelled" noise
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        mode = self.mode
        self._open.add(writer)
        try:
            if mode in (Mode.CUT, Mode.DOWN):
                return
            if mode is Mode.HANG:
                with contextlib.suppress(ConnectionError, OSError):
                    while await reader.read(_CHUNK):
                        pass  # swallowed: no answer ever comes
                return
            if mode is Mode.RESET:
                with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                    await reader.readuntil(b"\r\n\r\n")
                _reset(writer)
                return
            if mode in CANNED:
                await self._answer(mode, reader, writer)
                return
            await self._forward(reader, writer)
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            return
        self._open.add(up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, record=self.record_ids),
                self._pipe(up_reader, writer, delay=self.delay if self.mode is Mode.DELAY else 0),
            )
        finally:
            self._open.discard(up_writer)
            up_writer.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        record: bool = False,
        delay: float = 0.0,
    ) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                if record:
                    window = tail + data
                    self._ids.update(m.decode("latin-1") for m in _REQUEST_ID.findall(window))
                    tail = window[-256:]
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def _answer(
        self, mode: Mode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Our own answer to each request read, until the peer goes away."""
        n = 0
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await _skip_body(reader, head)
                n += 1
                if mode is Mode.GARBAGE:
                    writer.write(GARBAGE)
                    await writer.drain()
                    return
                if mode is Mode.HUGE:
                    await _huge(writer)
                    return
                if mode is Mode.STATUS_500:
                    body = b'{"error": "fault relay: internal server error"}'
                    status = "500 Internal Server Error"
                else:
                    body = b'{"fault_relay": "mismatch", "n": %d, "items": [1, 2, 3]}' % n
                    status = "200 OK"
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()


async def _skip_body(reader: asyncio.StreamReader, head: bytes) -> None:
    match = re.search(rb"(?im)^content-length:[ \t]*(\d+)", head)
    if match:
        await reader.readexactly(int(match.group(1)))
    elif re.search(rb"(?im)^transfer-encoding:[ \t]*chunked", head):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return


async def _huge(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % HUGE_BYTES
    )
    chunk = b"[" + b"0," * (_CHUNK // 2 - 1)
    sent = 0
    while sent < HUGE_BYTES:
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
