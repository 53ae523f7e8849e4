"""One resource served from its stores: reads from ``read_from`` (shadowed to the other store
through the shared shadow runner), writes to every store in ``write_to`` (primary first, its
result is the client's; a failed second write sends the key to the repair log)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from comparators import DiffBudget, Rules, compare
from comparators.model import Comparison, Outcome
from proxy.flags import ResourceFlagState, read_store
from proxy.metrics import Metrics
from proxy.publish import Experiment, Publisher
from proxy.resources.breaker import Breaker
from proxy.resources.keylocks import KeyLocks
from proxy.settings import ResourceSettings
from proxy.shadow import ShadowRunner
from proxy.store.base import (
    ItemResult,
    ManagedStore,
    NotFound,
    Record,
    Store,
    StoreError,
    StoreTimeout,
)
from proxy.store.schema import Schema

log = logging.getLogger("shadowproxy.resources")
T = TypeVar("T")

Reader = Callable[[Store], Awaitable[Any]]
"""Reads one side and returns the value to compare (canonical JSON values)."""


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


class RepairLog(Protocol):
    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str
    requester: str | None
    method: str
    path: str


@dataclass(frozen=True)
class ResourceParts:
    settings: ResourceSettings
    schema: Schema
    stores: Mapping[str, ManagedStore]
    record_rules: Rules
    list_rules: Rules
    new_store: str | None = None


class ResourceService:
    def __init__(
        self,
        parts: ResourceParts,
        *,
        flags: FlagSource,
        runner: ShadowRunner,
        publisher: Publisher,
        metrics: Metrics,
        budget: DiffBudget,
        cache: Cache | None = None,
        repair_log: RepairLog | None = None,
    ) -> None:
        self.parts = parts
        self.name = parts.settings.name
        self.schema = parts.schema
        self._flags = flags
        self._runner = runner
        self._publisher = publisher
        self._metrics = metrics
        self._budget = budget
        self._cache = cache if parts.settings.cache_ttl_seconds > 0 else None
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

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def flags(self) -> ResourceFlagState:
        return self._flags(self.name)

    def _read_flags(self, key_text: str) -> ResourceFlagState:
        """The flags as one key's read sees them: with ``new_store_read_fraction`` set, a
        sticky share of keys (by hash) reads from the new store, shadowed to the old one."""
        flags = self.flags
        new_store = self.parts.new_store
        if flags.new_store_read_fraction <= 0 or new_store is None:
            return flags
        chosen = read_store(flags, key_text, new_store=new_store, salt=self.name)
        return flags if chosen == flags.read_from else dataclasses.replace(flags, read_from=chosen)

    def _shadow_store(self, flags: ResourceFlagState) -> str | None:
        others = [name for name in self.parts.stores if name != flags.read_from]
        return others[0] if others else None

    async def _timed(
        self, role: str, store: str, operation: str, call: Awaitable[T]
    ) -> tuple[T, float]:
        started = time.perf_counter()
        try:
            return await call, time.perf_counter() - started
        finally:
            seconds = time.perf_counter() - started
            self._metrics.backend_latency.labels(store, role, self.name, operation).observe(seconds)

    def key_text(self, key: Any) -> str:
        rendered = self.schema.render_key(key)
        return rendered if isinstance(rendered, str) else str(rendered)

    def _index_text(self, field: str, value: Any) -> str:
        """An index value as cache-key text: its canonical JSON rendering."""
        return _text(self.schema.to_json({field: value}, fields=[field])[field])

    def _json(self, record: Record | None, fields: Sequence[str] | None = None) -> Any:
        return None if record is None else self.schema.to_json(record, fields=fields)

    def _items(self, records: Sequence[Record], fields: Sequence[str] | None = None) -> Any:
        return {"items": [self.schema.to_json(r, fields=fields) for r in records]}

    # --- reads ------------------------------------------------------------------------------

    async def get(self, key: Any, fields: Sequence[str] | None, info: RequestInfo) -> bytes | None:
        """Canonical JSON bytes of the record (projected), or None when absent."""
        key_text = self.key_text(key)
        flags = self._read_flags(key_text)
        if self._cache is not None and fields is None:
            cached = await self._cache.get(self.name, key_text)
            if cached is not None:
                self._shadow(
                    flags, "get", info, None, 0.0,
                    lambda s: self._read_one(s, key, fields), reread_primary=True,
                )  # fmt: skip
                return cached
        store = self.parts.stores[flags.read_from]
        record, seconds = await self._primary_read(flags, "get", info, store.get(key, fields))
        body = None if record is None else self.schema.dumps(record, fields=fields)
        if body is not None and self._cache is not None and fields is None:
            await self._cache.set(self.name, key_text, body, self.parts.settings.cache_ttl_seconds)
        self._shadow(
            flags, "get", info, self._json(record, fields), seconds,
            lambda s: self._read_one(s, key, fields),
        )  # fmt: skip
        return body

    async def _read_one(self, store: Store, key: Any, fields: Sequence[str] | None) -> Any:
        return self._json(await store.get(key, fields), fields)

    async def lookup(
        self, index: str, value: Any, limit: int, info: RequestInfo
    ) -> list[dict[str, Any]]:
        """Equality lookup on a declared index: canonical JSON objects of the matches."""
        flags = self.flags

        async def read(s: Store) -> Any:
            return self._items(await s.query_index(index, value, limit))

        value_text = self._index_text(self.schema.indexes[index].field, value)
        if self._cache is not None:
            cached = await self._cache.get_index(self.name, index, value_text)
            if cached is not None:
                items: list[dict[str, Any]] = orjson.loads(cached)
                self._shadow(
                    flags, "lookup", info, None, 0.0, read, listing=True, reread_primary=True
                )
                return items[:limit]
        store = self.parts.stores[flags.read_from]
        call = store.query_index(index, value, limit)
        records, seconds = await self._primary_read(flags, "lookup", info, call)
        listing = self._items(records)
        if self._cache is not None:
            ttl = self.parts.settings.cache_ttl_seconds
            await self._cache.set_index(
                self.name, index, value_text, orjson.dumps(listing["items"]), ttl
            )
        self._shadow(flags, "lookup", info, listing, seconds, read, listing=True)
        items = listing["items"]
        return items

    async def list_records(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None, info: RequestInfo
    ) -> tuple[list[Record], str | None]:
        flags = self.flags
        store = self.parts.stores[flags.read_from]
        call = store.list(filters, limit, cursor)
        (records, next_cursor), seconds = await self._primary_read(flags, "list", info, call)
        keys = [r[self.schema.key] for r in records]

        async def read(s: Store) -> Any:
            # Pages differ between stores by nature (order, cursors): compare the records of
            # this page, fetched by key, and check they still satisfy the filters.
            found = await s.batch_get(keys)
            return self._items([r for r in found if _matches(r, filters)])

        self._shadow(flags, "list", info, self._items(records), seconds, read, listing=True)
        return records, next_cursor

    async def batch_get(self, keys: Sequence[Any], info: RequestInfo) -> list[Record]:
        flags = self.flags
        store = self.parts.stores[flags.read_from]
        records, seconds = await self._primary_read(flags, "batch_get", info, store.batch_get(keys))

        async def read(s: Store) -> Any:
            return self._items(await s.batch_get(keys))

        self._shadow(flags, "batch_get", info, self._items(records), seconds, read, listing=True)
        return records

    async def _primary_read(
        self, flags: ResourceFlagState, operation: str, info: RequestInfo, call: Awaitable[T]
    ) -> tuple[T, float]:
        """The primary's read, timed; a failure is counted as ``primary_error`` (readiness and
        the guardrail watch it) and raised to the client."""
        try:
            return await self._timed("primary", flags.read_from, operation, call)
        except StoreError as e:
            if self._shadow_store(flags) is not None and flags.shadow_reads > 0:
                failed = Comparison(Outcome.PRIMARY_ERROR, detail=f"{type(e).__name__}: {e}"[:300])
                self._publish(flags.read_from, "", operation, info, failed, 0.0, None)
            raise

    def _publish(
        self,
        primary: str,
        shadow: str,
        operation: str,
        info: RequestInfo,
        comparison: Comparison,
        primary_seconds: float,
        shadow_seconds: float | None,
    ) -> None:
        self._publisher.publish(
            Experiment(
                route=self.name,
                operation=operation,
                method=info.method,
                path=info.path,
                request_id=info.request_id,
                requester=info.requester,
                primary_status=None,
                shadow_status=None,
                primary_seconds=primary_seconds,
                shadow_seconds=shadow_seconds,
                comparison=comparison,
                extra={"resource": self.name, "primary_store": primary, "shadow_store": shadow},
                new_side="primary" if primary == self.parts.new_store else "shadow",
            )
        )

    # --- the shadow read --------------------------------------------------------------------

    def _shadow(
        self,
        flags: ResourceFlagState,
        operation: str,
        info: RequestInfo,
        primary_value: Any,
        primary_seconds: float,
        read: Reader,
        *,
        listing: bool = False,
        reread_primary: bool = False,
    ) -> None:
        shadow = self._shadow_store(flags)
        if shadow is None or flags.shadow_reads <= 0:
            return
        if flags.shadow_reads < 1 and random.random() >= flags.shadow_reads:
            return
        rules = self.parts.list_rules if listing else self.parts.record_rules

        async def job() -> None:
            await self._experiment(
                flags.read_from, shadow, operation, info, primary_value, primary_seconds,
                read, rules, reread_primary=reread_primary,
            )  # fmt: skip

        self._runner.submit(self.name, operation, job)

    async def _experiment(
        self,
        primary: str,
        shadow: str,
        operation: str,
        info: RequestInfo,
        primary_value: Any,
        primary_seconds: float,
        read: Reader,
        rules: Rules,
        *,
        reread_primary: bool,
    ) -> None:
        stores = self.parts.stores
        shadow_seconds: float | None = None
        try:
            if reread_primary:  # served from the cache: comparisons always read the stores
                primary_value, primary_seconds = await self._timed(
                    "primary", primary, operation, read(stores[primary])
                )
            shadow_value, shadow_seconds = await self._timed(
                "shadow", shadow, operation, read(stores[shadow])
            )
        except StoreTimeout as e:
            comparison = Comparison(Outcome.TIMEOUT, detail=str(e)[:300])
        except (StoreError, TimeoutError) as e:
            comparison = Comparison(Outcome.SHADOW_ERROR, detail=f"{type(e).__name__}: {e}"[:300])
        else:
            comparison = compare(primary_value, shadow_value, rules, budget=self._budget)
            if comparison.outcome is Outcome.MISMATCH:
                comparison = await self._recheck(primary, shadow, read, rules, comparison)
        self._publish(primary, shadow, operation, info, comparison, primary_seconds, shadow_seconds)

    async def _recheck(
        self, primary: str, shadow: str, read: Reader, rules: Rules, first: Comparison
    ) -> Comparison:
        """A read that raced a write can differ for a moment: read both sides again after a
        short delay (a few times, backing off); if they agree the difference was
        ``transient``. Only a difference that outlives every re-read is a ``mismatch``."""
        settings = self.parts.settings
        latest = first
        for attempt in range(settings.recheck_attempts):
            await asyncio.sleep(settings.recheck_delay_seconds * (2**attempt))
            try:
                again_primary, again_shadow = await asyncio.gather(
                    read(self.parts.stores[primary]), read(self.parts.stores[shadow])
                )
            except (StoreError, TimeoutError):
                return latest
            latest = compare(again_primary, again_shadow, rules, budget=self._budget)
            if latest.outcome is Outcome.MATCH:
                detail = f"agreed on re-read {attempt + 1}"
                return Comparison(Outcome.TRANSIENT, first.differences, first.summarised, detail)
        return latest

    # --- writes -----------------------------------------------------------------------------

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
            text = self.key_text(key)
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
        keys = [self.key_text(r[self.schema.key]) for r in records]
        index_values: dict[str, list[str]] = {}
        for name, index in self.schema.indexes.items():
            values = [
                self._index_text(index.field, r[index.field])
                for r in records
                if r.get(index.field) is not None
            ]
            if values:
                index_values[name] = values
        await self._cache.invalidate(self.name, keys, index_values)


async def _delete_if_present(store: Store, key: Any) -> None:
    try:
        await store.delete(key)
    except NotFound:
        return


def _matches(record: Record, filters: Mapping[str, Any]) -> bool:
    return all(record.get(k) == v for k, v in filters.items())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
