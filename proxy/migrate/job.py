"""What a migration job opens for one resource: its stores, the live flags (which store is
the primary now), the shared repair log when there is one, and a segment of the key space."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from proxy.errors import ConfigError
from proxy.flags import ResourceFlagState, make_flag_store
from proxy.repair.log import RepairLog, open_repair_log
from proxy.resources.parts import ResourceParts
from proxy.resources.wiring import build_parts
from proxy.settings import Settings
from proxy.store.base import ManagedStore

log = logging.getLogger("shadowproxy.jobs")


@dataclass(frozen=True, slots=True)
class Segment:
    """Segment ``index`` of ``total``: the segments of one total partition the table."""

    index: int = 0
    total: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_segment(text: str) -> Segment:
    """``i/N`` with 0 <= i < N (as argparse ``type=``)."""
    index, sep, total = text.partition("/")
    if not sep or not index.strip().isdigit() or not total.strip().isdigit():
        raise ValueError(f"--segment: expected i/N (e.g. 0/4), got {text!r}")
    segment = Segment(int(index), int(total))
    if not 0 <= segment.index < segment.total:
        raise ValueError(f"--segment {text}: i must be in 0..N-1 and N at least 1")
    return segment


@dataclass
class Job:
    parts: ResourceParts
    flags: ResourceFlagState
    source: str
    target: str
    repair_log: RepairLog | None

    @property
    def name(self) -> str:
        return self.parts.name

    @property
    def source_store(self) -> ManagedStore:
        return self.parts.stores[self.source]

    @property
    def target_store(self) -> ManagedStore:
        return self.parts.stores[self.target]


@asynccontextmanager
async def open_job(
    settings: Settings,
    resource: str,
    *,
    source: str | None,
    target: str | None,
    env: Mapping[str, str] | None = None,
    shared_repair_log: bool = True,
) -> AsyncIterator[Job]:
    """``source`` defaults to the store reads are served from now (the live ``read_from``),
    ``target`` to the other one."""
    if resource not in settings.resources:
        known = ", ".join(sorted(settings.resources)) or "none"
        raise ConfigError(f"--resource {resource!r}: no such resource (configured: {known})")
    config = settings.resources[resource]
    names = list(config.stores)
    for flag, name in (("--from", source), ("--to", target)):
        if name is not None and name not in names:
            raise ConfigError(f"{flag} {name!r}: resource {resource!r} has stores {names}")
    async with AsyncExitStack() as stack:
        flag_store = make_flag_store(settings, settings.flags, audit_config_defaults=False)
        await flag_store.start()
        stack.push_async_callback(flag_store.close)
        flags = flag_store.snapshot().resources[resource]
        source = source or flags.read_from
        if target is None:
            others = [n for n in names if n != source]
            if len(others) != 1:
                raise ConfigError(f"--to: resource {resource!r} has stores {names}; name one")
            target = others[0]
        if source == target:
            raise ConfigError(f"--from and --to are both {source!r}")
        repair_log = None
        if shared_repair_log and settings.repair is not None and settings.repair.kind != "memory":
            repair_log = open_repair_log(settings.repair)
            await repair_log.init()
            stack.push_async_callback(repair_log.close)
        parts = build_parts(config, settings, env)
        for name in (source, target):
            await parts.stores[name].open()
            stack.push_async_callback(parts.stores[name].close)
        yield Job(parts, flags, source, target, repair_log)
