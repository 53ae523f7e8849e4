"""Operator commands on the stores of every resource: init-stores and reconcile."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import TextIO

from prometheus_client import CollectorRegistry

from proxy.errors import ConfigError
from proxy.flags import make_flag_store
from proxy.migrate.progress import LOG_SECONDS, Progress, progress
from proxy.repair.log import open_repair_log
from proxy.repair.repairer import DrainRound, Repairer, RepairMetrics
from proxy.resources.wiring import build_parts, repair_targets
from proxy.settings import Settings


async def init_stores(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """Create what is missing — tables, indexes, GSIs — idempotently; wait until usable.
    Returns one line per store for the operator."""
    done = []
    for name, resource in settings.resources.items():
        parts = build_parts(resource, settings, env)
        for store_name, store in parts.stores.items():
            await store.open()
            try:
                await store.init()
            finally:
                await store.close()
            table = resource.stores[store_name].table
            done.append(f"{name}: {store_name} table {table!r} ready")
    return done


async def reconcile(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    stream: TextIO | None = None,
    log_seconds: float = LOG_SECONDS,
) -> list[str]:
    """Repair every logged key now: copy the primary's current state of it to the other store
    (or delete it there). Idempotent; stuck entries are retried too, and entries that running
    (or dead) instances claimed but have not repaired are taken over, except those waiting
    for a write of unknown outcome (``late_write_seconds``). Progress goes to ``stream``
    (stderr): a live bar on a terminal, else a log line every ``log_seconds``; the returned
    lines are the summary."""
    if settings.repair is None or settings.repair.kind == "memory":
        raise ConfigError(
            "repair: not configured (or kind 'memory', which lives inside each proxy); "
            "reconcile needs a shared repair log (kind 'redis' or 'postgres')"
        )
    log = open_repair_log(settings.repair)
    parts = [build_parts(r, settings, env) for r in settings.resources.values()]
    async with AsyncExitStack() as stack:
        for store in (s for p in parts for s in p.stores.values()):
            await store.open()
            stack.push_async_callback(store.close)
        await log.init()
        stack.push_async_callback(log.close)
        # The live flags decide which store is primary now (a flip may have happened).
        flag_store = make_flag_store(settings, settings.flags, audit_config_defaults=False)
        await flag_store.start()
        stack.push_async_callback(flag_store.close)
        snapshot = flag_store.snapshot()
        revived = await log.retry_stuck()
        repairer = Repairer.from_config(
            settings.repair,
            log,
            repair_targets(parts, lambda name: snapshot.resources[name]),
            RepairMetrics.create(CollectorRegistry()),
        )
        shown = stack.enter_context(
            progress(
                "reconcile",
                ",".join(settings.resources),
                total=await log.depth(),
                stream=stream,
                log_seconds=log_seconds,
            )
        )
        repaired, failed = await repairer.drain(take_over=True, on_round=partial(_advance, shown))
        depth = await log.depth()
        in_flight = await log.in_flight()
    lines = [
        f"repaired {repaired} keys, {failed} attempts failed, {revived} stuck entries retried",
        f"repair log depth now {depth}" + ("" if depth == 0 else " (run reconcile again later)"),
    ]
    if in_flight:
        grace = settings.repair.intent_grace_seconds
        lines.append(
            f"{in_flight} writes in flight: their writers settle them, or they fall due within "
            f"{grace:g}s (intent_grace_seconds) and the next reconcile repairs them"
        )
    return lines


def _advance(shown: Progress, done: DrainRound) -> None:
    shown.advance(done.repaired + done.failed, repaired=done.repaired, failed=done.failed)
