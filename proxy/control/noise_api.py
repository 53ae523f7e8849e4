"""``GET /noise`` and ``DELETE /noise`` on the admin port: what the noise baseline learned
(``proxy.experiment.noise``), per route and field with its rates, and forgetting it.

Both are token-guarded like every admin endpoint. ``?route=`` narrows either to one route;
an unknown route is a 404. The learned noise is this process's (docs/noise.md).
"""

from __future__ import annotations

from aiohttp import web

from proxy.control.admin import require_token
from proxy.errors import NotFound
from proxy.experiment.noise import NoiseLearner


def _route(learner: NoiseLearner | None, request: web.Request) -> str | None:
    route = request.query.get("route")
    if route is None:
        return None
    known = learner.routes if learner is not None else ()
    if route not in known:
        raise NotFound(
            f"route {route[:100]!r} has no noise backend "
            f"(routes with one: {', '.join(known) or 'none'})"
        )
    return route


def add_routes(app: web.Application, learner: NoiseLearner | None, token: str | None) -> None:
    async def show(request: web.Request) -> web.Response:
        route = _route(learner, request)
        routes = learner.snapshot(route) if learner is not None else {}
        return web.json_response({"per_process": True, "routes": routes})

    async def reset(request: web.Request) -> web.Response:
        route = _route(learner, request)
        names = learner.reset(route) if learner is not None else ()
        return web.json_response({"reset": list(names)})

    app.router.add_get("/noise", require_token(token, show))
    app.router.add_delete("/noise", require_token(token, reset))
