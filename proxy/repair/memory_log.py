"""The repair log in this process's memory: what a single instance without Redis uses when
no ``repair:`` section is configured. It keeps the same promises as the shared logs while the
process lives (ordering checks, repairs, quiet re-reads); it is not crash-safe and not shared
between instances, which ``check-config`` says."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from proxy.repair.log import RECENT_SECONDS, RepairEntry, Unsettled, report_stuck


@dataclass(slots=True)
class _Row:
    entry: RepairEntry
    due: float
    intent: bool  # still a write in flight (not escalated, not claimed)


@dataclass(slots=True)
class _Busy:
    held: set[str] = field(default_factory=set)
    last: str = ""
    expires: float = float("inf")


class MemoryRepairLog:
    def __init__(
        self,
        *,
        max_attempts: int = 100,
        retry_after_seconds: float = 5.0,
        intent_grace_seconds: float = 30.0,
        late_write_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_attempts = max_attempts
        self._retry = retry_after_seconds
        self._grace = self.intent_grace_seconds = intent_grace_seconds
        self._late = late_write_seconds
        self._clock = clock
        self._ids = itertools.count(1)
        self._rows: dict[str, _Row] = {}
        self._busy: dict[tuple[str, str], _Busy] = {}

    async def init(self) -> None:
        return None

    def _add(self, resource: str, key: str, reason: str, op: str, *, hold: bool) -> str:
        entry_id = str(next(self._ids))
        entry = RepairEntry(entry_id, resource, key, reason, op=op, hold=entry_id if hold else "")
        due = self._clock() + (self._grace if hold else 0.0)
        self._rows[entry_id] = _Row(entry, due, intent=hold)
        return entry_id

    async def append(self, resource: str, key: str, reason: str, *, op: str = "") -> None:
        self._add(resource, key, reason, op, hold=False)

    async def intend(self, resource: str, keys: Sequence[str], *, op: str) -> list[str]:
        ids = []
        for key in keys:
            entry_id = self._add(resource, key, f"{op}: write not confirmed in time", op, hold=True)
            busy = self._busy.setdefault((resource, key), _Busy())
            busy.held.add(entry_id)
            busy.last = entry_id
            busy.expires = float("inf")
            ids.append(entry_id)
        return ids

    async def settle(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            row = self._rows.get(entry_id)
            if row is not None and row.intent:
                del self._rows[entry_id]
                self._release(row.entry)

    async def escalate(self, ids: Sequence[str], reason: str, *, late: bool = False) -> list[str]:
        gone = []
        for entry_id in ids:
            row = self._rows.get(entry_id)
            if row is None or not row.intent:
                gone.append(entry_id)
                continue
            row.entry = replace(row.entry, reason=reason)
            row.due = self._clock() + (self._late if late else self._retry)
            row.intent = False
        return gone

    async def unsettled(self, resource: str, keys: Sequence[str]) -> Unsettled:
        now = self._clock()
        held, marks = 0, []
        for key in keys:
            busy = self._busy.get((resource, key))
            if busy is not None and busy.expires <= now:
                del self._busy[(resource, key)]
                busy = None
            held += 0 if busy is None else len(busy.held)
            marks.append("" if busy is None else busy.last)
        return Unsettled(held, "|".join(marks))

    def _release(self, entry: RepairEntry) -> None:
        busy = self._busy.get((entry.resource, entry.key))
        if busy is None or not entry.hold:
            return
        busy.held.discard(entry.hold)
        if not busy.held:
            busy.expires = self._clock() + RECENT_SECONDS

    async def claim(self, limit: int, *, take_over: bool = False) -> list[RepairEntry]:
        # One process, one claimer: no entry is held by another, so ``take_over`` adds
        # nothing; this claimer's own claims and failures keep their wait either way.
        now = self._clock()
        due = [
            row
            for row in self._rows.values()
            if row.due <= now and row.entry.attempts < self.max_attempts
        ]
        due.sort(key=lambda row: (row.due, int(row.entry.id)))
        for row in due[:limit]:
            row.due = now + self._retry  # the claim's lease
            row.intent = False
        return [row.entry for row in due[:limit]]

    async def done(self, entry: RepairEntry) -> None:
        row = self._rows.pop(entry.id, None)
        if row is not None:
            self._release(row.entry)

    async def failed(self, entry: RepairEntry, error: str, *, late: bool = False) -> None:
        row = self._rows.get(entry.id)
        if row is None:  # repaired meanwhile; a write that may still land needs another
            if late:
                self._relog(replace(entry, attempts=entry.attempts + 1, last_error=error))
            return
        row.entry = replace(row.entry, attempts=row.entry.attempts + 1, last_error=error)
        row.due = self._clock() + (self._late if late else self._retry)
        if row.entry.attempts >= self.max_attempts:
            self._release(row.entry)
            report_stuck(row.entry, row.entry.attempts, error)

    def _relog(self, entry: RepairEntry) -> None:
        entry_id = str(next(self._ids))
        self._rows[entry_id] = _Row(replace(entry, id=entry_id), self._clock() + self._late, False)
        if entry.hold:
            busy = self._busy.setdefault((entry.resource, entry.key), _Busy())
            busy.held.add(entry.hold)
            busy.expires = float("inf")

    async def depth(self) -> int:
        now = self._clock()
        return sum(1 for row in self._rows.values() if not row.intent or row.due <= now)

    async def in_flight(self) -> int:
        now = self._clock()
        return sum(1 for row in self._rows.values() if row.intent and row.due > now)

    async def stuck_count(self) -> int:
        return len(await self.stuck(limit=len(self._rows)))

    async def stuck(self, limit: int = 100) -> list[RepairEntry]:
        rows = [r.entry for r in self._rows.values() if r.entry.attempts >= self.max_attempts]
        return rows[:limit]

    async def retry_stuck(self) -> int:
        moved = 0
        for row in self._rows.values():
            if row.entry.attempts >= self.max_attempts:
                row.entry = replace(row.entry, attempts=0, hold="")
                row.due = self._clock()
                moved += 1
        return moved

    async def close(self) -> None:
        return None
