"""The control plane built from settings: readiness, the flip gate, the guardrail, the admin API.

It owns the flag store's lifecycle: the store starts before traffic (so the first request
reads the live flags, not the config's) and closes last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.control.admin import build_admin_app
from proxy.control.decisions import Decisions, targets_from
from proxy.control.flags_api import FlagsAdmin
from proxy.control.guardrail import Guardrail
from proxy.experiment.shadow import ShadowRunner
from proxy.experiment.sinks import BufferedSink
from proxy.flags import FlagMetrics
from proxy.flags.store import FlagStore
from proxy.readiness import Readiness, ReadinessMetrics
from proxy.settings import Settings


@dataclass(frozen=True)
class Control:
    flag_store: FlagStore
    flag_metrics: FlagMetrics
    readiness: Readiness
    decisions: Decisions
    guardrail: Guardrail

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        detach = self.flag_metrics.attach(self.flag_store)
        unwatch = self.flag_store.on_change(self.guardrail.on_change)
        await self.flag_store.start()
        self.readiness.start()
        try:
            yield
        finally:
            await self.readiness.close()
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
    ) -> web.Application:
        return build_admin_app(
            registry=registry,
            runner=runner,
            sink=sink,
            token=token,
            flags=FlagsAdmin(self.flag_store, self.decisions, writable=read_only),
        )


def build_control(
    settings: Settings,
    flag_store: FlagStore,
    new_stores: Mapping[str, str | None],
    registry: CollectorRegistry,
) -> Control:
    readiness = Readiness(settings.readiness, metrics=ReadinessMetrics.create(registry))
    guardrail = Guardrail(
        flag_store=flag_store,
        settings={n: r.guardrail for n, r in settings.resources.items() if r.guardrail},
        new_stores=new_stores,
    )
    return Control(
        flag_store=flag_store,
        flag_metrics=FlagMetrics.create(registry),
        readiness=readiness,
        decisions=Decisions(readiness, targets_from(settings, new_stores)),
        guardrail=guardrail,
    )
