"""Resources from settings: schema, stores, rules, service, API routes, store lifecycles."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from comparators import DiffBudget, RuleSpec, compile_rules
from proxy.errors import ConfigError
from proxy.flags.store import infer_new_store
from proxy.http_routes import rule_spec
from proxy.metrics import Metrics
from proxy.publish import Publisher
from proxy.resources.api import ResourceAPI
from proxy.resources.parts import Cache, FlagSource, RepairLog, ResourceParts
from proxy.resources.repair import RepairTarget
from proxy.resources.service import ResourceService
from proxy.resources.stores import build_stores
from proxy.settings import ResourceSettings, Settings
from proxy.shadow import ShadowRunner
from proxy.store.base import ManagedStore
from proxy.store.schema import Schema


def list_rules_spec(spec: RuleSpec, key: str) -> RuleSpec:
    """Lists are compared as ``{"items": [...]}`` keyed by the primary key; the resource's
    record rules apply to every item."""

    def each(pattern: str) -> str:
        return f"items[*].{pattern}"

    return dataclasses.replace(
        spec,
        ignore=tuple(map(each, spec.ignore)),
        numeric_tolerances={each(k): v for k, v in spec.numeric_tolerances.items()},
        timestamp_tolerances={each(k): v for k, v in spec.timestamp_tolerances.items()},
        unordered=tuple(map(each, spec.unordered)),
        keyed={"items": key, **{each(k): v for k, v in spec.keyed.items()}},
    )


def build_parts(
    resource: ResourceSettings, settings: Settings, env: Mapping[str, str] | None = None
) -> ResourceParts:
    schema = Schema(resource)
    spec = dataclasses.replace(rule_spec(resource.compare), headers=(), compare_status=False)
    try:
        record_rules = compile_rules(spec)
        list_rules = compile_rules(list_rules_spec(spec, resource.key))
    except ValueError as e:
        raise ConfigError(f"resources.{resource.name}.compare: {e}") from e
    stores = build_stores(resource, settings.backends, schema, env)
    new_store = resource.new_store or infer_new_store(
        resource.flags.read_from, frozenset(resource.stores)
    )
    return ResourceParts(resource, schema, stores, record_rules, list_rules, new_store)


def repair_targets(all_parts: Iterable[ResourceParts]) -> dict[str, RepairTarget]:
    """Per resource: copy from the store reads come from to the other store in write_to.
    Fixed from the flags at start."""
    targets = {}
    for parts in all_parts:
        flags = parts.settings.flags
        others = [s for s in flags.write_to if s != flags.read_from]
        if others:
            targets[parts.settings.name] = RepairTarget(
                parts.stores[flags.read_from], parts.stores[others[0]], parts.schema.parse_key
            )
    return targets


@dataclass(frozen=True)
class Resources:
    services: dict[str, ResourceService]
    apis: list[ResourceAPI]

    def stores(self) -> list[ManagedStore]:
        return [s for svc in self.services.values() for s in svc.parts.stores.values()]

    def repair_targets(self) -> dict[str, RepairTarget]:
        return repair_targets([svc.parts for svc in self.services.values()])

    def routes(self) -> list[web.RouteDef]:
        return [route for api in self.apis for route in api.routes()]

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        opened: list[ManagedStore] = []
        try:
            for store in self.stores():
                await store.open()
                opened.append(store)
            yield
        finally:
            for store in reversed(opened):
                await store.close()


def build_resources(
    settings: Settings,
    *,
    flags: FlagSource,
    runner: ShadowRunner,
    publisher: Publisher,
    metrics: Metrics,
    budget: DiffBudget,
    cache: Cache | None,
    repair_log: RepairLog | None,
    env: Mapping[str, str] | None = None,
) -> Resources:
    services, apis = {}, []
    for name, resource in settings.resources.items():
        service = ResourceService(
            build_parts(resource, settings, env),
            flags=flags,
            runner=runner,
            publisher=publisher,
            metrics=metrics,
            budget=budget,
            cache=cache,
            repair_log=repair_log,
        )
        services[name] = service
        apis.append(
            ResourceAPI(
                service,
                metrics=metrics,
                max_body=settings.limits.max_body_bytes,
                requester_header=settings.requesters.header,
                known_requesters=frozenset(settings.requesters.known),
                access_log=settings.logging.access_log,
            )
        )
    return Resources(services, apis)
