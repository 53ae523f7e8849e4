"""Operator commands on the stores of every resource: init-stores (and, later, reconcile)."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.resources.wiring import build_parts
from proxy.settings import Settings


async def init_stores(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """Create what is missing — tables, indexes, GSIs — idempotently; wait until usable.
    Returns one line per store for the operator."""
    done = []
    for name, resource in settings.resources.items():
        parts = build_parts(resource, settings, env)
        for store_name, store in parts.stores.items():
            await store.open()  # type: ignore[attr-defined]
            try:
                await store.init()  # type: ignore[attr-defined]
            finally:
                await store.close()
            table = resource.stores[store_name].table
            done.append(f"{name}: {store_name} table {table!r} ready")
    return done
