"""The drop-in path: answer from the primary exactly, hand a copy to the shadow runner."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from comparators import DiffBudget, compare_http
from comparators.model import Comparison, HttpSnapshot, Outcome
from proxy import h1
from proxy.errors import (
    RETRY_SOON,
    BadGateway,
    BadRequest,
    ExpectationFailed,
    GatewayTimeout,
    HTTPProblem,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    problem_response,
)
from proxy.experiment.noise import NoiseLearner
from proxy.experiment.publish import Experiment, Publisher
from proxy.experiment.shadow import ShadowRunner
from proxy.http.answer import Whole, whole_answer
from proxy.http.routes import HttpRoute, Sides
from proxy.http.routing import Router
from proxy.http.target import Target, parse_target
from proxy.http.upstream import (
    HOP_BY_HOP_BYTES,
    HttpUpstream,
    RawHeader,
    backend_error_kind,
    compared_headers,
    end_to_end_items,
    headers_of,
    set_header,
    with_request_id,
)
from proxy.metrics import Metrics
from proxy.ratelimit.limiter import RateLimiter
from proxy.request import RequestAccounting, read_capped, request_id

errlog = logging.getLogger("shadowproxy.proxy")

# Responses up to this size (with a Content-Length) are read whole and sent in one write;
# larger or chunked ones are streamed through chunk by chunk.
SMALL_BODY = 256 * 1024


@dataclass(frozen=True, slots=True)
class ForwardContext:
    router: Router[HttpRoute]
    runner: ShadowRunner
    publisher: Publisher
    metrics: Metrics
    budget: DiffBudget
    max_request_body: int
    compare_body_cap: int
    shadow_timeout: float
    requests: RequestAccounting
    limiter: RateLimiter | None = None
    normalize_paths: bool = False
    noise: NoiseLearner | None = None


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_ANSWER = Comparison(Outcome.SHADOW_ERROR)  # _fetch's outcome until an answer or error came


async def read_request_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, at most ``limit`` bytes. A client that sent ``Expect: 100-continue``
    is told to go on only here, once its request was routed and its declared size fits: a
    refusal comes instead of the ``100``, before the client sends the body."""
    expect = request.headers.get("Expect")
    if expect is not None and request.version >= (1, 1) and expect.lower() != "100-continue":
        raise ExpectationFailed(f"unsupported expectation {expect[:64]!r}")
    if not request.body_exists:
        return None
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    if expect is not None and request.version >= (1, 1):
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the final answer's head is still to come
    return await read_capped(request, limit)


# What a backend never gets from the client: hop-by-hop headers, and those the proxy sets.
NOT_FORWARDED = HOP_BY_HOP_BYTES | {b"host", b"content-length"}


def upstream_headers(request: web.BaseRequest, rid: str) -> bytes:
    """The header lines every backend gets (``h1.header_lines``' form), built once from the
    client's own header bytes: its end-to-end headers less ``Host`` and ``Content-Length``,
    then ``X-Forwarded-For`` (the client's first one, the peer added), ``-Proto``, ``-Host``
    and ``X-Request-ID``, each in the place of the client's first one, else last."""
    items = end_to_end_items(request.raw_headers, NOT_FORWARDED)
    peer = (request.remote or "").encode()
    prior = next((value for lower, _, value in items if lower == b"x-forwarded-for"), None)
    forwarded = (
        (b"x-forwarded-for", b"X-Forwarded-For", prior + b", " + peer if prior else peer),
        (b"x-forwarded-proto", b"X-Forwarded-Proto", request.scheme.encode()),
        (b"x-forwarded-host", b"X-Forwarded-Host", _raw(request.host)),
        (b"x-request-id", b"X-Request-ID", _raw(rid)),
    )
    for item in forwarded:
        set_header(items, item)
    lines = b"".join([name + b": " + value + b"\r\n" for _, name, value in items])
    if lines.count(b"\n") != len(items) or lines.count(b"\r") != len(items):
        raise BadRequest("a line break inside a header: refused")
    return lines


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # aiohttp decoded it so


async def handle(ctx: ForwardContext, request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    rid = request_id(request)
    requester = ctx.requests.requester(request)
    route_name = "unmatched"
    path = request.raw_path
    status = 0
    primary_seconds = 0.0
    try:
        target = parse_target(request.raw_path, normalize=ctx.normalize_paths)
        path = target.path
        route, path_known = ctx.router.match(request.method, path)
        if route is None:
            if path_known:
                raise MethodNotAllowed(f"{request.method} is not routed for {path}")
            raise NotFound(f"no route for {path}")
        route_name = route.name
        if ctx.limiter is not None:  # before the body is read or the primary is asked
            await ctx.limiter.check(route_name, requester)
        body = await read_request_body(request, ctx.max_request_body)
        headers = upstream_headers(request, rid)
        sides = route.sides()
        sampled = route.sampled(request, path, sides)
        response, snapshot, primary_seconds = await _primary(
            ctx, route, sides.primary, request, target, headers, body, rid, sampled
        )
        status = response.status
        if snapshot is not None:
            copy = Copied(request.method, target.raw, headers, body, rid, requester)
            job = partial(_shadow_job, ctx, route, sides, copy, snapshot, primary_seconds)
            ctx.runner.submit(route.name, request.method, job)
        return response
    except HTTPProblem as problem:
        status = problem.status
        if problem.status >= 500:
            errlog.warning(
                problem.message, extra={"request_id": rid, "route": route_name, "status": status}
            )
        return problem_response(problem, rid)
    except Exception:
        # A bug of ours, never the client's fault: logged with the request id, answered in
        # the same envelope (not aiohttp's HTML page).
        status = 500
        errlog.exception("unexpected error", extra={"request_id": rid, "route": route_name})
        return problem_response(HTTPProblem("internal error"), rid)
    finally:
        ctx.requests.finish(
            route_name,
            request.method,
            status,
            requester,
            rid,
            path,
            started,
            primary_seconds=primary_seconds,
        )


async def _primary(
    ctx: ForwardContext,
    route: HttpRoute,
    backend: HttpUpstream,
    request: web.Request,
    target: Target,
    headers: bytes,
    body: bytes | None,
    rid: str,
    sampled: bool,
) -> tuple[web.StreamResponse, HttpSnapshot | None, float]:
    started = time.perf_counter()
    try:
        upstream = await backend.send(request.method, target.raw, headers, body)
    except TimeoutError as e:
        _backend_failed(ctx, route, request.method, backend.name, e, sampled)
        raise GatewayTimeout(f"primary backend {backend.name} did not answer in time") from e
    except h1.PoolBusy as e:
        _backend_failed(ctx, route, request.method, backend.name, e, sampled)
        raise Unavailable(
            f"primary backend {backend.name} is at its connection limit; try again",
            headers=RETRY_SOON,
        ) from e
    except h1.BackendError as e:
        _backend_failed(ctx, route, request.method, backend.name, e, sampled)
        raise BadGateway(f"primary backend {backend.name} failed: {type(e).__name__}") from e
    try:
        items = with_request_id(end_to_end_items(upstream.raw_headers), rid)
        length = upstream.content_length
        response: web.StreamResponse
        if upstream.complete:  # the usual small answer: all here already, nothing to wait for
            payload = await upstream.read()
            response = _whole(request, upstream, items, payload)
            captured: bytes | None = payload
        else:
            async with asyncio.timeout_at(upstream.deadline):
                if request.method == "HEAD" or (length is not None and length <= SMALL_BODY):
                    payload = await upstream.read()
                    response = _whole(request, upstream, items, payload)
                    captured = payload
                else:
                    response, captured = await _stream(
                        request,
                        upstream,
                        headers_of(items),
                        ctx.compare_body_cap if sampled else -1,
                    )
    except (TimeoutError, h1.BackendError) as e:
        _backend_failed(ctx, route, request.method, backend.name, e, sampled)
        if isinstance(e, TimeoutError):
            raise GatewayTimeout(f"primary backend {backend.name} timed out mid-body") from e
        raise BadGateway(f"primary backend {backend.name} broke off the body") from e
    finally:
        upstream.release()
    seconds = time.perf_counter() - started
    latency = ctx.metrics.children.get(
        ctx.metrics.backend_latency, backend.name, "primary", route.name, request.method
    )
    latency.observe(seconds)
    snapshot = None
    if sampled:
        if captured is not None and len(captured) > ctx.compare_body_cap:
            captured = None
        snapshot = HttpSnapshot(upstream.status, compared_headers(items, route.compared), captured)
    return response, snapshot, seconds


def _whole(
    request: web.BaseRequest, upstream: h1.Response, items: list[RawHeader], body: bytes
) -> web.StreamResponse:
    data = whole_answer(request, upstream.status, upstream.reason, items, body)
    if data is not None:
        return Whole(upstream.status, upstream.reason, data)
    # Bytes bodies keep the primary's Content-Type and Content-Length (also for HEAD).
    return web.Response(
        status=upstream.status, reason=upstream.reason, headers=headers_of(items), body=body
    )


async def _stream(
    request: web.Request,
    upstream: h1.Response,
    headers: CIMultiDict[str],
    cap: int,
) -> tuple[web.StreamResponse, bytes | None]:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    kept: list[bytes] | None = [] if cap >= 0 else None
    size = 0
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
            if kept is not None:
                size += len(chunk)
                if size > cap:
                    kept = None
                else:
                    kept.append(chunk)
    except (TimeoutError, h1.BackendError):
        # Headers are gone already: the only honest signal left is a cut connection.
        if request.transport is not None:
            request.transport.close()
        raise
    await response.write_eof()
    return response, (b"".join(kept) if kept is not None else None)


def _backend_failed(
    ctx: ForwardContext,
    route: HttpRoute,
    method: str,
    backend: str,
    error: BaseException,
    sampled: bool,
) -> None:
    ctx.metrics.backend_errors.labels(backend, "primary", backend_error_kind(error)).inc()
    if sampled:
        ctx.metrics.comparisons.labels(route.name, method, Outcome.PRIMARY_ERROR.value).inc()


@dataclass(frozen=True, slots=True)
class Copied:
    """The client's request as the shadow gets it."""

    method: str
    raw_path: str
    headers: bytes  # upstream_headers
    body: bytes | None
    request_id: str
    requester: str | None


async def _shadow_job(
    ctx: ForwardContext,
    route: HttpRoute,
    sides: Sides,
    request: Copied,
    primary: HttpSnapshot,
    primary_seconds: float,
) -> None:
    shadow = sides.shadow
    if shadow is None:  # pragma: no cover - sampled() guarantees a shadow
        return
    method, raw_path = request.method, request.raw_path
    learner = ctx.noise if route.noise is not None else None
    twin = route.noise_upstream(sides) if learner is not None else None
    if twin is None:
        snapshot, seconds, failed = await _fetch(ctx, route, shadow, "shadow", request)
    else:
        # The noise twin is asked at the same time, in the same job: the same queue slot,
        # worker and timeout bound the shadow call has, and nothing a client waits for.
        (snapshot, seconds, failed), noise = await asyncio.gather(
            _fetch(ctx, route, shadow, "shadow", request),
            _fetch_noise(ctx, route, twin, request),
        )
        _learn_noise(ctx, route, primary, noise)
    comparison = failed
    if snapshot is not None:
        comparison = compare_http(primary, snapshot, route.rules, budget=ctx.budget)
    extra: dict[str, Any] = {}
    if learner is not None and sides.primary.name == route.primary:
        cap = route.rules.max_differences
        learner.learn_shadow(route.name, comparison, cap)
        comparison, noisy = learner.classify(route.name, comparison, cap)
        if noisy:
            extra["noise_fields"] = list(noisy)
    ctx.publisher.publish(
        Experiment(
            route=route.name,
            operation=method,
            method=method,
            path=raw_path,
            request_id=request.request_id,
            requester=request.requester,
            primary_status=primary.status,
            shadow_status=snapshot.status if snapshot else None,
            primary_seconds=primary_seconds,
            shadow_seconds=seconds,
            comparison=comparison,
            extra=extra,
            new_side=sides.new_side,
        )
    )


async def _fetch(
    ctx: ForwardContext, route: HttpRoute, backend: HttpUpstream, role: str, request: Copied
) -> tuple[HttpSnapshot | None, float, Comparison]:
    """One background call: (its answer, seconds, the error outcome if it failed)."""
    method = request.method
    started = time.perf_counter()
    snapshot: HttpSnapshot | None = None
    failed = NO_ANSWER
    try:
        timeout = min(ctx.shadow_timeout, backend.config.timeout_seconds)
        upstream = await backend.send(
            method, request.raw_path, request.headers, request.body, timeout=timeout
        )
        try:
            if upstream.complete:
                payload = await h1.read_capped(upstream, ctx.compare_body_cap)
            else:
                async with asyncio.timeout_at(upstream.deadline):
                    payload = await h1.read_capped(upstream, ctx.compare_body_cap)
        finally:
            upstream.release()
        headers = compared_headers(end_to_end_items(upstream.raw_headers), route.compared)
        snapshot = HttpSnapshot(upstream.status, headers, payload)
    except (TimeoutError, h1.BackendError) as e:
        kind = backend_error_kind(e)
        ctx.metrics.backend_errors.labels(backend.name, role, kind).inc()
        outcome = Outcome.TIMEOUT if kind == "timeout" else Outcome.SHADOW_ERROR
        failed = Comparison(outcome, detail=f"{type(e).__name__}: {e}"[:300])
    seconds = time.perf_counter() - started
    ctx.metrics.children.get(
        ctx.metrics.backend_latency, backend.name, role, route.name, method
    ).observe(seconds)
    return snapshot, seconds, failed


async def _fetch_noise(
    ctx: ForwardContext, route: HttpRoute, twin: HttpUpstream, request: Copied
) -> HttpSnapshot | None:
    """The noise twin's answer, None when it failed; never raises (a bug here must not
    cost the shadow comparison it runs beside)."""
    try:
        snapshot, _, _ = await _fetch(ctx, route, twin, "noise", request)
    except Exception:
        ctx.metrics.internal_errors.labels("noise").inc()
        errlog.exception("noise call failed", extra={"route": route.name})
        return None
    return snapshot


def _learn_noise(
    ctx: ForwardContext, route: HttpRoute, primary: HttpSnapshot, noise: HttpSnapshot | None
) -> None:
    if ctx.noise is None:  # pragma: no cover - only called with a learner
        return
    found = None if noise is None else compare_http(primary, noise, route.rules, budget=ctx.budget)
    ctx.noise.learn_noise(route.name, found, route.rules.max_differences)
