"""The control plane built from settings: readiness, the flip gate, the guardrail, the admin API.

It owns the flag store's lifecycle: the store starts before traffic (so the first request
reads the live flags, not the config's) and closes last. The flip gate also reads verify
results (``proxy.readiness.verify_results``, opened and closed here) and the repair log's
depth (``repair_depth``: the log belongs to the store side, which opens and closes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.control.admin import build_admin_app
from proxy.control.decisions import Decisions, RepairDepth, targets_from
from proxy.control.flags_api import FlagsAdmin
from proxy.control.guardrail import Guardrail, GuardrailMetrics
from proxy.control.guardrail_tally import fleet_tally
from proxy.control.noise_api import add_routes as add_noise_routes
from proxy.control.openapi import admin_document
from proxy.experiment.noise import NoiseLearner
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import BufferedSink
from proxy.flags import FlagMetrics
from proxy.flags.store import FlagStore
from proxy.openapi import OPENAPI_PATH, openapi_handler
from proxy.readiness import Readiness, ReadinessMetrics, VerifyResults, open_verify_results
from proxy.settings import Settings


@dataclass(frozen=True)
class Control:
    flag_store: FlagStore
    flag_metrics: FlagMetrics
    readiness: Readiness
    decisions: Decisions
    guardrail: Guardrail
    verify_results: VerifyResults

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        detach = self.flag_metrics.attach(self.flag_store)
        unwatch = self.flag_store.on_change(self.guardrail.on_change)
        await self.flag_store.start()
        self.readiness.start()
        self.guardrail.start()
        try:
            yield
        finally:
            await self.guardrail.close()
            await self.readiness.close()
            await self.verify_results.close()
            await self.flag_store.close()
            unwatch()
            detach()

    def admin_app(
        self,
        *,
        registry: CollectorRegistry,
        runner: ShadowRunner,
        sink: BufferedSink,
        token: str | None,
        read_only: str | None,
        noise: NoiseLearner | None = None,
    ) -> web.Application:
        app = build_admin_app(
            registry=registry,
            runner=runner,
            sink=sink,
            token=token,
            flags=FlagsAdmin(self.flag_store, self.decisions, writable=read_only),
        )
        add_noise_routes(app, noise, token)
        app.router.add_get(OPENAPI_PATH, openapi_handler(admin_document()))
        return app


def build_control(
    settings: Settings,
    flag_store: FlagStore,
    new_stores: Mapping[str, str | None],
    registry: CollectorRegistry,
    *,
    repair_depth: RepairDepth | None = None,
) -> Control:
    readiness = Readiness(settings.readiness, metrics=ReadinessMetrics.create(registry))
    verify_results = open_verify_results(settings.readiness)
    guardrail = Guardrail(
        flag_store=flag_store,
        settings={n: r.guardrail for n, r in settings.resources.items() if r.guardrail},
        new_stores=new_stores,
        tally=fleet_tally(settings.readiness),
        flush_interval_seconds=settings.readiness.flush_interval_seconds,
        metrics=GuardrailMetrics.create(registry),
    )
    decisions = Decisions(
        readiness,
        targets_from(settings, new_stores),
        flags=flag_store.snapshot,
        verify_results=verify_results,
        repair_depth=repair_depth,
    )
    return Control(
        flag_store=flag_store,
        flag_metrics=FlagMetrics.create(registry),
        readiness=readiness,
        decisions=decisions,
        guardrail=guardrail,
        verify_results=verify_results,
    )
