"""An HTTP backend: one connection pool (TLS for ``https://``), deadlines, retries for
idempotent requests."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Sequence

from multidict import CIMultiDict
from yarl import URL

from proxy import h1
from proxy.errors import ConfigError
from proxy.settings import HttpBackend

log = logging.getLogger("shadowproxy.upstream")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        # The proxy reads the whole request body before it forwards anything, so it answers a
        # client's "100 Continue" itself; a backend is never asked to.
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)

# A header as (lower-case name, name, value), in the bytes it came in (a backend's answer's or
# a client's request's).
RawHeader = tuple[bytes, bytes, bytes]


def end_to_end_items(
    raw: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes] = HOP_BY_HOP_BYTES
) -> list[RawHeader]:
    """End-to-end headers in their order and bytes: hop-by-hop headers (``drop``, lower-case)
    dropped, and those any Connection header names, wherever they stand."""
    base = drop
    kept: list[RawHeader] = []
    for name, value in raw:
        lower = name.lower()
        if lower in drop:
            if lower == b"connection":
                drop = drop | {t.strip().lower() for t in value.split(b",")}
            continue
        kept.append((lower, name, value))
    if drop is not base:  # a Connection header named more: they may stand before it
        kept = [item for item in kept if item[0] not in drop]
    return kept


def headers_of(items: list[RawHeader]) -> CIMultiDict[str]:
    """Decoded like aiohttp's server decodes (UTF-8, surrogateescape), so the bytes survive
    when aiohttp writes them out again."""
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        for _, name, value in items
    )


def compared_headers(
    items: list[RawHeader], names: frozenset[bytes]
) -> tuple[tuple[str, str], ...]:
    """``lowered`` of only the headers named in ``names`` (lower-case), the ones a comparison
    reads (``comparators.http``: the rules' header names, and the type): the others are not
    decoded at all."""
    return lowered([item for item in items if item[0] in names])


def lowered(items: list[RawHeader]) -> tuple[tuple[str, str], ...]:
    """The headers a comparison sees: lower-case names, values decoded as ``headers_of``
    decodes them."""
    return tuple(
        (lower.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        for lower, _, value in items
    )


def with_request_id(items: list[RawHeader], request_id: str) -> list[RawHeader]:
    """``items`` with the proxy's ``X-Request-ID`` as the client gets it (``set_header``)."""
    rid = request_id.encode("utf-8", "surrogateescape")  # aiohttp decoded it so
    set_header(items, (b"x-request-id", b"X-Request-ID", rid))
    return items


def set_header(items: list[RawHeader], item: RawHeader) -> None:
    """``item`` in the place of the first header of its name, the others of that name dropped
    (a multidict's ``md[name] = value``); appended when there is none."""
    lower = item[0]
    at = next((i for i, kept in enumerate(items) if kept[0] == lower), None)
    if at is None:
        items.append(item)
        return
    items[at] = item
    items[at + 1 :] = [kept for kept in items[at + 1 :] if kept[0] != lower]


class HttpUpstream:
    """Owns the connection pool for one backend. ``start()``/``close()`` bracket its life."""

    def __init__(self, name: str, config: HttpBackend) -> None:
        self.name = name
        self.config = config
        url = URL(config.url)
        self._host = url.host or "127.0.0.1"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._host_header = url.raw_authority
        self._base_path = url.raw_path.rstrip("/")
        self._ssl = tls_context(name, config) if url.scheme == "https" else None
        self._pool: h1.Pool | None = None

    async def start(self) -> None:
        self._pool = h1.Pool(
            self._host,
            self._port,
            limit=self.config.max_connections,
            max_waiting=self.config.max_waiting,
            connect_timeout=self.config.connect_timeout_seconds,
            ssl=self._ssl,
            server_name=self.config.tls_server_name,
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def send(
        self,
        method: str,
        raw_path_qs: str,
        headers: bytes,
        body: bytes | None,
        *,
        timeout: float | None = None,
    ) -> h1.Response:
        """Send and return the response with its body unread; the caller releases it and
        bounds the body read (``deadline()``). ``headers``: the header lines
        (``h1.header_lines``; the forwarder builds them once for every backend).

        Idempotent requests are retried on connection failures (refused, or a kept-alive
        connection the backend had closed) with exponential backoff and full jitter, within
        the deadline; others are sent once.
        """
        if self._pool is None:
            raise RuntimeError(f"backend {self.name}: start() was not awaited")
        total = timeout if timeout is not None else self.config.timeout_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        head = h1.request_head(
            method, self._base_path + raw_path_qs, self._host_header, headers, body
        )
        attempts = 1 + (self.config.retries if method in IDEMPOTENT else 0)
        stale_retry = method in IDEMPOTENT
        attempt = 0
        while True:
            try:
                response, _ = await h1.send(self._pool, method, head, body, deadline)
                response.deadline = deadline
                return response
            except h1.Disconnected as e:
                # A kept-alive connection the backend closed while it sat idle: nothing was
                # answered, so an idempotent request goes again at once, on a new connection.
                if e.reused and stale_retry:
                    stale_retry = False
                    continue
                if attempt >= attempts - 1:
                    raise
            except h1.ConnectFailed:
                if attempt >= attempts - 1:
                    raise
            backoff = self.config.retry_backoff_seconds * (2**attempt)
            await asyncio.sleep(min(random.uniform(0, backoff), deadline - loop.time()))
            attempt += 1


def tls_context(name: str, config: HttpBackend) -> ssl.SSLContext:
    """Certificates checked against the system's CAs, or only ``tls_ca_file``'s when given;
    the host name checked against the URL's host (or ``tls_server_name``)."""
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"backends.{name}.tls_ca_file = {config.tls_ca_file!r}: cannot load it: {e}"
        ) from e
    if not config.tls_verify:
        log.warning(
            "TLS certificates of this backend are not verified (tls_verify: false)",
            extra={"backend": name},
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def backend_error_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, h1.BackendError):
        return error.kind
    return "protocol"
