"""What the read path and the write path of a resource share: its parts, the protocols of
the cache and the repair log, timing, and the text forms of keys and index values."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import orjson

from comparators import Rules
from comparators.canonical import decimal_json
from proxy.flags import ResourceFlagState
from proxy.metrics import Metrics
from proxy.settings import ResourceSettings
from proxy.store.base import ManagedStore
from proxy.store.schema import Schema

T = TypeVar("T")

FlagSource = Callable[[str], ResourceFlagState]
"""The live flags of a resource by name (read on every request; cheap)."""


class Cache(Protocol):
    async def get(self, resource: str, key: str) -> bytes | None: ...

    async def set(self, resource: str, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def get_index(self, resource: str, index: str, value: str) -> bytes | None: ...

    async def set_index(
        self, resource: str, index: str, value: str, payload: bytes, ttl_seconds: float
    ) -> None: ...

    async def invalidate(
        self,
        resource: str,
        keys: Sequence[str],
        index_values: Mapping[str, Sequence[str]] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class ResourceParts:
    settings: ResourceSettings
    schema: Schema
    stores: Mapping[str, ManagedStore]
    record_rules: Rules
    list_rules: Rules
    new_store: str | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    def key_text(self, key: Any) -> str:
        rendered = self.schema.render_key(key)
        return rendered if isinstance(rendered, str) else str(rendered)

    def index_text(self, field: str, value: Any) -> str:
        """An index value as cache-key text: its canonical JSON rendering; a decimal as the
        number it is (``1.50`` and ``1.5`` find the same records, so the same entry)."""
        rendered = self.schema.to_json({field: value}, fields=[field])[field]
        if isinstance(rendered, str):
            return rendered
        if isinstance(rendered, Decimal):
            return decimal_json(rendered).decode()
        return orjson.dumps(rendered).decode()


async def timed(
    metrics: Metrics, resource: str, role: str, store: str, operation: str, call: Awaitable[T]
) -> tuple[T, float]:
    """Await a store call; observe its latency by store, role and operation."""
    started = time.perf_counter()
    try:
        result = await call
    finally:
        seconds = time.perf_counter() - started
        observe_latency(metrics, resource, role, store, operation, seconds)
    return result, seconds


def observe_latency(
    metrics: Metrics, resource: str, role: str, store: str, operation: str, seconds: float
) -> None:
    metrics.children.get(metrics.backend_latency, store, role, resource, operation).observe(seconds)
