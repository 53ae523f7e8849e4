"""Dual writes with nothing lost.

A write of key K goes:

1. **intent**: K is logged in the repair log (``intend``) *before* the primary is touched,
   due for repair ``repair.intent_grace_seconds`` later. A process killed at any later step
   leaves the intent, and the repairer copies the primary's state of K when it falls due.
2. **primary**: the ``read_from`` store is written; its result is the client's. A write the
   primary refused (not found, conflict, too large) settles the intent: nothing changed.
3. **the other stores**, off the client's path: each is written with the primary's state of
   K, then the primary is read again (``copy_until_stable``); if another writer, in this
   process or another instance, moved K meanwhile, the newer state is copied too. Whichever
   copy lands last on the secondary, its writer read the primary after it landed, so the
   stores end equal or an intent stays: no ordering between instances is needed and a late
   older write cannot undo a delete.
4. **settle** when every store holds the primary's state; **escalate** (repair after
   ``retry_after_seconds``) when one failed, timed out or was skipped by its breaker.

The client waits for step 3 at most ``secondary_write_budget_seconds``. At most
``max_pending_secondary_writes`` step-3 tasks run per process; past that a write's keys are
escalated at once. A sampled share of settled writes (``write_verify``) is handed to the read
side to compare both stores. Every write path invalidates the cache, old index values too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from comparators.errors import ShadowProxyError
from proxy.flags import ResourceFlagState
from proxy.logs import Throttle
from proxy.metrics import Metrics
from proxy.repair.copy import copy_batch
from proxy.repair.log import RepairLog, escalate_writes
from proxy.repair.repairer import RepairRace, copy_until_stable
from proxy.resources.breaker import Breaker
from proxy.resources.parts import Cache, FlagSource, ResourceParts, timed
from proxy.store.base import (
    InvalidRecord,
    ItemResult,
    KeyConflict,
    LimitExceeded,
    Record,
    RecordNotFound,
    Store,
    StoreError,
    StoreTimeout,
    no_retry_of_unknown_writes,
    outcome_unknown,
)
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.resources")
T = TypeVar("T")

UNCHANGED = (RecordNotFound, KeyConflict, LimitExceeded, InvalidRecord)
"""Primary errors that mean the primary refused the write and did not change."""


class CopyTooLate(ShadowProxyError):
    """The primary write took so long that the copy would race the repairer: not sent."""


COPY_ERRORS = (StoreError, TimeoutError, OSError, RepairRace, CopyTooLate)

Verify = Callable[[Sequence[Any]], None]
"""Called with keys whose dual write settled and was sampled for ``write_verify``."""


class BreakerOpen(StoreError):
    """The store's circuit breaker is open: the write was not sent."""


class _Secondary:
    """A store other than ``read_from`` as ``copy_until_stable`` writes it: every call under
    the deadline, the breaker and the latency metric."""

    def __init__(self, writer: DualWriter, name: str, operation: str) -> None:
        self._writer = writer
        self.name = name
        self._operation = operation
        self._store = writer.parts.stores[name]

    async def put(self, record: Record) -> None:
        await self._call(self._store.put(record))

    async def delete(self, key: Any) -> None:
        await self._call(self._store.delete(key))

    async def batch_put(self, records: Sequence[Record]) -> list[ItemResult]:
        results: list[ItemResult] = await self._call(self._store.batch_put(records))
        return results

    async def _call(self, call: Coroutine[Any, Any, T]) -> T:
        breaker = self._writer.breakers[self.name]
        if not breaker.allow():
            call.close()
            raise BreakerOpen(f"{self.name}: circuit breaker open")
        timeout = self._writer.parts.settings.secondary_write_timeout_seconds
        try:
            with no_retry_of_unknown_writes():  # the task wait_for makes takes this context
                result, _ = await self._writer.timed(
                    "secondary", self.name, self._operation, asyncio.wait_for(call, timeout)
                )
        except RecordNotFound:
            breaker.success()
            raise
        except (StoreError, TimeoutError, OSError):
            breaker.failure()
            raise
        breaker.success()
        return result


class DualWriter:
    def __init__(
        self,
        parts: ResourceParts,
        *,
        flags: FlagSource,
        metrics: Metrics,
        cache: Cache | None,
        repair_log: RepairLog | None,
        verify: Verify | None = None,
    ) -> None:
        self.parts = parts
        self.name = parts.name
        self.schema = parts.schema
        self._flags = flags
        self._metrics = metrics
        self._cache = cache
        self._repair_log = repair_log
        self._verify = verify
        self._pending: set[asyncio.Task[None]] = set()
        self._log_throttle = Throttle(60.0)
        grace = repair_log.intent_grace_seconds if repair_log is not None else 60.0
        self._in_time = grace / 2  # a write's primary call and copies, from its intent
        settings = parts.settings
        self.breakers = {
            name: Breaker(
                threshold=settings.breaker_threshold,
                cooldown_seconds=settings.breaker_cooldown_seconds,
            )
            for name in parts.stores
        }

    @property
    def flags(self) -> ResourceFlagState:
        return self._flags(self.name)

    @property
    def pending(self) -> int:
        """Secondary writes still running after their client was answered."""
        return len(self._pending)

    async def timed(
        self, role: str, store: str, operation: str, call: Awaitable[T]
    ) -> tuple[T, float]:
        return await timed(self._metrics, self.name, role, store, operation, call)

    # --- the operations ---------------------------------------------------------------------

    async def create(self, record: Record) -> Record:
        key = record[self.schema.key]
        await self._write_one("create", key, lambda s: s.create(record), lambda _: record)
        await self._invalidate([record])
        return record

    async def replace(self, record: Record) -> Record:
        key = record[self.schema.key]
        before = await self._before_write(self.flags, [key])
        await self._write_one("put", key, lambda s: s.put(record), lambda _: record)
        await self._invalidate([record, *before])
        return record

    async def update(self, key: Any, changes: Mapping[str, Any]) -> Record:
        indexed = {i.field for i in self.schema.indexes.values()}
        before = await self._before_write(self.flags, [key]) if indexed & set(changes) else []
        record: Record = await self._write_one(
            "update", key, lambda s: s.update(key, changes), lambda updated: updated
        )
        await self._invalidate([record, *before])
        return record

    async def delete(self, key: Any) -> None:
        before = await self._before_write(self.flags, [key])
        await self._write_one("delete", key, lambda s: s.delete(key), lambda _: None)
        await self._invalidate([{self.schema.key: key}, *before])

    async def batch_put(self, records: Sequence[Record]) -> list[ItemResult]:
        flags = self.flags
        keys = [r[self.schema.key] for r in records]
        before = await self._before_write(flags, keys)
        others = self._others(flags)
        logged = asyncio.get_running_loop().time()
        intents = await self._intend("batch_put", keys) if others else None
        store = self.parts.stores[flags.read_from]
        try:
            if others:
                results = await self._primary(flags, "batch_put", store.batch_put(records), logged)
            else:
                results, _ = await self.timed(
                    "primary", flags.read_from, "batch_put", store.batch_put(records)
                )
        except UNCHANGED:
            await self._settle(intents)
            raise
        except Exception as e:
            failure = Failure("batch_put", flags.read_from, e)
            await self._escalate(intents, keys, failure.reason, late=failure.late)
            raise
        written = [r for r, res in zip(records, results, strict=True) if res.ok]
        if others:
            ids: list[str | None] = list(intents) if intents else [None] * len(records)
            refused = [i for i, res in zip(ids, results, strict=True) if not res.ok]
            await self._settle([i for i in refused if i is not None])
            kept = [i for i, res in zip(ids, results, strict=True) if res.ok]
            items = [(r[self.schema.key], r, i) for r, i in zip(written, kept, strict=True)]
            if items:
                await self._mirror(flags, "batch_put", items, logged)
        await self._invalidate([*written, *before])
        return results

    # --- one write --------------------------------------------------------------------------

    async def _write_one(
        self,
        operation: str,
        key: Any,
        write: Callable[[Store], Awaitable[T]],
        state_of: Callable[[T], Record | None],
    ) -> T:
        """Steps 1-4 for one key; returns the primary's result."""
        flags = self.flags
        store = self.parts.stores[flags.read_from]
        others = self._others(flags)
        if not others:
            result, _ = await self.timed("primary", flags.read_from, operation, write(store))
            return result
        logged = asyncio.get_running_loop().time()
        intents = await self._intend(operation, [key])
        try:
            result = await self._primary(flags, operation, write(store), logged)
        except UNCHANGED:
            await self._settle(intents)
            raise
        except Exception as e:  # the primary may or may not have changed: repair decides
            failure = Failure(operation, flags.read_from, e)
            await self._escalate(intents, [key], failure.reason, late=failure.late)
            raise
        intent = intents[0] if intents else None
        await self._mirror(flags, operation, [(key, state_of(result), intent)], logged)
        return result

    async def _primary(
        self, flags: ResourceFlagState, operation: str, call: Awaitable[T], logged: float
    ) -> T:
        """Step 2 of a dual write, ended with a 504 once it outlives half the intent grace
        from when its intent was logged: past that a repairer may take the intent and copy
        the state from before this write, while this write still commits."""
        try:
            async with asyncio.timeout_at(logged + self._in_time):
                result, _ = await self.timed("primary", flags.read_from, operation, call)
        except TimeoutError as e:
            raise StoreTimeout(
                f"{flags.read_from}: {operation} took over {self._in_time:g} s "
                "(half the repair log's intent grace)"
            ) from e
        return result

    def _others(self, flags: ResourceFlagState) -> list[str]:
        return [name for name in flags.write_to if name != flags.read_from]

    async def _mirror(
        self,
        flags: ResourceFlagState,
        operation: str,
        items: Sequence[tuple[Any, Record | None, str | None]],
        logged: float,
    ) -> None:
        """Start step 3 in the background; wait for it at most the budget. ``logged`` is the
        loop time the intents were logged at."""
        intents = [i for _, _, i in items if i is not None] or None
        if len(self._pending) >= self.parts.settings.max_pending_secondary_writes:
            self._failed(self._others(flags), operation, len(items))
            reason = f"{operation}: too many secondary writes in flight"  # none sent
            await self._escalate(intents, [k for k, _, _ in items], reason)
            return
        task = spawn(self._copy(flags, operation, items, logged), name=f"{self.name}-mirror")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        budget = self.parts.settings.secondary_write_budget_seconds
        if budget > 0:
            await asyncio.wait([task], timeout=budget)

    async def _copy(
        self,
        flags: ResourceFlagState,
        operation: str,
        items: Sequence[tuple[Any, Record | None, str | None]],
        logged: float,
    ) -> None:
        primary = self.parts.stores[flags.read_from]
        failed: dict[int, Failure] = {}
        # Done (or escalated) well before the intents fall due, counted from when they were
        # logged: past that a repairer may take them while this copy is still on its way.
        deadline = logged + self._in_time
        for name in self._others(flags):
            secondary = _Secondary(self, name, operation)
            try:
                if asyncio.get_running_loop().time() >= deadline:
                    raise CopyTooLate(
                        f"not sent: the write took over {self._in_time:g} s "
                        "(half the repair log's intent grace)"
                    )
                async with asyncio.timeout_at(deadline):
                    if len(items) > 1:
                        await self._copy_batch(primary, secondary, items, failed)
                        continue
                    key, state, _ = items[0]
                    await copy_until_stable(primary, secondary, key, state)
            except COPY_ERRORS as e:
                for n in range(len(items)):
                    failed.setdefault(n, Failure(operation, name, e))
        settled = [i for n, (_, _, i) in enumerate(items) if n not in failed and i is not None]
        await self._settle(settled)
        for n, failure in failed.items():
            key, _, intent = items[n]
            ids = None if intent is None else [intent]
            await self._escalate(ids, [key], failure.reason, late=failure.late)
        if failed:
            self._failed(self._others(flags), operation, len(failed))
        self._maybe_verify([k for n, (k, _, _) in enumerate(items) if n not in failed])

    async def _copy_batch(
        self,
        primary: Store,
        secondary: _Secondary,
        items: Sequence[tuple[Any, Record | None, str | None]],
        failed: dict[int, Failure],
    ) -> None:
        """A batch: one batch write of the primary's records, one batch read back; a key that
        moved meanwhile (or whose item was not written) goes through ``copy_until_stable``."""
        errors = await copy_batch(
            primary,
            secondary,
            [(key, state) for key, state, _ in items],
            self.parts.key_text,
            key_field=self.schema.key,
        )
        for n, error in errors.items():
            failed.setdefault(n, Failure("batch_put", secondary.name, error))

    # --- the repair log ---------------------------------------------------------------------

    async def _intend(self, operation: str, keys: Sequence[Any]) -> list[str] | None:
        """Intent ids, or None when the repair log is missing or failed: the write goes on
        (the primary path does not depend on the repair log) but a crash before the other
        stores are written would then lose their copy, so it is logged loudly."""
        if self._repair_log is None:
            return None
        texts = [self.parts.key_text(k) for k in keys]
        try:
            return await self._repair_log.intend(self.name, texts, op=operation)
        except Exception as e:
            self._metrics.repair_log_errors.labels(self.name).inc()
            if self._log_throttle.ready():  # once a minute: it fails for every write
                log.error(
                    "repair log did not take write intents; writes go on unprotected "
                    "(counted in shadowproxy_repair_append_failures_total): %s: %s",
                    type(e).__name__,
                    e,
                    extra={"resource": self.name},
                )
            return None

    async def _settle(self, intents: Sequence[str] | None) -> None:
        if not intents or self._repair_log is None:
            return
        try:
            await self._repair_log.settle(intents)
        except Exception as e:
            # The intents fall due and are repaired (a harmless copy of an equal record).
            self._metrics.repair_log_errors.labels(self.name).inc()
            if self._log_throttle.ready():
                log.warning(
                    "repair log did not settle intents: %s: %s", type(e).__name__, e,
                    extra={"resource": self.name},
                )  # fmt: skip

    async def _escalate(
        self,
        intents: Sequence[str] | None,
        keys: Sequence[Any],
        reason: str,
        *,
        late: bool = False,
    ) -> None:
        reason = reason[:300]
        repair_log = self._repair_log
        if repair_log is not None:
            try:
                if not intents:  # the intent never reached the log: append now
                    for key in keys:
                        text = self.parts.key_text(key)
                        await repair_log.append(self.name, text, reason, op=_op(reason))
                    return
                texts = [self.parts.key_text(k) for k in keys]
                writes = list(zip(intents, texts, strict=True))
                await escalate_writes(
                    repair_log, self.name, writes, reason, late=late, op=_op(reason)
                )
                return
            except Exception:
                self._metrics.repair_log_errors.labels(self.name).inc()
        log.error(
            "KEY NOT REPAIRABLE: a second write failed and the repair log did not take the "
            "key; run `shadowproxy verify` and `reconcile`",
            exc_info=True,
            extra={"resource": self.name, "keys": [self.parts.key_text(k) for k in keys][:20]},
        )

    def _failed(self, stores: Sequence[str], operation: str, count: int) -> None:
        for name in stores:
            self._metrics.dual_write_failures.labels(self.name, name, operation).inc(count)

    def _maybe_verify(self, keys: Sequence[Any]) -> None:
        share = self.parts.settings.write_verify
        if self._verify is None or share <= 0 or not keys:
            return
        chosen = [k for k in keys if share >= 1 or random.random() < share]
        if chosen:
            self._verify(chosen)

    # --- the cache --------------------------------------------------------------------------

    async def _before_write(self, flags: ResourceFlagState, keys: Sequence[Any]) -> list[Record]:
        """With a cache and indexes, the old index values must be invalidated too (a lookup
        by the old email must not keep answering with this record): read them first."""
        if self._cache is None or not self.schema.indexes:
            return []
        store = self.parts.stores[flags.read_from]
        fields = (self.schema.key, *(i.field for i in self.schema.indexes.values()))
        if len(keys) == 1:
            found = await store.get(keys[0], fields)
            return [] if found is None else [found]
        return await store.batch_get(keys)

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


@dataclass(frozen=True, slots=True)
class Failure:
    """A write to one store that did not happen, or may have: why, and whether its outcome
    is unknown (``late``: timed out or cut mid-request, so the request may still land; its
    repair waits ``repair.late_write_seconds``, so it lands first)."""

    operation: str
    store: str
    error: BaseException

    @property
    def reason(self) -> str:
        e = self.error
        if isinstance(e, (RepairRace, CopyTooLate)):
            return f"{self.operation} on {self.store}: {e}"
        return f"{self.operation} on {self.store} failed: {type(e).__name__}: {e}"[:300]

    @property
    def late(self) -> bool:
        return outcome_unknown(self.error)  # a breaker-skipped write was never sent


def _op(reason: str) -> str:
    return reason.split(" ", 1)[0]
