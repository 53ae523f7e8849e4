"""A TCP forwarder whose link can be cut and restored: a store "going down" for a test, as
the network would do it, while the store itself keeps its data."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


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

    async def refuse(self) -> None:
        """Stop listening: a connection is refused at once, before any request goes out (a
        store whose address nothing answers), and the open ones break. ``listen()`` takes
        the same port again."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.restore()

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


class DelayedLink:
    """A TCP forwarder in a thread of its own whose client-to-target bytes arrive ``delay``
    seconds late; bytes still on their way when the client goes away are dropped, as a
    request still in the network when its sender died never arrives. For tests whose code
    under test runs in other processes (the loop of the test cannot carry the link)."""

    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delayed-link", daemon=True)
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DelayedLink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in list(self._open):
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        gone = asyncio.Event()

        async def take() -> None:  # client -> queue, stamped; EOF or reset: the client is gone
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    pending.put_nowait((time.monotonic() + self.delay, data))
            gone.set()

        async def deliver() -> None:  # queue -> target once due, unless the client went away
            with contextlib.suppress(ConnectionError, OSError):
                while not (gone.is_set() and pending.empty()):
                    get = asyncio.ensure_future(pending.get())
                    stop = asyncio.ensure_future(gone.wait())
                    await asyncio.wait([get, stop], return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if not get.done():
                        get.cancel()
                        continue
                    due, data = get.result()
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    if gone.is_set():
                        return  # dropped: its sender died before it arrived
                    up_writer.write(data)
                    await up_writer.drain()

        async def back() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()

        try:
            await asyncio.wait(
                [asyncio.ensure_future(c) for c in (take(), deliver(), back())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            await asyncio.sleep(self.delay)  # let due bytes of a live client go through
        finally:
            self._open -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()
