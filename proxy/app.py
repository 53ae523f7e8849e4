"""The composition root: the one place that turns Settings into running parts."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from prometheus_client import CollectorRegistry

from comparators import DiffBudget, Redactor
from proxy import client_timeouts
from proxy.control.admin import build_admin_app
from proxy.control.decisions import Decisions, targets_from
from proxy.control.flags_api import FlagsAdmin
from proxy.control.guardrail import Guardrail
from proxy.experiment.publish import Publisher
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import make_sink
from proxy.flags import FlagMetrics, ResourceFlagState, RouteFlagState, make_flag_store
from proxy.flags.store import FlagStore
from proxy.http import wire
from proxy.http.forward import ForwardContext, handle
from proxy.http.routes import build_route
from proxy.http.routing import Router
from proxy.http.upstream import HttpUpstream
from proxy.metrics import Metrics
from proxy.readiness import Readiness, ReadinessMetrics
from proxy.repair.log import open_repair_log
from proxy.repair.repairer import Repairer, RepairMetrics
from proxy.resources.cache import CacheMetrics, RecordCache
from proxy.resources.wiring import Resources, build_resources
from proxy.settings import HttpBackend, Settings
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy")


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
    direct_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None


def redaction_key(settings: Settings, env: Mapping[str, str]) -> bytes:
    value = env.get(settings.redaction.key_env)
    if value:
        return value.encode()
    log.warning(
        "no redaction key set: hashes of sensitive values are comparable only within this "
        "process; set %s to compare them across processes and restarts",
        settings.redaction.key_env,
    )
    return secrets.token_bytes(32)


def build(
    settings: Settings, *, registry: CollectorRegistry, env: Mapping[str, str] | None = None
) -> Apps:
    env = os.environ if env is None else env
    if settings.routes:
        # Pass-through of non-UTF-8 header bytes; the resource API writes only its own
        # headers and keeps aiohttp's (compiled) serializer.
        wire.install()
    metrics = Metrics.create(registry)
    upstreams = {
        name: HttpUpstream(name, cfg)
        for name, cfg in settings.backends.items()
        if isinstance(cfg, HttpBackend)
    }
    flag_store = make_flag_store(settings, settings.flags, audit_config_defaults=_first_worker(env))
    flag_metrics = FlagMetrics.create(registry)

    def route_flags(name: str) -> RouteFlagState:
        return flag_store.snapshot().routes[name]

    def resource_flags(name: str) -> ResourceFlagState:
        return flag_store.snapshot().resources[name]

    routes = [build_route(i, r, upstreams, route_flags) for i, r in enumerate(settings.routes)]
    router = Router(
        [(r.path, r.methods, built) for r, built in zip(settings.routes, routes, strict=True)]
    )
    runner = ShadowRunner(
        queue_size=settings.shadow.queue_size,
        concurrency=settings.shadow.concurrency,
        metrics=metrics,
    )
    sink = make_sink(settings.sink, metrics)
    sensitive = set(settings.redaction.fields)
    for resource in settings.resources.values():
        sensitive |= {name for name, f in resource.fields.items() if f.sensitive}
    redactor = Redactor(frozenset(sensitive), redaction_key(settings, env))
    publisher = Publisher(metrics=metrics, sink=sink, redactor=redactor)
    budget = DiffBudget(
        per_second=settings.shadow.diff_per_second, burst=settings.shadow.diff_burst
    )
    cache = (
        RecordCache.from_config(settings.cache, CacheMetrics.create(registry))
        if settings.cache is not None and settings.cache.enabled
        else None
    )
    repair_log = open_repair_log(settings.repair) if settings.repair is not None else None
    resources = build_resources(
        settings,
        flags=resource_flags,
        runner=runner,
        publisher=publisher,
        metrics=metrics,
        budget=budget,
        cache=cache,
        repair_log=repair_log,
        env=env,
    )
    ctx = ForwardContext(
        router=router,
        runner=runner,
        publisher=publisher,
        metrics=metrics,
        budget=budget,
        max_request_body=settings.limits.max_body_bytes,
        compare_body_cap=settings.shadow.body_max_bytes,
        shadow_timeout=settings.shadow.timeout_seconds,
        requester_header=settings.requesters.header,
        known_requesters=frozenset(settings.requesters.known),
        access_log=settings.logging.access_log,
        normalize_paths=settings.listen.path_policy == "normalize",
    )

    new_stores = {name: svc.parts.new_store for name, svc in resources.services.items()}
    readiness = Readiness(settings.readiness, metrics=ReadinessMetrics.create(registry))
    decisions = Decisions(readiness, targets_from(settings, new_stores))
    guardrail = Guardrail(
        flag_store=flag_store,
        settings={n: r.guardrail for n, r in settings.resources.items() if r.guardrail},
        new_stores=new_stores,
    )
    publisher.observers += [decisions.record, guardrail.observe]
    flag_store.on_change(guardrail.on_change)

    proxy_app = web.Application(middlewares=[client_timeouts.middleware])
    proxy_app.router.add_routes(resources.routes())
    forward = partial(handle, ctx)
    if settings.routes:
        # The forwarding handler answers Expect itself, after routing and the size check.
        proxy_app.router.add_route("*", "/{tail:.*}", forward, expect_handler=_expect_later)

    async def upstreams_ctx(_: web.Application) -> AsyncIterator[None]:
        for upstream in upstreams.values():
            await upstream.start()
        yield
        for upstream in upstreams.values():
            await upstream.close()

    async def sink_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await sink.close()

    async def runner_ctx(_: web.Application) -> AsyncIterator[None]:
        await runner.start()
        yield
        await runner.drain(settings.shadow.drain_seconds)

    async def decisions_ctx(_: web.Application) -> AsyncIterator[None]:
        flag_metrics.attach(flag_store)
        await flag_store.start()
        readiness.start()
        yield
        await readiness.close()
        await flag_store.close()

    async def cache_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        if cache is not None:
            await cache.close()

    async def repair_ctx(_: web.Application) -> AsyncIterator[None]:
        if repair_log is None or settings.repair is None:
            yield
            return
        await repair_log.init()
        repairer = Repairer.from_config(
            settings.repair,
            repair_log,
            resources.repair_targets(resource_flags),
            RepairMetrics.create(registry),
        )
        stop = asyncio.Event()
        task = spawn(repairer.run_forever(stop), name="repairer")
        yield
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await repair_log.close()

    # Unwound in reverse: the repairer stops, shadow work drains, the sink flushes, then the
    # stores, the cache and the upstream pools close.
    proxy_app.cleanup_ctx.extend(
        [
            decisions_ctx,
            upstreams_ctx,
            cache_ctx,
            resources.lifecycle,
            sink_ctx,
            runner_ctx,
            repair_ctx,
        ]
    )
    read_only = None
    if settings.flags.kind == "memory" and env.get("SHADOWPROXY_WORKER") == "1":
        read_only = (
            "flags live in each worker process (flags.kind: memory) and a change would reach "
            "only one of them: configure flags.kind: redis to change flags with --workers > 1"
        )
    admin_app = build_admin_app(
        registry=registry,
        runner=runner,
        sink=sink,
        token=env.get(settings.admin.token_env),
        flags=FlagsAdmin(flag_store, decisions, writable=read_only),
    )
    return Apps(
        proxy=proxy_app,
        admin=admin_app,
        metrics=metrics,
        runner=runner,
        resources=resources,
        flag_store=flag_store,
        decisions=decisions,
        guardrail=guardrail,
        direct_handler=forward if settings.routes and not settings.resources else None,
    )


async def _expect_later(request: web.Request) -> None:
    return None


def _first_worker(env: Mapping[str, str]) -> bool:
    """Config defaults are audited once, by the first worker (or the only process)."""
    return env.get("SHADOWPROXY_WORKER_INDEX", "0") == "0"
