"""One resource's reads: served from ``read_from`` (or, for a sticky share of keys, the new
store), shadowed to the other store through the shared runner, re-read before a difference
counts as a mismatch. Writes are ``DualWriter``'s (``proxy.resources.writes``)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from comparators import DiffBudget, Rules, compare
from comparators.model import Comparison, Outcome
from proxy.experiment.publish import Experiment, Publisher
from proxy.experiment.shadow import ShadowRunner
from proxy.flags import ResourceFlagState, read_store, sticky_share
from proxy.metrics import Metrics
from proxy.repair.log import RECENT_SECONDS, RepairLog, Unsettled
from proxy.resources.parts import (
    Cache,
    FlagSource,
    ResourceParts,
    observe_latency,
    timed,
)
from proxy.resources.writes import DualWriter
from proxy.store import exactjson
from proxy.store.base import (
    Record,
    Store,
    StoreError,
    StoreTimeout,
)
from proxy.store.compared import without_drift
from proxy.store.schema import json_bytes

log = logging.getLogger("shadowproxy.resources")
T = TypeVar("T")

Reader = Callable[[Store], Awaitable[Any]]
"""Reads one side and returns the value to compare (canonical JSON values)."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str
    requester: str | None
    method: str
    path: str


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
        self._sticky_sample = parts.settings.shadow_sample == "key"
        self._sample_salt = f"{self.name}/shadow"  # independent of the new-store read split
        names = list(parts.stores)
        self._other_store: dict[str, str | None] = {
            name: next((other for other in names if other != name), None) for name in names
        }
        self._repair_log = repair_log
        self.writes = DualWriter(
            parts,
            flags=flags,
            metrics=metrics,
            cache=self._cache,
            repair_log=repair_log,
            verify=self._verify_writes,
        )

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def flags(self) -> ResourceFlagState:
        return self._flags(self.name)

    def _read_flags(self, key: Any) -> ResourceFlagState:
        """The flags as one key's read sees them: with ``new_store_read_fraction`` set, a
        sticky share of keys (by hash) reads from the new store, shadowed to the old one."""
        flags = self.flags
        new_store = self.parts.new_store
        if flags.new_store_read_fraction <= 0 or new_store is None:
            return flags
        key_text = self.parts.key_text(key)
        chosen = read_store(flags, key_text, new_store=new_store, salt=self.name)
        return flags if chosen == flags.read_from else dataclasses.replace(flags, read_from=chosen)

    def _sampled(self, share: float, sample_key: Callable[[], str] | None) -> bool:
        if sample_key is None or not self._sticky_sample:
            return random.random() < share
        return sticky_share(sample_key(), share, salt=self._sample_salt)

    def _shadow_store(self, flags: ResourceFlagState) -> str | None:
        return self._other_store.get(flags.read_from)

    async def _timed(
        self, role: str, store: str, operation: str, call: Awaitable[T]
    ) -> tuple[T, float]:
        return await timed(self._metrics, self.name, role, store, operation, call)

    # Values to compare render type drift as a marker (``to_json(drift=True)``), so a value
    # stored in another type is a difference even where its raw value looks the same.

    def _items(self, records: Sequence[Record], fields: Sequence[str] | None = None) -> Any:
        return {"items": [self.schema.to_json(r, fields=fields, drift=True) for r in records]}

    def _with_drift(self, records: Sequence[Record], listing: Any) -> Any:
        """``_items(records)`` from the client's rendering ``listing`` of them."""
        marked = self.schema.with_drift
        return {"items": [marked(r, v) for r, v in zip(records, listing["items"], strict=True)]}

    # --- reads ------------------------------------------------------------------------------

    async def get(self, key: Any, fields: Sequence[str] | None, info: RequestInfo) -> bytes | None:
        """Canonical JSON bytes of the record (projected), or None when absent."""
        flags = self._read_flags(key)
        cache = self._cache if fields is None else None
        key_text = "" if cache is None else self.parts.key_text(key)
        if cache is not None:
            cached = await cache.get(self.name, key_text)
            if cached is not None:
                self._shadow(
                    flags, "get", info, _nothing, 0.0,
                    lambda s: self._read_one(s, key, fields), reread_primary=True,
                    sample_key=lambda: key_text,
                )  # fmt: skip
                return cached
        store = self.parts.stores[flags.read_from]
        call = store.get_compared(key, fields)
        compared, seconds = await self._primary_read(flags, "get", info, call)
        # Decoded once, straight to the compared form: the body, and a sampled comparison.
        body = None if compared is None else json_bytes(without_drift(compared))
        if body is not None and cache is not None:
            await cache.set(self.name, key_text, body, self.parts.settings.cache_ttl_seconds)
        self._shadow(
            flags, "get", info, lambda: compared, seconds,
            lambda s: self._read_one(s, key, fields),
            sample_key=lambda: key_text or self.parts.key_text(key),
        )  # fmt: skip
        return body

    async def _read_one(self, store: Store, key: Any, fields: Sequence[str] | None) -> Any:
        return await store.get_compared(key, fields)

    async def lookup(
        self, index: str, value: Any, limit: int, info: RequestInfo
    ) -> list[dict[str, Any]]:
        """Equality lookup on a declared index: canonical JSON objects of the matches."""
        flags = self.flags

        async def read(s: Store) -> Any:
            return self._items(await s.query_index(index, value, limit))

        value_text = self.parts.index_text(self.schema.indexes[index].field, value)
        if self._cache is not None:
            cached = await self._cache.get_index(self.name, index, value_text)
            if cached is not None:
                items: list[dict[str, Any]] = exactjson.loads(cached)
                self._shadow(
                    flags, "lookup", info, _nothing, 0.0, read, listing=True, reread_primary=True,
                    sample_key=lambda: value_text,
                )  # fmt: skip
                return items[:limit]
        store = self.parts.stores[flags.read_from]
        call = store.query_index(index, value, limit)
        records, seconds = await self._primary_read(flags, "lookup", info, call)
        listing = {"items": [self.schema.to_json(r) for r in records]}  # the answer
        if self._cache is not None:
            ttl = self.parts.settings.cache_ttl_seconds
            await self._cache.set_index(
                self.name, index, value_text, exactjson.dumps(listing["items"]), ttl
            )
        self._shadow(
            flags, "lookup", info, lambda: self._with_drift(records, listing), seconds, read,
            listing=True, sample_key=lambda: value_text,
        )  # fmt: skip
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

        self._shadow(flags, "list", info, lambda: self._items(records), seconds, read, listing=True)
        return records, next_cursor

    async def batch_get(self, keys: Sequence[Any], info: RequestInfo) -> list[Record]:
        flags = self.flags
        store = self.parts.stores[flags.read_from]
        records, seconds = await self._primary_read(flags, "batch_get", info, store.batch_get(keys))

        async def read(s: Store) -> Any:
            return self._items(await s.batch_get(keys))

        self._shadow(
            flags, "batch_get", info, lambda: self._items(records), seconds, read, listing=True
        )
        return records

    async def _primary_read(
        self, flags: ResourceFlagState, operation: str, info: RequestInfo, call: Awaitable[T]
    ) -> tuple[T, float]:
        """The primary's read, timed; a failure is counted as ``primary_error`` (readiness and
        the guardrail watch it) and raised to the client."""
        # Timed here rather than through ``timed()``: two coroutine layers fewer per read.
        started = time.perf_counter()
        try:
            result = await call
        except StoreError as e:
            self._observe(flags.read_from, operation, started)
            if self._shadow_store(flags) is not None and flags.shadow_reads > 0:
                failed = Comparison(Outcome.PRIMARY_ERROR, detail=f"{type(e).__name__}: {e}"[:300])
                self._publish(flags.read_from, "", operation, info, failed, 0.0, None)
            raise
        return result, self._observe(flags.read_from, operation, started)

    def _observe(self, store: str, operation: str, started: float) -> float:
        seconds = time.perf_counter() - started
        observe_latency(self._metrics, self.name, "primary", store, operation, seconds)
        return seconds

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
        primary: Callable[[], Any],
        primary_seconds: float,
        read: Reader,
        *,
        listing: bool = False,
        reread_primary: bool = False,
        sample_key: Callable[[], str] | None = None,
    ) -> None:
        """Maybe shadow this read. ``primary`` renders the primary's value for comparison; it
        is called only for a sampled read (most reads are not: no work is wasted on them).
        ``sample_key`` names the read's key for ``shadow_sample: key``."""
        shadow = self._shadow_store(flags)
        if shadow is None or flags.shadow_reads <= 0:
            return
        if flags.shadow_reads < 1 and not self._sampled(flags.shadow_reads, sample_key):
            return
        rules = self.parts.list_rules if listing else self.parts.record_rules
        primary_value = primary()

        async def job() -> None:
            await self._experiment(
                flags.read_from, shadow, operation, info, primary_value, primary_seconds,
                read, rules, reread_primary=reread_primary,
            )  # fmt: skip

        self._runner.submit(self.name, operation, job, gather=True)

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
                keys = self._keys_in(primary_value, shadow_value)
                comparison = await self._recheck(primary, shadow, read, rules, comparison, keys)
        self._publish(primary, shadow, operation, info, comparison, primary_seconds, shadow_seconds)

    async def _recheck(
        self, primary: str, shadow: str, read: Reader, rules: Rules, first: Comparison,
        keys: Sequence[str],
    ) -> Comparison:  # fmt: skip
        """A read that raced a write can differ for a moment: read both sides again after a
        short delay (a few times, backing off); if they agree the difference was
        ``transient``. With a repair log, a re-read counts only when it was *quiet*: no write
        of these keys in flight or waiting for repair before or after it (``unsettled``
        read twice, equal, nothing held) and the primary unchanged across it. A difference
        on a quiet re-read is a ``mismatch`` at once; one never seen quiet is ``transient``,
        whatever the write rate and however many instances write. A re-read that fails (a
        store down or at its connection limit) is skipped; when every one failed, the
        difference was never confirmed: a ``shadow_error`` (counted against the shadow's
        error rate, which readiness also judges), not a mismatch. A re-read the comparison
        CPU budget (``shadow.compare_cpu_share``) cannot afford ends the recheck ``skipped``."""
        settings = self.parts.settings
        latest = first
        busy_every_time = settings.recheck_attempts > 0
        failed: Exception | None = None  # the last re-read's error
        reread = False  # some re-read worked
        for attempt in range(settings.recheck_attempts):
            await asyncio.sleep(settings.recheck_delay_seconds * (2**attempt))
            try:
                again, quiet = await self._reread(primary, shadow, read, keys)
            except (StoreError, TimeoutError) as e:
                # A store too busy or down to re-read has not confirmed anything: try the
                # next re-read; with none at all, the difference is unconfirmed, not a
                # mismatch (an outage must not count as one).
                failed = e
                continue
            reread = True
            latest = compare(again[0], again[1], rules, budget=self._budget)
            if latest.outcome is Outcome.SKIPPED:
                return latest  # the comparison CPU budget ran out: not judged either way
            if latest.outcome is Outcome.MATCH:
                detail = f"agreed on re-read {attempt + 1}"
                return Comparison(Outcome.TRANSIENT, first.differences, first.summarised, detail)
            if quiet:
                return latest
            busy_every_time = busy_every_time and quiet is False
        if failed is not None and not reread:
            detail = f"a difference no re-read could confirm: {type(failed).__name__}: {failed}"
            return Comparison(Outcome.SHADOW_ERROR, detail=detail[:300])
        if busy_every_time:
            detail = "writes of the key were in flight on every re-read"
            return Comparison(Outcome.TRANSIENT, first.differences, first.summarised, detail)
        return latest

    async def _reread(
        self, primary: str, shadow: str, read: Reader, keys: Sequence[str]
    ) -> tuple[tuple[Any, Any], bool | None]:
        """Both sides read again, and whether no write touched ``keys`` meanwhile: True,
        False (one was in flight), or None when no repair log could tell (then the old rule
        holds: a difference that outlives every re-read is a mismatch)."""
        stores = self.parts.stores
        before = await self._unsettled(keys)
        started = time.monotonic()
        again_primary, again_shadow = await asyncio.gather(
            read(stores[primary]), read(stores[shadow])
        )
        if before is None:
            return (again_primary, again_shadow), None
        confirm = await read(stores[primary])
        after = await self._unsettled(keys)
        if after is None:
            return (again_primary, again_shadow), None
        quiet = (
            before.quiet
            and before == after
            and confirm == again_primary
            and time.monotonic() - started < RECENT_SECONDS / 2
        )
        return (again_primary, again_shadow), quiet

    async def _unsettled(self, keys: Sequence[str]) -> Unsettled | None:
        if self._repair_log is None or not keys:
            return None
        try:
            return await self._repair_log.unsettled(self.name, keys)
        except Exception as e:  # the repair log is down: the re-read cannot be called quiet
            log.debug("unsettled(%s) failed: %r", self.name, e)
            return None

    def _keys_in(self, *values: Any) -> list[str]:
        """The keys of the records in compared values (a record, ``{"items": [...]}``)."""
        field = self.schema.key
        found: dict[str, None] = {}
        for value in values:
            records = (
                value.get("items", []) if isinstance(value, dict) and "items" in value else [value]
            )
            for record in records:
                if isinstance(record, dict) and record.get(field) is not None:
                    rendered = record[field]
                    found[rendered if isinstance(rendered, str) else str(rendered)] = None
        return list(found)

    # --- write verification -----------------------------------------------------------------

    def _verify_writes(self, keys: Sequence[Any]) -> None:
        """Compare both stores' state of keys whose dual write settled (``write_verify``)."""
        flags = self.flags
        shadow = self._shadow_store(flags)
        if shadow is None:
            return
        for key in keys:
            job = functools.partial(self._verify_write, flags.read_from, shadow, key)
            self._runner.submit(self.name, "write_verify", job)

    async def _verify_write(self, primary: str, shadow: str, key: Any) -> None:
        async def read(store: Store) -> Any:
            return await store.get_compared(key)

        value, seconds = await self._timed(
            "primary", primary, "write_verify", read(self.parts.stores[primary])
        )
        await self._experiment(
            primary, shadow, "write_verify", _NO_REQUEST, value, seconds, read,
            self.parts.record_rules, reread_primary=False,
        )  # fmt: skip


_NO_REQUEST = RequestInfo(request_id="", requester=None, method="", path="")
"""What a comparison that no client request started (``write_verify``) reports."""


def _matches(record: Record, filters: Mapping[str, Any]) -> bool:
    return all(record.get(k) == v for k, v in filters.items())


def _nothing() -> None:
    """The primary's value when it was served from the cache: the job re-reads the store."""
    return None
