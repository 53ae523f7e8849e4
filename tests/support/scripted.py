"""A raw HTTP/1.1 backend that plays scripted answers and watches its connections.

Each request's answer is a list of steps: ``bytes`` are written, a ``float`` is slept, ``CLOSE``
closes the connection. Every connection is read continuously, so a request that arrives
while the previous answer on the same connection is still being written is seen:
:meth:`ScriptedBackend.violations` lists them (a proxy must never reuse a connection whose
answer is pending).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSE = object()
Step = bytes | float | object


@dataclass
class Exchange:
    conn: int
    method: str
    target: str
    headers: dict[str, str]
    arrived: float
    body: bytes = b""
    answered: float | None = None


def answer(status: str, body: bytes = b"", *headers: str) -> bytes:
    """A whole HTTP/1.1 answer with Content-Length."""
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class ScriptedBackend:
    script: Callable[[Exchange], list[Step]]
    body_delay: Callable[[Exchange], float] = lambda _: 0.0
    exchanges: list[Exchange] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> ScriptedBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        return len({e.conn for e in self.exchanges})

    def violations(self) -> list[str]:
        """Requests that arrived on a connection before its previous answer was complete."""
        by_conn: dict[int, list[Exchange]] = defaultdict(list)
        for exchange in self.exchanges:
            by_conn[exchange.conn].append(exchange)
        found = []
        for exchanges in by_conn.values():
            for prev, nxt in itertools.pairwise(exchanges):
                if prev.answered is None or nxt.arrived < prev.answered:
                    found.append(f"{nxt.method} {nxt.target} arrived while {prev.target} pending")
        return found

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        conn = next(self._ids)
        queue: asyncio.Queue[Exchange | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(conn, reader, queue))
                group.create_task(self._write(queue, writer))
        except* (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _read(self, conn: int, reader: asyncio.StreamReader, queue: asyncio.Queue) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                await queue.put(None)
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            exchange = Exchange(conn, method, target, headers, time.monotonic())
            self.exchanges.append(exchange)
            await queue.put(exchange)  # answered whether or not its body was read yet
            delay = self.body_delay(exchange)
            if delay:
                await asyncio.sleep(delay)
            length = int(headers.get("content-length", "0"))
            if length:
                exchange.body = await reader.readexactly(length)

    async def _write(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while (exchange := await queue.get()) is not None:
            for step in self.script(exchange):
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif step is CLOSE:
                    exchange.answered = time.monotonic()
                    writer.close()
                    return
                else:
                    writer.write(step)  # type: ignore[arg-type]
                    await writer.drain()
            exchange.answered = time.monotonic()
