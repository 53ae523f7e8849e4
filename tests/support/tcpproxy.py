"""A TCP forwarder whose link can be cut and restored: a store "going down" for a test, as
the network would do it, while the store itself keeps its data."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableLink:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self.hanging = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def hang(self) -> None:
        """Break the open connections; new ones are accepted and never answered (a store
        that takes requests and stalls)."""
        self.hanging = True
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.up = True
        self.hanging = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        if self.hanging:
            self._writers.add(writer)
            try:
                with contextlib.suppress(ConnectionError, OSError):
                    while await reader.read(65536):
                        pass  # swallowed: no answer ever comes
            finally:
                self._writers.discard(writer)
                writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
