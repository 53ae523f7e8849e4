"""A backend's whole answer, written to the client as bytes built from the backend's own
header bytes.

The measured reason this is hand-written: aiohttp's server answering a 1 KB body from a
coroutine cost 22.9 µs of CPU per request with a ``web.Response``, and 13.8 µs when the
response was handed over as bytes (``tests/benchmarks/server_floor.py``, 2 CPUs, Intel Xeon,
2026-12-04). A ``web.Response`` copies the headers into a multidict, adds its own, and
serialises them back, and the forwarder had already decoded the backend's bytes into a
multidict of its own for it. Here the backend's header bytes go out as they came, less the
hop-by-hop ones, with what aiohttp's ``Response`` would have added, added the same way:

- the forwarder's ``X-Request-ID`` is one of the headers handed over already
  (``upstream.with_request_id``, where aiohttp's multidict put it);
- then ``Content-Length`` when the backend sent none, ``Content-Type:
  application/octet-stream`` when it sent no type for a body, ``Date`` and ``Server`` when it
  sent none, and ``Connection: close`` when the connection closes after the answer.

Anything else is left to aiohttp's ``Response``, as before (``whole_answer`` returns None):
a HEAD request, a status without a body (1xx, 204, 304), an HTTP/1.0 client, a reason phrase
that is not plain ASCII, a header value aiohttp would refuse to write, or a Content-Length
other than the body's. ``tests/unit/http/test_answer.py`` holds this module to aiohttp as the
oracle: the bytes a client reads from a real socket, for both.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

from proxy.http.upstream import RawHeader

# What aiohttp's writer refuses in a header (RFC 9110 §5.5): controls but HTAB, and DEL.
_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SERVER = b"Server: " + SERVER_SOFTWARE.encode()
_OCTETS = b"Content-Type: application/octet-stream"
_CLOSE = b"Connection: close"
# Answers bigger than this go out as two buffers, not one copy.
_JOIN_BELOW = 16 * 1024


def whole_answer(
    request: web.BaseRequest,
    status: int,
    reason: str,
    items: list[RawHeader],
    body: bytes,
) -> list[bytes] | None:
    """The answer's bytes to write, in order; None when aiohttp's ``Response`` must build it.
    ``items``: the end-to-end headers, the request id among them."""
    if (
        request.version != HttpVersion11
        or request.method in ("HEAD", "CONNECT")
        or status < 200
        or status in (204, 304)
        or not reason.isascii()
        or _FORBIDDEN.search(reason.encode())
    ):
        return None
    lines: list[bytes] = []  # "name: value", line ends added at the end
    length = has_type = has_date = has_server = False
    for lower, name, value in items:
        if lower == b"content-length":
            if length or value != str(len(body)).encode():
                return None
            length = True
        elif lower == b"content-type":
            has_type = True
        elif lower == b"date":
            has_date = True
        elif lower == b"server":
            has_server = True
        lines.append(name + b": " + value)
    if _FORBIDDEN.search(b"\t".join(lines)):
        return None
    if not length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if not has_type and body:
        lines.append(_OCTETS)
    if not has_date:
        lines.append(b"Date: " + rfc822_formatted_time().encode())
    if not has_server:
        lines.append(_SERVER)
    if not request.keep_alive:
        lines.append(_CLOSE)
    head = f"HTTP/1.1 {status} {reason}\r\n".encode() + b"\r\n".join(lines) + b"\r\n\r\n"
    if len(body) < _JOIN_BELOW:
        return [head + body]
    return [head, body]


class Whole(web.StreamResponse):
    """An answer already in bytes (``whole_answer``): preparing it writes them."""

    def __init__(self, status: int, reason: str, data: list[bytes]) -> None:
        super().__init__(status=status, reason=reason)
        self._data = data

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._eof_sent:
            return
        self._keep_alive = request.keep_alive
        writer = request._payload_writer
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        data, self._data = self._data, []
        for chunk in data:
            transport.write(chunk)
            writer.output_size += len(chunk)
        self._eof_sent = True
        await writer.drain()  # a client that reads slowly holds us here, as aiohttp would

    async def write_eof(self, data: bytes = b"") -> None:
        return
