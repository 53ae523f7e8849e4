"""Resources from settings: schema, stores, rules, service, API routes, store lifecycles."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from comparators import RuleSpec, compile_rules
from proxy.errors import ConfigError
from proxy.flags import ResourceFlagState
from proxy.flags.topology import infer_new_store
from proxy.http.routes import rule_spec
from proxy.repair.config import RepairConfig
from proxy.repair.log import RepairLog, open_repair_log
from proxy.repair.repairer import Repairer, RepairLoop, RepairMetrics, RepairTarget
from proxy.resources.api import ResourceAPI
from proxy.resources.cache import CacheMetrics, RecordCache
from proxy.resources.parts import FlagSource, ResourceParts
from proxy.resources.service import ResourceService
from proxy.resources.stores import build_stores
from proxy.settings import ResourceSettings, Settings
from proxy.shared import Shared
from proxy.store.base import ManagedStore, Record
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
    schema = Schema(resource, max_record_bytes=resource.max_record_bytes)
    spec = rule_spec(resource.compare)
    # A set field is compared as a set: a difference names the elements on one side only,
    # not list positions of its sorted rendering.
    sets = [n for n, f in schema.fields.items() if f.type.container == "set"]
    unordered = (*spec.unordered, *(n for n in sets if n not in spec.unordered))
    spec = dataclasses.replace(spec, headers=(), compare_status=False, unordered=unordered)
    try:
        record_rules = compile_rules(spec)
        list_rules = compile_rules(list_rules_spec(spec, resource.key))
    except ValueError as e:
        raise ConfigError(f"resources.{resource.name}.compare: {e}") from e
    stores = build_stores(resource, settings.backends, schema, env)
    new_store = new_store_of(resource)
    return ResourceParts(resource, schema, stores, record_rules, list_rules, new_store)


class FlagRoutedStore:
    """The store a repair reads from (``primary``: the live ``read_from``) or writes to
    (``secondary``: the other store in ``write_to``), chosen at each call from the live flags:
    after a flip the repairer copies from the new primary, never from the store it left."""

    def __init__(self, parts: ResourceParts, flags: FlagSource, role: str) -> None:
        self._parts = parts
        self._flags = flags
        self._role = role

    def _store(self) -> ManagedStore:
        state = self._flags(self._parts.name)
        if self._role == "primary":
            return self._parts.stores[state.read_from]
        others = [s for s in state.write_to if s != state.read_from]
        if not others:
            raise LookupError(f"{self._parts.name}: write_to names no second store to repair")
        return self._parts.stores[others[0]]

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None:
        return await self._store().get(key, fields)

    async def put(self, record: Record) -> None:
        await self._store().put(record)

    async def delete(self, key: Any) -> None:
        await self._store().delete(key)


def repair_targets(
    all_parts: Iterable[ResourceParts], flags: FlagSource
) -> dict[str, RepairTarget]:
    """Per resource with two stores: copy from the live primary to the live secondary."""
    return {
        parts.name: RepairTarget(
            FlagRoutedStore(parts, flags, "primary"),
            FlagRoutedStore(parts, flags, "secondary"),
            parts.schema.parse_key,
        )
        for parts in all_parts
        if len(parts.stores) > 1
    }


@dataclass(frozen=True)
class Resources:
    services: dict[str, ResourceService]
    apis: list[ResourceAPI]

    def stores(self) -> list[ManagedStore]:
        return [s for svc in self.services.values() for s in svc.parts.stores.values()]

    def repair_targets(self, flags: FlagSource) -> dict[str, RepairTarget]:
        return repair_targets([svc.parts for svc in self.services.values()], flags)

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


@dataclass(frozen=True)
class StoreSide:
    """The typed resources with what serves them: the cache in front of the primary and
    the repair loop behind the dual writes."""

    resources: Resources
    cache: RecordCache | None
    repair: RepairLoop | None

    async def cache_lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self.cache is not None:
                await self.cache.close()

    async def repair_lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        if self.repair is None:
            yield
            return
        async with self.repair.running():
            yield


def repair_config_of(settings: Settings) -> RepairConfig:
    # Without a ``repair:`` section a process keeps its own log in memory: the same ordering
    # and re-read checks for one instance, not shared and not crash-safe (check-config warns).
    return settings.repair or RepairConfig(kind="memory")


def open_settings_repair_log(settings: Settings) -> RepairLog:
    """The repair log the store side writes and the stop-old-writes gate reads the depth of
    (opened here, initialised and closed by the store side's repair lifecycle)."""
    return open_repair_log(repair_config_of(settings))


def build_store_side(
    settings: Settings, shared: Shared, env: Mapping[str, str], repair_log: RepairLog
) -> StoreSide:
    cache = (
        RecordCache.from_config(settings.cache, CacheMetrics.create(shared.registry))
        if settings.cache is not None and settings.cache.enabled
        else None
    )
    repair_config = repair_config_of(settings)

    def flags(name: str) -> ResourceFlagState:
        return shared.flag_store.snapshot().resources[name]

    services, apis = {}, []
    for name, resource in settings.resources.items():
        service = ResourceService(
            build_parts(resource, settings, env),
            flags=flags,
            runner=shared.runner,
            publisher=shared.publisher,
            metrics=shared.metrics,
            budget=shared.budget,
            cache=cache,
            repair_log=repair_log,
        )
        services[name] = service
        apis.append(
            ResourceAPI(
                service,
                requests=shared.requests,
                max_body=settings.limits.max_body_bytes,
                limiter=shared.limiter,
            )
        )
    resources = Resources(services, apis)
    repairer = Repairer.from_config(
        repair_config,
        repair_log,
        resources.repair_targets(flags),
        RepairMetrics.create(shared.registry),
    )
    # No resources (the HTTP drop-in alone): nothing to repair, no repair loop.
    loop = RepairLoop(repair_log, repairer) if settings.resources else None
    return StoreSide(resources, cache, loop)


def new_stores_of(settings: Settings) -> dict[str, str | None]:
    """Each resource's migration target (the store its reads will flip to), from config."""
    return {name: new_store_of(r) for name, r in settings.resources.items()}


def new_store_of(resource: ResourceSettings) -> str | None:
    return resource.new_store or infer_new_store(
        resource.flags.read_from, frozenset(resource.stores)
    )
