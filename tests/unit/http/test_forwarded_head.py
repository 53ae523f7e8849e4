"""The request head a backend gets, built once from the client's header bytes
(``forward.upstream_headers`` and ``h1.request_head``), against the multidict copy it replaced
as the oracle: for any request aiohttp's server accepts on a real socket, the same bytes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy import h1
from proxy.errors import BadRequest
from proxy.http.forward import upstream_headers
from proxy.http.upstream import HOP_BY_HOP

from .conftest import ThreadedServer

NAMES = [
    "Accept", "accept", "User-Agent", "X-Forwarded-For", "x-forwarded-for", "X-Forwarded-Proto",
    "X-Forwarded-Host", "X-Request-ID", "x-request-id", "Keep-Alive", "TE", "Upgrade",
    "Proxy-Authorization", "Expect", "Content-Type", "Cookie", "X-Custom", "Trailer",
]  # fmt: skip
VALUES = st.text(st.sampled_from("aZ0 ;,=/.-\t\xe9\u20ac"), max_size=10).map(str.strip)


def old_lines(request: web.BaseRequest, rid: str) -> bytes:
    """``upstream_headers`` and ``request_head``'s header lines before: a multidict copy of
    ``request.headers`` less hop-by-hop (and what the first Connection header names)."""
    incoming: CIMultiDictProxy[str] = request.headers
    drop = set(HOP_BY_HOP)
    connection = incoming.get("Connection")
    if connection:
        drop |= {t.strip().lower() for t in connection.split(",")}
    headers = CIMultiDict((k, v) for k, v in incoming.items() if k.lower() not in drop)
    headers.popall("Host", None)
    headers.popall("Content-Length", None)
    peer = request.remote or ""
    prior = headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    headers["X-Request-ID"] = rid
    text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return text.encode("utf-8", "surrogateescape")


def folded(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Names in lower case: aiohttp's parser spells a header it knows its own way (``Accept``
    for ``accept``) in ``request.headers``, so the old copy did too; the client's spelling,
    which the new lines keep, is in ``raw_headers``."""
    pairs = [line.partition(b": ") for line in lines.split(b"\r\n")[:-1]]
    return [(name.lower(), value) for name, _, value in pairs]


class Server(ThreadedServer):
    def __init__(self) -> None:
        self.results: list[tuple[bytes, bytes]] = []
        super().__init__(self.handle)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        rid = request.headers.get("X-Request-ID") or "fresh-id"
        self.results.append((old_lines(request, rid), upstream_headers(request, rid)))
        return web.Response(text="ok")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def exchange(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    lines = [draw(st.sampled_from(["GET /a HTTP/1.1", "POST /a?b=1 HTTP/1.1", "GET / HTTP/1.0"]))]
    if draw(st.booleans()):
        lines.append("Host: " + draw(st.sampled_from(["example.com", "h:8080", "caf\xe9"])))
    headers = draw(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8))
    lines += [f"{name}: {value}" for name, value in headers]
    # At most one Connection header naming headers (the old copy read only the first); the
    # last line's "close" names none.
    if draw(st.booleans()):
        lines.append("Connection: " + draw(st.sampled_from(["close", "X-Custom", "accept, te"])))
    body = draw(st.sampled_from([b"", b"{}"]))
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if lines[0].endswith("1.1"):  # HTTP/1.0 closes unless asked to keep the connection
        lines.append("Connection: close")
    return "\r\n".join([*lines, "", ""]).encode() + body


def test_the_forwarded_head_is_the_old_copys(server: Server) -> None:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(head=requests())
    def check(head: bytes) -> None:
        before = len(server.results)
        answer = exchange(server.port, head)
        if answer.startswith(b"HTTP/1.1 200"):
            old, new = server.results[before]
            assert folded(new) == folded(old)

    check()
    assert len(server.results) >= 100  # most requests were accepted, so compared


def test_every_connection_header_names_what_is_dropped(server: Server) -> None:
    """Where the two differ on purpose: a second Connection header's names are hop-by-hop
    too (RFC 9110 §7.6.1 reads all of them as one list); the old copy read only the first."""
    head = b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: X-A\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n"
    head += b"Connection: x-b, close\r\n\r\n"
    before = len(server.results)
    assert exchange(server.port, head).startswith(b"HTTP/1.1 200")
    _, new = server.results[before]
    assert b"X-A" not in new and b"X-B" not in new and b"X-C: 3\r\n" in new


def test_the_head_goes_out_as_the_lines_came(server: Server) -> None:
    """Byte for byte, the client's spelling of a name included."""
    head = b"POST /a HTTP/1.1\r\nHost: h\r\nX-Bin: caf\xe9\r\naccept: */*\r\n"
    head += b"X-Forwarded-For: 10.0.0.1\r\n"
    head += b"x-forwarded-for: 10.0.0.2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    before = len(server.results)
    assert exchange(server.port, head).startswith(b"HTTP/1.1 200")
    _, lines = server.results[before]
    got = h1.request_head("POST", "/up/a", "backend:80", lines, b"{}")
    assert got == (
        b"POST /up/a HTTP/1.1\r\nHost: backend:80\r\nX-Bin: caf\xe9\r\naccept: */*\r\n"
        b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: h\r\nX-Request-ID: fresh-id\r\nContent-Length: 2\r\n\r\n"
    )


class Parsed:
    """What ``upstream_headers`` reads of a request, for bytes no parser would hand over."""

    remote = "127.0.0.1"
    scheme = "http"
    host = "h"

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw_headers = raw


@pytest.mark.parametrize(
    "raw",
    [
        [(b"X-A", b"1\r\nEvil: 1")],
        [(b"X-A", b"1\rB")],
        [(b"X-A", b"1\nB")],
        [(b"Connection", b"X-B"), (b"X-B", b"2"), (b"X-A", b"1\r\nEvil: 1")],
    ],
)
def test_a_line_break_in_a_header_never_reaches_a_backend(raw: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(BadRequest):
        upstream_headers(Parsed(raw), "rid")  # type: ignore[arg-type]
