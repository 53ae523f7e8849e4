"""An HTTP backend: one pooled client session, deadlines, retries for idempotent requests."""

from __future__ import annotations

import asyncio
import random

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.settings import HttpBackend

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
HOP_BY_HOP = frozenset(
    {
        "connection",
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
# Failures that happen before the backend could have acted on the request.
_RETRYABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError)


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Copy without hop-by-hop headers, including those the Connection header names."""
    drop = HOP_BY_HOP
    connection = headers.get("Connection")
    if connection:
        drop = drop | {t.strip().lower() for t in connection.split(",")}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


class HttpUpstream:
    """Owns the connection pool for one backend. ``start()``/``close()`` bracket its life."""

    def __init__(self, name: str, config: HttpBackend) -> None:
        self.name = name
        self.config = config
        self._base = config.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            limit_per_host=self.config.max_connections,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, raw_path_qs: str) -> URL:
        return URL(self._base + raw_path_qs, encoded=True)

    async def send(
        self,
        method: str,
        raw_path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        *,
        timeout: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send and return the response with its body unread; the caller releases it.

        Idempotent requests are retried on connection failures with exponential backoff and
        full jitter, within the deadline; others are sent once.
        """
        if self._session is None:
            raise RuntimeError(f"backend {self.name}: start() was not awaited")
        total = timeout if timeout is not None else self.config.timeout_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        attempts = 1 + (self.config.retries if method in IDEMPOTENT else 0)
        url = self.url(raw_path_qs)
        for attempt in range(attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                return await self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=remaining,
                        connect=min(remaining, self.config.connect_timeout_seconds),
                    ),
                )
            except _RETRYABLE:
                if attempt == attempts - 1:
                    raise
                backoff = self.config.retry_backoff_seconds * (2**attempt)
                await asyncio.sleep(min(random.uniform(0, backoff), deadline - loop.time()))
        raise AssertionError("unreachable")  # pragma: no cover


def backend_error_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "payload"
    return "protocol"
