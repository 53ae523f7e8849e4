"""What both modes do with every request: name it, label its requester, read its body within
a cap, count it and write its access-log line.

    requests = RequestAccounting(metrics, "X-Requester", frozenset({"web"}), access_log=True)
    rid = request_id(request)
    body = await read_capped(request, limit)          # PayloadTooLarge past ``limit``
    requests.finish(route, request.method, 200, requests.requester(request), rid, path, started)

The HTTP drop-in path (``proxy.http.forward``), the resource API (``proxy.resources.api``)
and the admin API (``proxy.control.admin``) share these, so a request id, a requester label
or a refused oversized body means the same thing on every port.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from random import getrandbits

from aiohttp import web

from proxy.errors import PayloadTooLarge, envelope
from proxy.metrics import Metrics
from proxy.types import Handler

access = logging.getLogger("shadowproxy.access")

UNLABELLED = "none"
OTHER = "other"


def request_id(request: web.BaseRequest) -> str:
    """The client's ``X-Request-ID``, else a fresh random one: 128 bits of the process's
    Mersenne Twister, seeded from the OS in each process (``serve``'s workers are processes of
    their own) and reseeded in a forked child. An id names a request in logs and reports and
    guards nothing, so it needs no ``os.urandom``: a ``getrandom`` system call per request,
    ~3% of a store-mode worker's samples in py-spy."""
    return request.headers.get("X-Request-ID") or f"{getrandbits(128):032x}"


def requester_label(value: str | None, known: frozenset[str]) -> str:
    """A bounded metric label: a known requester's name, ``other`` or ``none``."""
    if value is None:
        return UNLABELLED
    return value if value in known else OTHER


_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (an unrouted path or method, a body over ``client_max_size``)
    in our envelope, on every application port."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return envelope(e.status, _CODES.get(e.status, "error"), e.reason, request_id(request))


async def read_capped(request: web.BaseRequest, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes (declared or
    received): nothing past the cap is buffered."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class RequestAccounting:
    """Counts every answered request (``shadowproxy_requests_total``) and, when enabled,
    logs it. Built once; ``finish`` runs once per request, primary path included."""

    metrics: Metrics
    header: str
    known: frozenset[str]
    access_log: bool

    def requester(self, request: web.BaseRequest) -> str | None:
        return request.headers.get(self.header)

    def finish(
        self,
        route: str,
        method: str,
        status: int,
        requester: str | None,
        rid: str,
        path: str,
        started: float,
        *,
        primary_seconds: float | None = None,
        operation: str | None = None,
    ) -> None:
        """Count the request; with the access log on, also log it. Nothing is formatted
        for a log line that is off."""
        metrics = self.metrics
        label = requester_label(requester, self.known)
        metrics.children.get(metrics.requests, route, method, str(status), label).inc()
        if not self.access_log:
            return
        line: dict[str, object] = {
            "request_id": rid,
            "requester": requester,
            "method": method,
            "path": path[:1024],
            "route": route,
        }
        if operation is not None:
            line["operation"] = operation
        line["status"] = status
        if primary_seconds is not None:
            line["primary_ms"] = round(primary_seconds * 1000, 3)
        line["total_ms"] = round((time.perf_counter() - started) * 1000, 3)
        access.info("request", extra=line)
