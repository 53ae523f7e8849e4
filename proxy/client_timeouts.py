"""Client timeouts on a listening port: how long a client may take to send a request's head,
to send its body, and how long a kept-alive connection may sit idle.

aiohttp's server has only an idle timeout, and a client sending its head a byte at a time, or
its body at all slowly, holds a connection (a file descriptor) for ever. So every accepted
connection's protocol is wrapped in a :class:`Watched` that forwards each call to aiohttp's and
keeps one deadline for the phase the connection is in:

=========  ===========================================  ================================
phase      from                                         limit
=========  ===========================================  ================================
new        accepted, nothing received yet               ``header_timeout_seconds``
head       the first byte of a request                  ``header_timeout_seconds`` (408)
body       the handler starts (head complete)           ``body_timeout_seconds``, until
                                                        the body is all in
busy       the body is all in                           none (backend timeouts apply)
idle       the handler returned                         ``idle_timeout_seconds``
linger     a 408 was sent                               ``LINGER_SECONDS``
=========  ===========================================  ================================

A 408 is followed by a lingering close, as nginx does: our side of the connection is shut
(the client reads the 408, then the end), what the client still sends is read and dropped,
and the socket closes when the client closes its side or after ``LINGER_SECONDS``. Closing
at once would answer the client's next bytes with a reset, which can destroy the 408
before the client has read it.

Handlers say when they start and finish through :func:`tracked` (the direct server) or
:data:`middleware` (applications). One sweeper task per port looks at the deadlines every
``tick`` seconds instead of a timer per connection that every request would re-arm; a cut
comes at most one tick late.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader

from proxy.tasks import spawn
from proxy.types import Handler, RawHandler

log = logging.getLogger("shadowproxy.http")

NEW, IDLE, HEAD, BODY, BUSY, LINGER = range(6)
PHASES = ("new", "idle", "head", "body", "busy", "linger")
LINGER_SECONDS = 2.0
_TIMEOUT_BODY = orjson.dumps(
    {"error": {"code": "request_timeout", "message": "the request head took too long"}}
)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    header: float
    body: float
    idle: float

    @property
    def tick(self) -> float:
        return min(1.0, min(self.header, self.body, self.idle) / 4)


class Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the deadline of its current phase."""

    __slots__ = ("_watch", "content", "deadline", "inner", "phase", "transport")

    def __init__(self, inner: asyncio.Protocol, watch: Watch) -> None:
        self.inner = inner
        self._watch = watch
        self.transport: asyncio.Transport | None = None
        self.content: StreamReader | None = None
        self.phase = NEW
        self.deadline = math.inf

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._watch.connections.add(self)
        self._arm(NEW)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.phase < HEAD:
            self._arm(HEAD)
        elif self.phase == LINGER:
            return  # after the 408: read and dropped, never parsed
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.phase == LINGER:
            return None  # the client is done too: the transport closes
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.connections.discard(self)
        self.content = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def started(self, content: StreamReader) -> None:
        self.content = content
        self._arm(BODY)

    def finished(self) -> None:
        self.content = None
        self._arm(IDLE)

    def _arm(self, phase: int) -> None:
        self.phase = phase
        limits = self._watch.timeouts
        limit = limits.idle if phase == IDLE else limits.body if phase == BODY else limits.header
        self.deadline = self._watch.now() + limit

    def expire(self) -> str | None:
        """Called past the deadline: the phase name when the connection was cut, else None."""
        if self.phase == BODY and self.content is not None and self.content.is_eof():
            self.phase, self.deadline = BUSY, math.inf
            return None
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        if self.phase == LINGER:
            transport.close()
            return None
        phase = PHASES[self.phase]
        # Nothing of an earlier answer may still be queued: a 408 must not land inside it.
        if self.phase == HEAD and transport.get_write_buffer_size() == 0:
            transport.write(REQUEST_TIMEOUT)
            if transport.can_write_eof():
                transport.write_eof()
                self.phase, self.deadline = LINGER, self._watch.now() + LINGER_SECONDS
                return phase
        transport.close()
        return phase


class Watch:
    """The connections of one port and the sweeper that cuts those past their deadline."""

    def __init__(self, timeouts: ClientTimeouts, *, on_cut: Callable[[str], None]) -> None:
        self.timeouts = timeouts
        self.connections: set[Watched] = set()
        self._on_cut = on_cut
        self._task: asyncio.Task[None] | None = None
        self.now = asyncio.get_running_loop().time

    def protocol(self, factory: Callable[[], Any]) -> Callable[[], Watched]:
        return lambda: Watched(factory(), self)

    def start(self) -> None:
        self._task = spawn(self._sweep_forever(), name="client-timeouts")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.tick)
            self.sweep()

    def sweep(self) -> None:
        now = self.now()
        for conn in [c for c in self.connections if c.deadline <= now]:
            phase = conn.expire()
            if phase is not None:
                self._on_cut(phase)


def watched(request: web.BaseRequest) -> Watched | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, Watched) else None


async def _tracked(handler: RawHandler, request: web.BaseRequest) -> web.StreamResponse:
    conn = watched(request)
    if conn is None:
        return await handler(request)
    conn.started(request.content)
    try:
        return await handler(request)
    finally:
        conn.finished()


def tracked(handler: RawHandler) -> RawHandler:
    """``handler`` telling its connection's :class:`Watched` when it starts and finishes."""
    return partial(_tracked, handler)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """:func:`tracked` for every handler of an application."""
    return await _tracked(handler, request)  # type: ignore[arg-type]


class WatchedSite(web.BaseSite):
    """A TCP listener (like ``web.TCPSite``) whose connections are :class:`Watched`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        timeouts: ClientTimeouts,
        on_cut: Callable[[str], None],
        reuse_port: bool = False,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._timeouts, self._on_cut = timeouts, on_cut
        self._watch: Watch | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - BaseSite.start checks the runner is set up
            raise RuntimeError("the runner is not set up")
        self._watch = Watch(self._timeouts, on_cut=self._on_cut)
        self._server = await asyncio.get_running_loop().create_server(
            self._watch.protocol(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
        self._watch.start()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        await super().stop()
