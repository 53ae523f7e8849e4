"""The composition root: the one place that turns Settings into running parts.

``build`` composes three builders — the HTTP drop-in side (``proxy.http.build``), the store
side (``proxy.resources.wiring``) and the control plane (``proxy.control.build``) — over one
frozen bundle of shared parts (``proxy.shared``). Each component brings its own lifecycle;
the proxy app runs them in order and unwinds them in reverse: the repairer stops, shadow work
drains, the sink flushes, then the stores, the cache, the upstream pools and the flag store
close.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from proxy import client_timeouts
from proxy.control.build import build_control
from proxy.control.decisions import Decisions
from proxy.control.guardrail import Guardrail
from proxy.control.readyz import watch_resources
from proxy.experiment.shadow import ShadowRunner
from proxy.flags.store import FlagStore
from proxy.http.build import build_http_side
from proxy.metrics import Metrics
from proxy.openapi import OPENAPI_PATH, openapi_handler
from proxy.request import problems
from proxy.resources.openapi import resource_document
from proxy.resources.wiring import (
    Resources,
    build_store_side,
    new_stores_of,
    open_settings_repair_log,
)
from proxy.settings import Settings
from proxy.shared import Shared, flag_store_for, shared_parts
from proxy.tasks import cancel, spawn
from proxy.types import RawHandler

LOOP_TASKS_SECONDS = 5.0


@dataclass(frozen=True)
class Apps:
    proxy: web.Application
    admin: web.Application
    metrics: Metrics
    runner: ShadowRunner
    resources: Resources
    flag_store: FlagStore
    decisions: Decisions
    guardrail: Guardrail
    direct_handler: RawHandler | None = None


def build(
    settings: Settings, *, registry: CollectorRegistry, env: Mapping[str, str] | None = None
) -> Apps:
    env = os.environ if env is None else env
    flag_store = flag_store_for(settings, env)
    repair_log = open_settings_repair_log(settings)
    control = build_control(
        settings, flag_store, new_stores_of(settings), registry, repair_depth=repair_log.depth
    )
    observers = (control.decisions.record, control.guardrail.observe)
    shared = shared_parts(
        settings, registry=registry, env=env, flag_store=flag_store, observers=observers
    )
    store = build_store_side(settings, shared, env, repair_log)
    http = build_http_side(settings, shared) if settings.routes else None

    proxy_app = web.Application(middlewares=[client_timeouts.middleware, problems])
    if settings.resources:
        # Before the HTTP routes' catch-all: in store mode the path is the proxy's own.
        document = resource_document(
            ((api.schema, api.settings) for api in store.resources.apis),
            rate_limited=shared.limiter is not None,
        )
        proxy_app.router.add_get(OPENAPI_PATH, openapi_handler(document), allow_head=False)
    proxy_app.router.add_routes(store.resources.routes())
    if http is not None:
        http.add_routes(proxy_app)
    proxy_app.cleanup_ctx.extend(
        [
            control.lifecycle,
            *([http.lifecycle] if http is not None else []),
            store.cache_lifecycle,
            store.resources.lifecycle,
            _shared_lifecycle(shared, settings.shadow.drain_seconds),
            store.repair_lifecycle,
        ]
    )
    admin_app = control.admin_app(
        registry=registry,
        runner=shared.runner,
        sink=shared.sink,
        token=env.get(settings.admin.token_env),
        read_only=_flags_read_only(settings, env),
        noise=shared.noise,
    )
    watch_resources(admin_app, store.resources)  # /readyz: the stores it reads from
    return Apps(
        proxy=proxy_app,
        admin=admin_app,
        metrics=shared.metrics,
        runner=shared.runner,
        resources=store.resources,
        flag_store=flag_store,
        decisions=control.decisions,
        guardrail=control.guardrail,
        direct_handler=http.handler if http is not None and not settings.resources else None,
    )


def _shared_lifecycle(
    shared: Shared, drain_seconds: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await shared.runner.start()
        sampler = spawn(count_loop_tasks(shared.metrics.loop_tasks), name="loop-task-count")
        try:
            yield
        finally:
            await cancel(sampler)
            await shared.runner.drain(drain_seconds)
            await shared.sink.close()
            if shared.limiter is not None:
                await shared.limiter.close()

    return lifecycle


async def count_loop_tasks(gauge: Gauge, every: float = LOOP_TASKS_SECONDS) -> None:
    """Keep ``shadowproxy_event_loop_tasks`` current: a leak of tasks (a shadow call never
    finished, a connection handler never closed) shows as a rising line."""
    while True:
        gauge.set(len(asyncio.all_tasks()))
        await asyncio.sleep(every)


def _flags_read_only(settings: Settings, env: Mapping[str, str]) -> str | None:
    if settings.flags.kind == "memory" and env.get("SHADOWPROXY_WORKER") == "1":
        return (
            "flags live in each worker process (flags.kind: memory) and a change would reach "
            "only one of them: configure flags.kind: redis to change flags with --workers > 1"
        )
    return None
