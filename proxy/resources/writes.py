"""Dual writes with nothing lost: the ``read_from`` store first (its result is the
client's), then every other store in ``write_to``; a write that fails, times out or is skipped
by the circuit breaker sends the key to the repair log. Writes to one key are serialised per
process so the secondary sees them in the primary's order; every write path invalidates the
cache, old index values included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from proxy.flags import ResourceFlagState
from proxy.metrics import Metrics
from proxy.repair.log import RepairLog
from proxy.resources.breaker import Breaker
from proxy.resources.keylocks import KeyLocks
from proxy.resources.parts import Cache, FlagSource, ResourceParts, timed
from proxy.store.base import ItemResult, Record, RecordNotFound, Store, StoreError

log = logging.getLogger("shadowproxy.resources")
T = TypeVar("T")


class DualWriter:
    def __init__(
        self,
        parts: ResourceParts,
        *,
        flags: FlagSource,
        metrics: Metrics,
        cache: Cache | None,
        repair_log: RepairLog | None,
    ) -> None:
        self.parts = parts
        self.name = parts.name
        self.schema = parts.schema
        self._flags = flags
        self._metrics = metrics
        self._cache = cache
        self._repair_log = repair_log
        self._locks = KeyLocks()
        settings = parts.settings
        self._breakers = {
            name: Breaker(
                threshold=settings.breaker_threshold,
                cooldown_seconds=settings.breaker_cooldown_seconds,
            )
            for name in parts.stores
        }

    @property
    def flags(self) -> ResourceFlagState:
        return self._flags(self.name)

    async def _timed(
        self, role: str, store: str, operation: str, call: Awaitable[T]
    ) -> tuple[T, float]:
        return await timed(self._metrics, self.name, role, store, operation, call)

    async def create(self, record: Record) -> Record:
        key = record[self.schema.key]
        async with self._locks.hold(key):
            flags = self.flags
            store = self.parts.stores[flags.read_from]
            await self._timed("primary", flags.read_from, "create", store.create(record))
            await self._mirror(flags, "create", [key], lambda s: s.put(record))
        await self._invalidate([record])
        return record

    async def replace(self, record: Record) -> Record:
        key = record[self.schema.key]
        async with self._locks.hold(key):
            flags = self.flags
            store = self.parts.stores[flags.read_from]
            before = await self._before_write(store, [key])
            await self._timed("primary", flags.read_from, "put", store.put(record))
            await self._mirror(flags, "put", [key], lambda s: s.put(record))
        await self._invalidate([record, *before])
        return record

    async def update(self, key: Any, changes: Mapping[str, Any]) -> Record:
        async with self._locks.hold(key):
            flags = self.flags
            store = self.parts.stores[flags.read_from]
            indexed = {i.field for i in self.schema.indexes.values()}
            before = await self._before_write(store, [key]) if indexed & set(changes) else []
            record, _ = await self._timed(
                "primary", flags.read_from, "update", store.update(key, changes)
            )
            await self._mirror(flags, "update", [key], lambda s: s.put(record))
        await self._invalidate([record, *before])
        return record

    async def delete(self, key: Any) -> None:
        async with self._locks.hold(key):
            flags = self.flags
            store = self.parts.stores[flags.read_from]
            before = await self._before_write(store, [key])
            await self._timed("primary", flags.read_from, "delete", store.delete(key))
            await self._mirror(flags, "delete", [key], lambda s: _delete_if_present(s, key))
        await self._invalidate([{self.schema.key: key}, *before])

    async def batch_put(self, records: Sequence[Record]) -> list[ItemResult]:
        flags = self.flags
        store = self.parts.stores[flags.read_from]
        before = await self._before_write(store, [r[self.schema.key] for r in records])
        results, _ = await self._timed(
            "primary", flags.read_from, "batch_put", store.batch_put(records)
        )
        written = [r for r, res in zip(records, results, strict=True) if res.ok]
        if written:
            await self._mirror_batch(flags, written)
        await self._invalidate([*written, *before])
        return results

    async def _before_write(self, store: Store, keys: Sequence[Any]) -> list[Record]:
        """With a cache and indexes, the old index values must be invalidated too (a lookup
        by the old email must not keep answering with this record): read them first."""
        if self._cache is None or not self.schema.indexes:
            return []
        fields = (self.schema.key, *(i.field for i in self.schema.indexes.values()))
        if len(keys) == 1:
            found = await store.get(keys[0], fields)
            return [] if found is None else [found]
        return await store.batch_get(keys)

    async def _mirror(
        self,
        flags: ResourceFlagState,
        operation: str,
        keys: Sequence[Any],
        write: Callable[[Store], Awaitable[Any]],
    ) -> None:
        timeout = self.parts.settings.secondary_write_timeout_seconds
        for name in flags.write_to:
            if name == flags.read_from:
                continue
            breaker = self._breakers[name]
            if not breaker.allow():
                self._metrics.dual_write_failures.labels(self.name, name, operation).inc()
                await self._to_repair_log(keys, f"{operation} on {name} skipped: breaker open")
                continue
            try:
                await self._timed(
                    "secondary", name, operation,
                    asyncio.wait_for(write(self.parts.stores[name]), timeout),
                )  # fmt: skip
            except (StoreError, TimeoutError, OSError) as e:
                breaker.failure()
                self._metrics.dual_write_failures.labels(self.name, name, operation).inc()
                reason = f"{operation} on {name} failed: {type(e).__name__}: {e}"[:300]
                await self._to_repair_log(keys, reason)
            else:
                breaker.success()

    async def _mirror_batch(self, flags: ResourceFlagState, records: Sequence[Record]) -> None:
        for name in flags.write_to:
            if name == flags.read_from:
                continue
            failed, reason = await self._secondary_batch(name, records)
            if failed:
                self._metrics.dual_write_failures.labels(self.name, name, "batch_put").inc(
                    len(failed)
                )
                await self._to_repair_log(failed, reason)

    async def _secondary_batch(self, name: str, records: Sequence[Record]) -> tuple[list[Any], str]:
        """(keys not written, why) for one secondary store."""
        every = [r[self.schema.key] for r in records]
        breaker = self._breakers[name]
        if not breaker.allow():
            return every, f"batch_put on {name} skipped: breaker open"
        timeout = self.parts.settings.secondary_write_timeout_seconds
        try:
            results, _ = await self._timed(
                "secondary", name, "batch_put",
                asyncio.wait_for(self.parts.stores[name].batch_put(records), timeout),
            )  # fmt: skip
        except (StoreError, TimeoutError, OSError) as e:
            breaker.failure()
            return every, f"batch_put on {name} failed: {type(e).__name__}: {e}"[:300]
        breaker.success()
        return [res.key for res in results if not res.ok], f"batch_put on {name}: item not written"

    async def _to_repair_log(self, keys: Sequence[Any], reason: str) -> None:
        for key in keys:
            text = self.parts.key_text(key)
            try:
                if self._repair_log is None:
                    raise RuntimeError("no repair log is configured")
                await self._repair_log.append(self.name, text, reason, op=reason.split(" ", 1)[0])
            except Exception:
                self._metrics.repair_log_errors.labels(self.name).inc()
                log.error(
                    "KEY NOT REPAIRABLE: the second write failed and the repair log did not "
                    "take the key; run `shadowproxy verify` and `reconcile`",
                    exc_info=True,
                    extra={"resource": self.name, "key": text, "reason": reason},
                )

    async def _invalidate(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self._cache is None or not records:
            return
        keys = [self.parts.key_text(r[self.schema.key]) for r in records]
        index_values: dict[str, list[str]] = {}
        for name, index in self.schema.indexes.items():
            values = [
                self.parts.index_text(index.field, r[index.field])
                for r in records
                if r.get(index.field) is not None
            ]
            if values:
                index_values[name] = values
        await self._cache.invalidate(self.name, keys, index_values)


async def _delete_if_present(store: Store, key: Any) -> None:
    try:
        await store.delete(key)
    except RecordNotFound:
        return
