"""What a repair log holds and promises, and the one factory that opens one from config."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from proxy.errors import ConfigError
from proxy.repair.config import RepairConfig

log = logging.getLogger("shadowproxy.repair")


@dataclass(frozen=True, slots=True)
class RepairEntry:
    id: str
    resource: str
    key: str
    reason: str
    attempts: int = 0
    op: str = ""
    last_error: str | None = None
    hold: str = ""
    """The intent this entry came from (it keeps the key unsettled until done)."""


RECENT_SECONDS = 10.0
"""How long a key's last write stays visible to ``unsettled`` after it settled: a comparison
that brackets its reads with two ``unsettled`` calls must finish well within this."""


class Unsettled(NamedTuple):
    """Dual writes of some keys not yet confirmed in every store, and a mark that changes
    whenever a new write of them starts. Two equal readings with ``held == 0`` mean no write
    touched the keys in between."""

    held: int
    mark: str

    @property
    def quiet(self) -> bool:
        return self.held == 0


class RepairLog(Protocol):
    intent_grace_seconds: float
    """How long an intent waits for its writer before a repairer takes it."""

    async def init(self) -> None:
        """Create what is missing (stream group, table), idempotently."""

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None: ...

    async def intend(self, resource: str, keys: Sequence[str], *, op: str) -> list[str]:
        """Log writes about to reach the primary, before they do: each key becomes due for
        repair ``intent_grace_seconds`` later unless settled first, so a writer that dies
        between the two stores loses nothing. One id per key, in order."""

    async def settle(self, ids: Sequence[str]) -> None:
        """Every store holds the primary's state of these writes' keys: drop the intents."""

    async def escalate(self, ids: Sequence[str], reason: str, *, late: bool = False) -> list[str]:
        """These writes did not reach every store: repair them ``retry_after_seconds`` from
        now, or ``late_write_seconds`` when ``late`` (a write whose outcome is unknown, e.g.
        timed out: the request may still land, and must land before the repair).

        Returns the ids that were no longer intents: a repairer took them (their primary
        write outlived the grace) or they were settled. The caller logs those keys afresh,
        since the repair that took them may have copied a state older than this write's."""

    async def unsettled(self, resource: str, keys: Sequence[str]) -> Unsettled:
        """Writes of these keys in flight or waiting for repair (stuck ones excluded)."""

    async def claim(self, limit: int, *, take_over: bool = False) -> list[RepairEntry]:
        """Entries due now, hidden from other claimers for ``retry_after_seconds``.

        ``take_over`` (``shadowproxy reconcile``): also the entries another claimer holds,
        live or dead, whether it is repairing them now or failed them within the last
        ``retry_after_seconds``. Never an entry waiting out ``late_write_seconds`` (a write
        of unknown outcome may still land) nor an intent within its grace; this claimer's
        own failed entries keep their wait. Two repairs of one key at once are harmless
        (each copies the primary's current state and reads it back); ``done`` and
        ``failed`` below keep the count and the key's hold right whoever finishes first."""

    async def done(self, entry: RepairEntry) -> None:
        """The key was repaired: drop the entry and release its hold, whoever claimed it
        last. A no-op when it is already gone, and the entry stays when a failure of unknown
        outcome (``failed(late=True)``) of another claimer is still within its wait."""

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        """Attempts + 1; the entry stays pending (stuck after ``max_attempts``), tried again
        after ``retry_after_seconds``, or ``late_write_seconds`` when ``late`` (the repair's
        own write may still land).

        When another claimer took the entry over meanwhile, a failure counts nothing (that
        claimer's outcome decides); a ``late`` one still holds the entry back (or logs the
        key again, if it was repaired meanwhile) until ``late_write_seconds`` from now,
        since its write may land after the other repair's copy."""

    async def depth(self) -> int:
        """Entries not yet repaired, stuck ones included."""

    async def in_flight(self) -> int:
        """Intents still within their grace: writes whose writer may still settle them."""

    async def stuck_count(self) -> int: ...

    async def stuck(self, limit: int = 100) -> list[RepairEntry]: ...

    async def retry_stuck(self) -> int:
        """Make every stuck entry claimable again with zero attempts; returns how many."""

    async def close(self) -> None: ...


async def escalate_writes(
    log: RepairLog,
    resource: str,
    writes: Sequence[tuple[str, str]],
    reason: str,
    *,
    late: bool,
    op: str,
) -> None:
    """Escalate these writes' intents (intent id, key text). One a repairer already took (its
    writer outlived the grace) may have been repaired from the state before the write: its
    key is logged again, as a write of its own, due like this one."""
    gone = set(await log.escalate([i for i, _ in writes], reason, late=late))
    if gone:
        again = await log.intend(resource, [k for i, k in writes if i in gone], op=op)
        await log.escalate(again, reason, late=late)


def open_repair_log(config: RepairConfig, *, default_dsn: str | None = None) -> RepairLog:
    """``default_dsn`` (e.g. the PostgreSQL store's) serves when ``config.dsn`` is unset."""
    # Each backend's client library is loaded only when that backend is configured.
    if config.kind == "memory":
        from proxy.repair.memory_log import MemoryRepairLog

        return MemoryRepairLog(
            max_attempts=config.max_attempts,
            retry_after_seconds=config.retry_after_seconds,
            intent_grace_seconds=config.intent_grace_seconds,
            late_write_seconds=config.late_write_seconds,
        )
    if config.kind == "redis":
        from proxy.repair.redis_log import RedisRepairLog

        return RedisRepairLog(
            config.url,
            stream=config.stream,
            group=config.group,
            max_attempts=config.max_attempts,
            retry_after_seconds=config.retry_after_seconds,
            intent_grace_seconds=config.intent_grace_seconds,
            late_write_seconds=config.late_write_seconds,
            timeout_seconds=config.timeout_seconds,
        )
    dsn = config.dsn or default_dsn
    if not dsn:
        raise ConfigError("repair.dsn: required when repair.kind is 'postgres'")
    from proxy.repair.postgres_log import PostgresRepairLog

    return PostgresRepairLog(
        dsn,
        table=config.table,
        max_attempts=config.max_attempts,
        retry_after_seconds=config.retry_after_seconds,
        intent_grace_seconds=config.intent_grace_seconds,
        late_write_seconds=config.late_write_seconds,
        timeout_seconds=config.timeout_seconds,
    )


def report_stuck(entry: RepairEntry, attempts: int, error: str) -> None:
    log.error(
        "repair entry stuck after %d attempts; reconcile retries it: %s",
        attempts,
        error,
        extra={"resource": entry.resource, "entry": entry.id},
    )
