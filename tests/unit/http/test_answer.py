"""A whole answer written as bytes (``proxy.http.answer``) against aiohttp's ``web.Response``
as the oracle: for any backend answer and client request, a client reads the same bytes from a
real socket either way (the ``Date`` aiohttp adds is masked: the two may fall in different
seconds). And the headers a comparison sees are those the old multidict copy gave."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.http import wire
from proxy.http.answer import Whole, whole_answer
from proxy.http.upstream import (
    HOP_BY_HOP,
    compared_headers,
    end_to_end_items,
    headers_of,
    lowered,
    with_request_id,
)

from .conftest import ThreadedServer

NAMES = [
    b"Content-Type", b"content-type", b"Content-Length", b"Date", b"Server", b"server",
    b"X-Request-ID", b"x-request-id", b"Connection", b"Keep-Alive", b"Transfer-Encoding",
    b"Set-Cookie", b"X-Custom", b"ETag", b"Cache-Control", b"Vary",
]  # fmt: skip
VALUE_BYTES = st.sampled_from(
    [b"a", b"Z", b" ", b"\t", b"/", b";", b"=", b",", b"\x80", b"\xe9", b"\xff", b"\x01", b"\x7f"]
)
VALUES = st.lists(VALUE_BYTES, max_size=12).map(b"".join)
BODIES = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=64),
    st.integers(16 * 1024 - 2, 16 * 1024 + 2).map(lambda n: b"y" * n),
)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(BODIES)
    headers = []
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=8)):
        if name.lower() == b"content-length":
            value = draw(
                st.sampled_from([str(len(body)).encode(), str(len(body) + 1).encode(), b"0"])
            )
        elif name.lower() == b"connection":
            value = draw(st.sampled_from([b"keep-alive", b"close", b"X-Custom", b"etag, vary"]))
        else:
            value = draw(VALUES)
        headers.append((name, value))
    return {
        "status": draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 500, 599])),
        "reason": draw(st.sampled_from(["OK", "", "Fine Thanks", "Ça va", "Bad\x01"])),
        "headers": headers,
        "body": body,
        "rid": draw(st.sampled_from(["r-1", "0" * 32, "caf\udce9"])),
    }


REQUESTS = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
        "version": st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
        "connection": st.sampled_from([None, "close", "keep-alive"]),
    }
)


def old_headers(raw: list[tuple[bytes, bytes]], rid: str | None) -> CIMultiDict[str]:
    """The forwarder's copy before ``end_to_end_items``: decode all, then drop hop-by-hop."""
    drop = set(HOP_BY_HOP)
    out: CIMultiDict[str] = CIMultiDict()
    for name_b, value_b in raw:
        name = name_b.decode("latin-1")
        if name.lower() == "connection":
            drop |= {t.strip().lower() for t in value_b.decode("latin-1").split(",")}
        out.add(name, value_b.decode("utf-8", "surrogateescape"))
    for name in [n for n in out if n.lower() in drop]:
        out.popall(name, None)
    if rid is not None:
        out["X-Request-ID"] = rid
    return out


class Server(ThreadedServer):
    """A request's path names the case and the way."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        super().__init__(self.handle)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/ping":
            return web.Response(text="pong")
        way, _, key = request.path[1:].partition("/")
        case = self.cases[key]
        items = end_to_end_items(case["headers"])
        body = b"" if request.method == "HEAD" else case["body"]
        if way == "new":
            fast = with_request_id(list(items), case["rid"])
            data = whole_answer(request, case["status"], case["reason"], fast, body)
            case["fast"] = data is not None
            if data is not None:
                return Whole(case["status"], case["reason"], data)
        headers = headers_of(items)
        headers["X-Request-ID"] = case["rid"]
        return web.Response(
            status=case["status"], reason=case["reason"], headers=headers, body=body
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    wire.install()  # as the proxy's build does: obs-text header bytes written back as they came
    s = Server()
    yield s
    s.close()


def exchange(port: int, request: dict[str, Any], path: str) -> bytes:
    """The request (then, on a persistent connection, a pipelined GET that closes); every
    byte the server sent back."""
    head = f"{request['method']} {path} {request['version']}\r\nHost: t\r\n"
    if request["connection"] is not None:
        head += f"Connection: {request['connection']}\r\n"
    if request["method"] in ("POST", "DELETE"):
        head += "Content-Length: 0\r\n"
    head += "\r\n"
    closes = request["connection"] == "close" or (
        request["version"] == "HTTP/1.0" and request["connection"] != "keep-alive"
    )
    if not closes:
        head += "GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", b"".join(chunks))


CASE = {
    "status": 200,
    "reason": "OK",
    "headers": [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"2"),
        (b"Date", b"x"),
        (b"Server", b"nginx"),
    ],
    "body": b"{}",
    "rid": "r-1",
}


def test_a_whole_answer_reads_as_aiohttps_response(server: Server) -> None:
    seen = {True: 0, False: 0}  # written here, or left to aiohttp

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(answer=answers(), request=REQUESTS)
    @example(answer=CASE, request={"method": "GET", "version": "HTTP/1.1", "connection": None})
    def check(answer: dict[str, Any], request: dict[str, Any]) -> None:
        key = str(len(server.cases))
        server.cases[key] = dict(answer)
        want = exchange(server.port, request, f"/old/{key}")
        got = exchange(server.port, request, f"/new/{key}")
        assert got == want
        seen[server.cases[key]["fast"]] += 1

    check()
    assert seen[True] >= 20 and seen[False] >= 20  # the oracle reached both ways


@given(
    headers=st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=10),
    rid=st.one_of(st.none(), st.sampled_from(["r-1", "caf\udce9"])),
    names=st.frozensets(st.sampled_from([n.lower() for n in NAMES])),
)
def test_the_compared_headers_are_the_old_copys(
    headers: list[tuple[bytes, bytes]], rid: str | None, names: frozenset[bytes]
) -> None:
    want = tuple((k.lower(), v) for k, v in old_headers(headers, rid).items())
    items = end_to_end_items(headers)
    if rid is not None:
        with_request_id(items, rid)
    assert lowered(items) == want
    wanted = {name.decode() for name in names}
    got = compared_headers(items, names)
    assert got == tuple(item for item in want if item[0] in wanted)
    if rid is None:
        assert list(headers_of(end_to_end_items(headers)).items()) == list(
            old_headers(headers, None).items()
        )


def test_a_fast_answer_needs_the_bodys_own_length() -> None:
    """Counter-check of the oracle's reach: a Content-Length other than the body's leaves the
    answer to aiohttp, whose writer then trusts the header."""

    class Request:
        version = HttpVersion11
        method = "GET"
        keep_alive = True

    request: Any = Request()
    items = with_request_id(end_to_end_items([(b"Content-Length", b"3")]), "r")
    assert whole_answer(request, 200, "OK", items, b"{}") is None
    items = with_request_id(end_to_end_items([(b"Content-Length", b"2")]), "r")
    data = whole_answer(request, 200, "OK", items, b"{}")
    assert data is not None and data[0].startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
