"""Making one key good again, and the loop that drains the repair log with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from comparators.errors import ShadowProxyError
from proxy.logs import Throttle
from proxy.repair.config import RepairConfig
from proxy.repair.log import RepairEntry, RepairLog
from proxy.store.base import (
    Record,
    RecordNotFound,
    no_retry_of_unknown_writes,
    outcome_unknown,
)
from proxy.tasks import spawn

log = logging.getLogger("shadowproxy.repair")

MAX_REPAIR_ROUNDS = 3
ERROR_LOG_SECONDS = 60.0


class Source(Protocol):
    """The part of ``proxy.store.base.Store`` a repair reads from (the primary)."""

    async def get(self, key: Any, fields: Sequence[str] | None = None) -> Record | None: ...


class Destination(Protocol):
    """The part of ``proxy.store.base.Store`` a repair writes to (the secondary)."""

    async def put(self, record: Record) -> None: ...

    async def delete(self, key: Any) -> None: ...


class RepairRace(ShadowProxyError):
    """The primary's record kept changing while it was being copied; retried later."""


async def repair_key(primary: Source, secondary: Destination, key: Any) -> str:
    """Make the secondary hold the primary's current state of ``key``: ``"copied"`` or
    ``"deleted"``."""
    return await copy_until_stable(primary, secondary, key, await primary.get(key))


async def copy_until_stable(
    primary: Source, secondary: Destination, key: Any, current: Record | None
) -> str:
    """Write ``current`` (the primary's state of ``key``; None: absent) to the secondary,
    then read the primary again; if a newer write landed in between (whose own secondary
    write may have been overtaken by ours) copy again. Whichever copy lands last on the
    secondary, its writer reads the primary after it landed, so the secondary ends in the
    primary's state or someone's key stays logged: the order of the two stores' writes
    does not matter, across any number of instances."""
    for _ in range(MAX_REPAIR_ROUNDS):
        if current is None:
            with suppress(RecordNotFound):
                await secondary.delete(key)
        else:
            await secondary.put(current)
        after = await primary.get(key)
        if after == current:
            return "deleted" if current is None else "copied"
        current = after
    raise RepairRace(f"record changed during {MAX_REPAIR_ROUNDS} repair rounds")


class DrainRound(NamedTuple):
    """What one round of a drain did: for a progress line."""

    repaired: int
    failed: int


class RepairTarget(NamedTuple):
    primary: Source
    secondary: Destination
    decode_key: Callable[[str], Any]


@dataclass(frozen=True)
class RepairMetrics:
    depth: Gauge
    stuck: Gauge
    repairs: Counter
    log_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RepairMetrics:
        return cls(
            depth=Gauge(
                "shadowproxy_repair_log_depth",
                "Repair log entries not yet repaired (stuck ones included).",
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            stuck=Gauge(
                "shadowproxy_repair_log_stuck",
                "Repair log entries past max_attempts, waiting for reconcile.",
                registry=registry,
                multiprocess_mode="livemostrecent",
            ),
            repairs=Counter(
                "shadowproxy_repairs",
                "Repair attempts by resource and result: repaired, failed.",
                ("resource", "result"),
                registry=registry,
            ),
            log_errors=Counter(
                "shadowproxy_repair_log_errors",
                "Repair rounds or log updates that failed because the repair log did.",
                registry=registry,
            ),
        )


class Repairer:
    def __init__(
        self,
        log: RepairLog,
        targets: Mapping[str, RepairTarget],
        metrics: RepairMetrics,
        *,
        interval_seconds: float = 1.0,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self._log = log
        self._targets = dict(targets)
        self._metrics = metrics
        self._interval = interval_seconds
        self._batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self._log_throttle = Throttle(ERROR_LOG_SECONDS)

    @classmethod
    def from_config(
        cls,
        config: RepairConfig,
        log: RepairLog,
        targets: Mapping[str, RepairTarget],
        metrics: RepairMetrics,
    ) -> Repairer:
        return cls(
            log,
            targets,
            metrics,
            interval_seconds=config.interval_seconds,
            batch=config.batch,
            concurrency=config.concurrency,
        )

    async def run_once(self) -> tuple[int, int]:
        """Repair one claimed batch; returns (repaired, failed). Raises if the log does."""
        done = await self._round(await self._log.claim(self._batch))
        return done.repaired, done.failed

    async def drain(
        self,
        *,
        take_over: bool = False,
        on_round: Callable[[DrainRound], None] | None = None,
    ) -> tuple[int, int]:
        """Repair until nothing new is due; returns (repaired, failed). Each entry is tried
        at most once per drain: one that fails waits for the next drain or the background
        repairers, rather than being retried here until it is stuck. ``take_over`` also
        claims the entries other repairers hold (``RepairLog.claim``); ``on_round`` is
        called after every round."""
        seen: set[str] = set()
        total_repaired = total_failed = 0
        while True:
            claimed = await self._log.claim(self._batch, take_over=take_over)
            entries = [e for e in claimed if e.id not in seen]
            if not entries:
                return total_repaired, total_failed
            seen.update(e.id for e in entries)
            done = await self._round(entries)
            total_repaired += done.repaired
            total_failed += done.failed
            if on_round is not None:
                on_round(done)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                repaired, failed = await self.run_once()
            except Exception as e:
                self._metrics.log_errors.inc()
                self._log_error("repair round failed", e)
                repaired, failed = 0, 0
            if repaired == self._batch and failed == 0:
                await asyncio.sleep(0)  # a backlog: go on, but let the loop breathe
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def refresh_gauges(self) -> None:
        self._metrics.depth.set(await self._log.depth())
        self._metrics.stuck.set(await self._log.stuck_count())

    async def _round(self, entries: Sequence[RepairEntry]) -> DrainRound:
        results = await asyncio.gather(*map(self._repair, entries), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self._metrics.log_errors.inc()
                self._log_error("repair log update failed", result)
        await self.refresh_gauges()
        repaired = sum(1 for r in results if r is True)
        return DrainRound(repaired, len(results) - repaired)

    async def _repair(self, entry: RepairEntry) -> bool:
        async with self._limit:
            try:
                target = self._targets.get(entry.resource)
                if target is None:
                    raise LookupError(f"resource {entry.resource!r} is not configured")
                with no_retry_of_unknown_writes():
                    key = target.decode_key(entry.key)
                    await repair_key(target.primary, target.secondary, key)
            except Exception as e:
                self._metrics.repairs.labels(entry.resource, "failed").inc()
                log.debug("repair of %s failed: %r", entry.resource, e)
                error = f"{type(e).__name__}: {e}"[:1000]
                await self._log.failed(entry, error, late=outcome_unknown(e))
                return False
            await self._log.done(entry)
            self._metrics.repairs.labels(entry.resource, "repaired").inc()
            return True

    def _log_error(self, message: str, error: BaseException) -> None:
        if self._log_throttle.ready():
            log.warning("%s: %s: %s", message, type(error).__name__, error)


@dataclass(frozen=True)
class RepairLoop:
    """The repairer running in the background for as long as the proxy serves."""

    log: RepairLog
    repairer: Repairer

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.log.init()
        stop = asyncio.Event()
        task = spawn(self.repairer.run_forever(stop), name="repairer")
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await self.log.close()
