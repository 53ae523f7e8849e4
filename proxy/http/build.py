"""The HTTP drop-in side built from settings: upstream pools, routes, the forwarding handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from proxy.flags import RouteFlagState
from proxy.http import wire
from proxy.http.forward import ForwardContext, handle
from proxy.http.routes import build_route
from proxy.http.routing import Router
from proxy.http.upstream import HttpUpstream
from proxy.settings import HttpBackend, Settings
from proxy.shared import Shared


@dataclass(frozen=True)
class HttpSide:
    upstreams: Mapping[str, HttpUpstream]
    handler: Callable[..., Awaitable[web.StreamResponse]]  # (request) -> response

    def add_routes(self, app: web.Application) -> None:
        # The forwarding handler answers Expect itself, after routing and the size check.
        app.router.add_route("*", "/{tail:.*}", self.handler, expect_handler=_expect_later)

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        started: list[HttpUpstream] = []
        try:
            for upstream in self.upstreams.values():
                await upstream.start()
                started.append(upstream)
            yield
        finally:
            for upstream in reversed(started):
                await upstream.close()


def build_http_side(settings: Settings, shared: Shared) -> HttpSide:
    # Pass-through of non-UTF-8 header bytes; the resource API writes only its own headers
    # and keeps aiohttp's (compiled) serializer.
    wire.install()
    upstreams = {
        name: HttpUpstream(name, cfg)
        for name, cfg in settings.backends.items()
        if isinstance(cfg, HttpBackend)
    }

    def route_flags(name: str) -> RouteFlagState:
        return shared.flag_store.snapshot().routes[name]

    routes = [build_route(i, r, upstreams, route_flags) for i, r in enumerate(settings.routes)]
    router = Router(
        [(r.path, r.methods, built) for r, built in zip(settings.routes, routes, strict=True)]
    )
    ctx = ForwardContext(
        router=router,
        runner=shared.runner,
        publisher=shared.publisher,
        metrics=shared.metrics,
        budget=shared.budget,
        max_request_body=settings.limits.max_body_bytes,
        compare_body_cap=settings.shadow.body_max_bytes,
        shadow_timeout=settings.shadow.timeout_seconds,
        requests=shared.requests,
        limiter=shared.limiter,
        normalize_paths=settings.listen.path_policy == "normalize",
        noise=shared.noise,
    )
    return HttpSide(upstreams, partial(handle, ctx))


async def _expect_later(request: web.Request) -> None:
    return None
