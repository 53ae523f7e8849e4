"""From ``Settings`` to a flag store: the config's flags are the initial (default) state.

    store = make_flag_store(settings, FlagStoreConfig(kind="redis"))
    await store.start()

``Settings`` is only imported for type checking, so ``proxy.settings`` may import this
package (for ``FlagStoreConfig``) without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from proxy.flags.audit import FileAuditLog
from proxy.flags.config import FlagStoreConfig
from proxy.flags.model import FlagSnapshot, ResourceFlagState, RouteFlagState
from proxy.flags.redis_store import RedisFlagStore
from proxy.flags.store import FlagStore, MemoryFlagStore
from proxy.flags.topology import FlagTopology, ResourceTopology, infer_new_store

if TYPE_CHECKING:
    from proxy.settings import Settings


def initial_snapshot(settings: Settings) -> FlagSnapshot:
    """Version 0: every resource's ``flags`` and every route's primary, shadow and sample."""
    resources = {
        name: ResourceFlagState(
            read_from=resource.flags.read_from,
            write_to=tuple(resource.flags.write_to),
            shadow_reads=float(resource.flags.shadow_reads),
            new_store_read_fraction=float(
                getattr(resource.flags, "new_store_read_fraction", 0.0) or 0.0
            ),
        )
        for name, resource in settings.resources.items()
    }
    routes = {
        route.name: RouteFlagState(
            primary=route.primary, shadow=route.shadow, sample=float(route.sample)
        )
        for route in settings.routes
    }
    return FlagSnapshot(version=0, resources=resources, routes=routes)


def topology_from_settings(
    settings: Settings, new_stores: Mapping[str, str | None] | None = None
) -> FlagTopology:
    """Each resource's declared stores and its new store: ``new_stores[name]`` when given,
    else a ``new_store`` the resource settings may declare, else (two stores) the one the
    config does not read from. Routes may name the HTTP backends."""
    resources = {}
    for name, resource in settings.resources.items():
        stores = frozenset(resource.stores)
        if new_stores is not None and name in new_stores:
            new_store = new_stores[name]
        else:
            new_store = getattr(resource, "new_store", None) or infer_new_store(
                resource.flags.read_from, stores
            )
        resources[name] = ResourceTopology(stores=stores, new_store=new_store)
    backends = frozenset(n for n, b in settings.backends.items() if b.kind == "http")
    return FlagTopology(resources=resources, backends=backends)


def make_flag_store(
    settings: Settings,
    config: FlagStoreConfig | None = None,
    *,
    new_stores: Mapping[str, str | None] | None = None,
    audit_config_defaults: bool = True,
) -> FlagStore:
    """A started-later store for ``settings``: Redis (state and audit under ``prefix``) or
    memory with a JSONL audit file. ``audit_config_defaults`` (memory only): False in all
    worker processes but one, so config defaults are audited once."""
    config = config or FlagStoreConfig()
    initial = initial_snapshot(settings)
    topology = topology_from_settings(settings, new_stores)
    if config.kind == "redis":
        return RedisFlagStore(
            config.url,
            config.prefix,
            initial,
            None,
            topology=topology,
            poll_seconds=config.poll_seconds,
            timeout_seconds=config.timeout_seconds,
            audit_maxlen=config.audit_maxlen,
        )
    return MemoryFlagStore(
        initial,
        FileAuditLog(config.audit_path),
        topology=topology,
        audit_config_defaults=audit_config_defaults,
    )
