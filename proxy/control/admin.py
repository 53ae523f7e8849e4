"""The admin listener: /metrics, /healthz, /readyz, the guarded endpoints, the triage page."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from proxy import client_timeouts
from proxy.control import triage
from proxy.control.admin_token import AdminToken, Forbidden, Unauthorized
from proxy.control.flags_api import FlagsAdmin
from proxy.control.readyz import READYZ, Readyz
from proxy.errors import BadRequest, HTTPProblem, problem_response
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import BufferedSink
from proxy.metrics import exposition_registry
from proxy.request import problems, request_id
from proxy.store import exactjson
from proxy.types import Handler

MAX_MISMATCHES = 1000
MAX_ADMIN_BODY = 64 * 1024


def require_token(token: str | None, handler: Handler) -> Handler:
    """Bearer token (``Authorization: Bearer …`` or ``X-Admin-Token``), constant-time compare
    (``proxy.control.admin_token``). With no token configured the endpoint is closed, not open."""
    auth = AdminToken(token)

    async def guarded(request: web.Request) -> web.StreamResponse:
        rid = request_id(request)
        refused = auth.request_problem(request)
        if refused is not None:
            return problem_response(refused, rid)
        try:
            return await handler(request)
        except HTTPProblem as problem:
            return problem_response(problem, rid)

    return guarded


def parse_limit(raw: str | None, default: int = 50) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_MISMATCHES:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_MISMATCHES}, got {raw!r}")
    return int(raw)


def build_admin_app(
    *,
    registry: CollectorRegistry,
    runner: ShadowRunner,
    sink: BufferedSink,
    token: str | None,
    flags: FlagsAdmin,
    readyz: Readyz | None = None,
) -> web.Application:
    """The admin app. ``/readyz`` checks the flags from the start; the store probes are
    added once the stores exist (``proxy.control.readyz.watch_resources``)."""
    app = web.Application(
        middlewares=[client_timeouts.middleware, problems], client_max_size=MAX_ADMIN_BODY
    )
    ready = readyz if readyz is not None else Readyz(flags.store)
    app[READYZ] = ready

    async def healthz(request: web.Request) -> web.Response:
        # Losing the flag store is survivable (last known flags stay in force): say so, 200.
        store = flags.store
        return web.json_response(
            {
                "status": "ok" if store.healthy else "degraded",
                "shadow_queue_depth": runner.depth,
                "flag_store": {"healthy": store.healthy, "last_error": store.last_error},
            }
        )

    async def mismatches(request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        records = await sink.recent(limit)
        body = {"count": len(records), "mismatches": records}
        # exact numbers: a difference in a 20th digit shows as two different values
        return web.json_response(body, dumps=lambda v: exactjson.dumps(v).decode())

    app.router.add_get("/metrics", make_aiohttp_handler(exposition_registry(registry)))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", ready.handler)
    app.router.add_get("/mismatches", require_token(token, mismatches))
    app.router.add_get("/flags", require_token(token, flags.show))
    app.router.add_get("/flags/history", require_token(token, flags.history))
    app.router.add_put("/flags/{name}", require_token(token, flags.set))
    app.router.add_get("/readiness", require_token(token, flags.readiness))
    triage.add_routes(app, triage.Triage(registry, runner, sink, flags, AdminToken(token)))
    return app


__all__ = ["Forbidden", "Unauthorized", "build_admin_app", "parse_limit", "require_token"]
